"""Exported models behind one predictor interface, each run in its own runtime.

A predictor is a callable: float32 (B, d, h, w, C) -> float32 (B, d, h, w, K)
probabilities, the same spatial size as its input. A Keras model is its own
predictor (bratskeras.predict.tiling compiles it once per window shape); an exported
one is one of:

    SavedModelPredictor   tf.saved_model.load, signature serving_default
    OnnxPredictor         onnxruntime, CPU
    LiteRtPredictor       ai-edge-litert's Interpreter, signature serving_default

Each also tells its `input_shape` (D, H, W, C; None where any size is taken)
and `output_channels`, which model_setup holds against the model's contract.
Every export has one input and one output under the names below; the
runtimes take whatever single input and output a model has, so an export of
an older bratskeras (or another tool) runs too.

`RUNTIMES` has one row per exported format: its predictor and the optional
extra (bratskeras.platform.extras) that installs it. bratskeras.export.formats'
rows point at these to run what they write.
"""

import os
from dataclasses import dataclass

import numpy as np

from bratskeras.core.errors import ModelError
from bratskeras.data.model_files import model_format, onnx_session
from bratskeras.platform.extras import require_extra
from bratskeras.platform.quiet import filtered_stderr

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# What LiteRT prints to stderr that says nothing to a user (bratskeras.platform.quiet.filtered_stderr): the
# interpreter's CPU delegate announcement on its first run, the converter's notes on flags it ignores.
LITERT_NOISE = (r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
                r"tf_tfl_flatbuffer_helpers\.cc:\d+\] Ignored ")


@dataclass(frozen=True)
class Runtime:
    """How one exported format is run: a row of RUNTIMES.

    Attributes:
        format: the format's name (bratskeras.data.model_files.model_format's).
        what: the model in messages ("an ONNX model").
        predictor: the predictor class; predictor(path) loads the model.
        extra: the optional extra that installs the runtime (a key of
            bratskeras.platform.extras.EXTRAS), None when TensorFlow runs it.
        module: the extra's module that runs the model (predict needs only
            it; export's conversion needs the whole extra).
        engine: the runtime outside TensorFlow that runs the model, on the
            CPU only (named in `--device gpu`'s refusal); None: TensorFlow.
    """

    format: str
    what: str
    predictor: type
    extra: str | None = None
    module: str | None = None
    engine: str | None = None

    def check(self, path):
        """Refuses `path` in one line naming the pip extra when this runtime is not installed."""
        if self.extra is not None:
            require_extra(self.extra, f"{path}: {self.what}", modules=(self.module,))

    def run(self, path, image):
        """Loads the model at `path` and runs it once: float32 (B, D, H, W, C) -> (B, D, H, W, K)."""
        return self.predictor(path)(image)


def check_runtime(path):
    """Refuses, before any work, a model whose optional runtime is not installed.

    Raises:
        ConfigError: one line naming the model and the pip extra to install.
    """
    runtime = RUNTIMES.get(model_format(path))
    if runtime is not None:
        runtime.check(path)


def load(path, format=None):
    """The predictor of an exported model (format: a key of RUNTIMES; default from the path)."""
    format = format or model_format(path)
    check_runtime(path)
    if format not in RUNTIMES:
        raise ModelError(f"{path}: not an exported model (SavedModel folder, .onnx or .tflite)")
    return RUNTIMES[format].predictor(path)


def _check_io(path, inputs, outputs, input_shape):
    """ModelError unless the model has one 5-D input and one output (a 3-D segmentation model)."""
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    if len(input_shape) != 5:
        raise ModelError(f"{path}: not a 3-D segmentation model: input shape {list(input_shape)}; "
                         "expected (batch, D, H, W, C)")


