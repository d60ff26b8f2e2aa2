"""Where and how training runs: precision policy, tf.distribute strategy, XLA.

Everything here is decided once per run and recorded in config.json
(`runtime.json` beside it) so a run can be explained afterwards.
"""

import json
import os
import time

from bratskeras.core.errors import ConfigError


def gpus():
    """The visible physical GPUs."""
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _conv3d_seconds(policy, repeats=3):
    """Median time of a small Conv3D forward+backward under a dtype policy."""
    import keras
    import numpy as np
    import tensorflow as tf

    layer = keras.layers.Conv3D(32, 3, padding="same", dtype=policy)
    x = tf.constant(np.random.default_rng(0).normal(size=(1, 32, 32, 32, 16)), tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(tf.cast(layer(x), tf.float32))
        return tape.gradient(y, layer.trainable_variables)

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def choose_precision(requested):
    """Resolves --precision.

    "auto": mixed_float16 on NVIDIA GPUs (Keras wraps the optimizer in a
    LossScaleOptimizer for it); on CPUs that compute bfloat16 natively
    (AVX512_BF16, AMX), mixed_bfloat16 if a measured Conv3D step is at least
    1.2x faster in bfloat16, else float32. Other CPUs get float32 without a
    probe: there bfloat16 is emulated (18x slower on an AVX2 CPU) and the
    probe itself took 1.5 s.

    Returns:
        (policy name, details dict for runtime.json).
    """
    if requested != "auto":
        return requested, {"requested": requested}
    from bratskeras.platform import cpu

    if gpus():
        return "mixed_float16", {"requested": "auto", "reason": "NVIDIA GPU present"}
    if not cpu.native_bfloat16():
        return "float32", {"requested": "auto", "reason": f"CPU class {cpu.isa_class()}: no native bfloat16"}
    float32 = _conv3d_seconds("float32")
    bfloat16 = _conv3d_seconds("mixed_bfloat16")
    chosen = "mixed_bfloat16" if float32 / bfloat16 >= 1.2 else "float32"
    return chosen, {
        "requested": "auto",
        "reason": "CPU: measured Conv3D step",
        "float32_seconds": float32,
        "bfloat16_seconds": bfloat16,
    }


def make_strategy(name):
    """Resolves --strategy into a tf.distribute strategy.

    "auto": MirroredStrategy over all local GPUs when there are several, else
    the default strategy. "multi-worker": MultiWorkerMirroredStrategy, with the
    cluster described by the TF_CONFIG environment variable (TensorFlow's own
    convention, read by TensorFlow).
    """
    import tensorflow as tf

    if name == "auto":
        name = "mirrored" if len(gpus()) > 1 else "default"
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}")
    return _STRATEGIES[name](tf)


def _multi_worker(tf):
    if "TF_CONFIG" not in os.environ:
        raise ConfigError("--strategy multi-worker needs the TF_CONFIG environment variable")
    return tf.distribute.MultiWorkerMirroredStrategy()


# Each --strategy (but "auto", which picks one of them) and how it is made, given the tensorflow module.
_STRATEGIES = {
    "default": lambda tf: tf.distribute.get_strategy(),
    "mirrored": lambda tf: tf.distribute.MirroredStrategy(),
    "multi-worker": _multi_worker,
}


def is_chief(strategy):
    """True on the worker that writes files (always true without multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def jit_compile(requested):
    """XLA on GPUs only by default: it made Conv3D models 20-25x slower on CPU."""
    if requested == "auto":
        return bool(gpus())
    if isinstance(requested, bool):
        return requested
    if requested in ("true", "false"):
        return requested == "true"
    raise ConfigError(f"jit_compile must be auto, true or false, got {requested!r}")


def describe(policy, precision_details, strategy, xla):
    """A JSON-able record of the run's hardware decisions.

    Includes the CPU class, the oneDNN state and the float32 matmul limit
    (2048^3, best of 3 after one warm-up: ~1 s on 2 cores), so a run's speed
    can be read against the machine it ran on.
    """
    import tensorflow as tf

    from bratskeras.platform import cpu

    return json.loads(json.dumps({
        **cpu.describe(),
        "float32_matmul_gflops": round(cpu.matmul_gflops(2048, "float32", repeats=3), 1),
        "precision": policy,
        "precision_details": precision_details,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "jit_compile": xla,
        "gpus": [d.name for d in gpus()],
        "tensorflow": tf.__version__,
    }))


def check_precision(requested):
    """Refuses, before anything is written, a precision this machine cannot train in.

    float16 MaxPool3D has GPU kernels only: on a machine without a GPU,
    mixed_float16 would fail at the first training step with a long
    InvalidArgumentError, after the run folder was made.

    Raises:
        ConfigError: mixed_float16 requested without a GPU.
    """
    if requested == "mixed_float16" and not gpus():
        raise ConfigError("--precision mixed_float16 needs a GPU (TensorFlow has float16 MaxPool3D "
                          "kernels for GPUs only); use float32, mixed_bfloat16 or auto on this machine")
