"""Which device runs a model: `predict --device` and `PredictSettings.device`.

A device is one of these strings:

    auto     TensorFlow's default placement (its first GPU if it sees one, else the CPU)
    cpu      the CPU, even where a GPU is visible
    gpu      TensorFlow's first GPU (GPU:0)
    gpu:N    its GPU N, numbered as TensorFlow numbers the GPUs it sees
             (CUDA_VISIBLE_DEVICES renumbers them)

`placement` applies one with a `tf.device` scope around the block, so the
process-wide device settings (`tf.config.set_visible_devices`) are never
changed behind a caller's back. `predict` also loads each model inside the
scope, so TensorFlow creates its weights on that device. ONNX and LiteRT
models run in their own CPU runtimes (bratskeras.predict.runtimes), where only `auto`
and `cpu` mean anything.
"""

import contextlib
import re

from bratskeras.core.errors import ConfigError
from bratskeras.data.model_files import model_format
from bratskeras.predict.runtimes import RUNTIMES

AUTO = "auto"
CHOICES = "auto, cpu, gpu or gpu:N"
_DEVICE = re.compile(r"^(auto|cpu|gpu)(?::(\d+))?$")


def parse_device(text):
    """The canonical device string of `text` ("GPU:1" -> "gpu:1", "gpu" stays "gpu").

    Raises:
        ValueError: one line naming `text` and the accepted forms.
    """
    match = _DEVICE.match(str(text).strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "gpu"):
        raise ValueError(f"device {text!r}: expected {CHOICES}")
    return match.group(0)


def wants_gpu(device):
    """True for "gpu" and "gpu:N"."""
    return parse_device(device).startswith("gpu")


def tensorflow_device(device):
    """The tf.device name of `device` ("/CPU:0", "/GPU:N"), or None for auto.

    Raises:
        ValueError: a malformed device string.
        ConfigError: a GPU TensorFlow does not see, in one line naming the
            devices it does see.
    """
    device = parse_device(device or AUTO)
    if device == AUTO:
        return None
    if device == "cpu":
        return "/CPU:0"
    import tensorflow as tf

    index = int(device.partition(":")[2] or 0)
    gpus = tf.config.list_logical_devices("GPU")
    if index >= len(gpus):
        seen = ", ".join(d.name.rpartition("device:")[2] for d in tf.config.list_logical_devices())
        count = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
        raise ConfigError(f"--device {device}: TensorFlow sees {count} (its devices: {seen})")
    return f"/GPU:{index}"


@contextlib.contextmanager
def placement(device):
    """A block whose TensorFlow work runs on `device` (None or "auto": TensorFlow's default placement).

    Raises:
        ValueError, ConfigError: see `tensorflow_device`; before the block runs.
    """
    name = tensorflow_device(device)
    if name is None:
        yield
        return
    import tensorflow as tf

    with tf.device(name):
        yield


def check_model_device(device, path):
    """Refuses a GPU for a model whose runtime runs on the CPU only (ONNX, LiteRT).

    Raises:
        ConfigError: one line naming the model and its runtime.
    """
    row = RUNTIMES.get(model_format(path))
    runtime = row.engine if row is not None else None
    if runtime is not None and wants_gpu(device):
        raise ConfigError(f"--device {parse_device(device)}: {path} runs in {runtime} on the CPU; "
                          "--device picks a device for Keras and SavedModel models only (leave it out or "
                          "pass --device cpu)")