def _sizes(shape):
    """A runtime's shape (ints; None, -1 or names for free sizes) -> tuple of int or None."""
    return tuple(int(s) if isinstance(s, (int, np.integer)) and s >= 0 else None for s in shape)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SavedModelPredictor:
    """A SavedModel's serving_default signature, loaded with TensorFlow alone (no bratskeras layers).

    Shape: (B, d, h, w, C) -> (B, d, h, w, K); d, h, w free where the export left them free.
    """

    def __init__(self, path):
        import tensorflow as tf

        self.path = os.fspath(path)
        try:
            self._loaded = tf.saved_model.load(self.path)  # kept: the signature needs its variables alive
        except Exception as error:  # TensorFlow raises many types for damaged SavedModels
            raise ModelError(f"{self.path}: not a loadable SavedModel ({_first_line(error)})") from None
        if SIGNATURE_KEY not in self._loaded.signatures:
            raise ModelError(f"{self.path}: no {SIGNATURE_KEY} signature")
        self._signature = self._loaded.signatures[SIGNATURE_KEY]
        inputs = self._signature.structured_input_signature[1]
        outputs = self._signature.structured_outputs
        self._input = INPUT_NAME if INPUT_NAME in inputs else next(iter(inputs), None)
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else next(iter(outputs), None)
        shape = inputs[self._input].shape.as_list() if self._input else []
        _check_io(self.path, inputs, outputs, shape)
        self.input_shape = _sizes(shape)[1:]
        self.output_channels = outputs[self._output].shape[-1]

    def asset_path(self, name):
        """The file of the tracked asset attribute `name` as the loaded model sees it, or None."""
        asset = getattr(self._loaded, name, None)
        return None if asset is None else asset.asset_path.numpy().decode()

    def __call__(self, batch):
        import tensorflow as tf

        return self._signature(**{self._input: tf.constant(batch, tf.float32)})[self._output].numpy()


class OnnxPredictor:
    """An ONNX model in onnxruntime on the CPU.

    Shape: (B, d, h, w, C) -> (B, d, h, w, K).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._session = onnx_session(self.path)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = inputs[0].shape if inputs else []
        _check_io(self.path, inputs, outputs, shape)
        self._input, self._output = inputs[0].name, outputs[0].name
        self.input_shape = _sizes(shape)[1:]
        self.output_channels = _sizes(outputs[0].shape)[-1]

    def __call__(self, batch):
        return self._session.run([self._output], {self._input: np.asarray(batch, np.float32)})[0]


class LiteRtPredictor:
    """A LiteRT model's serving_default signature in ai-edge-litert's Interpreter (builtin operators).

    LiteRT models have static spatial sizes: input_shape is fully known, and
    predict uses it as its window. The batch is resized to each call's.

    Args:
        path: the .tflite file.
        interpreter: an Interpreter of it already made (export's check, which
            may use TensorFlow's bundled one); default ai-edge-litert's, with a
            thread per core.

    Shape: (B, D, H, W, C) -> (B, D, H, W, K).
    """

    def __init__(self, path, interpreter=None):
        self.path = os.fspath(path)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            try:
                interpreter = Interpreter(model_path=self.path, num_threads=os.cpu_count() or 1)
            except (RuntimeError, ValueError) as error:
                raise ModelError(f"{self.path}: not a loadable LiteRT model ({_first_line(error)})") from None
        if SIGNATURE_KEY not in interpreter.get_signature_list():
            raise ModelError(f"{self.path}: no {SIGNATURE_KEY} signature")
        self._runner = interpreter.get_signature_runner(SIGNATURE_KEY)
        inputs, outputs = self._runner.get_input_details(), self._runner.get_output_details()
        self._input = INPUT_NAME if INPUT_NAME in inputs else next(iter(inputs), None)
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else next(iter(outputs), None)
        shape = list(inputs[self._input]["shape"]) if self._input else []
        _check_io(self.path, inputs, outputs, shape)
        self.input_shape = _sizes(shape)[1:]
        self.output_channels = int(outputs[self._output]["shape"][-1])

    def __call__(self, batch):
        with filtered_stderr(LITERT_NOISE):
            return self._runner(**{self._input: np.asarray(batch, np.float32)})[self._output]


# One row per exported format that predict runs (a .keras is Keras' own: bratskeras.predict.model_setup).
RUNTIMES = {
    "saved_model": Runtime("saved_model", "a SavedModel", SavedModelPredictor),
    "onnx": Runtime("onnx", "an ONNX model", OnnxPredictor, extra="onnx", module="onnxruntime",
                    engine="onnxruntime"),
    "tflite": Runtime("tflite", "a LiteRT model", LiteRtPredictor, extra="litert", module="ai_edge_litert",
                      engine="ai-edge-litert"),
}
