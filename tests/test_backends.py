"""Backend-neutral layers: a bratskeras .keras file predicts the same under JAX; TensorFlow keeps its kernels."""

import bratskeras  # noqa: F401  (oneDNN settings before TensorFlow loads)

# isort: split
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from bratskeras.models import build_model
from bratskeras.models.layers import CropToReference, InstanceNormalization, NormalizedConv3D, PadToMultiple


def _graph_ops(function, *specs):
    """Op types in the TensorFlow graph of `function` traced for `specs`, cond/map_fn branches included."""
    graph_def = tf.function(function).get_concrete_function(*specs).graph.as_graph_def()
    nodes = [*graph_def.node, *(node for f in graph_def.library.function for node in f.node_def)]
    return {node.op for node in nodes}


def test_tensorflow_path_keeps_its_kernels():
    """The tuned TensorFlow kernels stay: fused instance norm, concatenated zeros, no BiasAddGrad."""
    norm = InstanceNormalization()
    assert "FusedBatchNormV3" in _graph_ops(norm, tf.TensorSpec((2, 8, 6, 4, 3)))
    assert "FusedBatchNormV3" in _graph_ops(norm, tf.TensorSpec((None, 8, 6, 4, 3)))
    pad_ops = _graph_ops(PadToMultiple(4), tf.TensorSpec((1, None, None, None, 2)))
    assert "ConcatV2" in pad_ops and not pad_ops & {"Pad", "PadV2", "MirrorPad"}

    conv = NormalizedConv3D(4, 3, padding="same")
    conv.build((1, 6, 6, 6, 2))

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(conv(x, training=True) ** 2)
        return tape.gradient(loss, [conv.kernel, conv.bias])

    assert "BiasAddGrad" not in _graph_ops(step, tf.TensorSpec((1, 6, 6, 6, 2)))


@pytest.mark.parametrize("shape", [(2, 9, 12, 7, 3), (1, 8, 8, 8, 1), (1, 5, 3, 1, 2)])
def test_portable_path_equals_the_tensorflow_path(shape):
    """The keras.ops code other backends run gives what the TensorFlow kernels give."""
    x = np.random.default_rng(sum(shape)).normal(1.0, 2.0, size=shape).astype(np.float32)
    pad = PadToMultiple(4)
    padded_tf = keras.ops.convert_to_numpy(pad(x))
    padded = keras.ops.convert_to_numpy(pad._call_portable(x))
    np.testing.assert_array_equal(padded, padded_tf)
    assert padded.shape[1:4] == tuple(-(-n // 4) * 4 for n in shape[1:4])
    cropped_tf = keras.ops.convert_to_numpy(CropToReference()([padded, x]))
    cropped = keras.ops.convert_to_numpy(CropToReference._call_portable([padded, x]))
    np.testing.assert_array_equal(cropped, cropped_tf)
    np.testing.assert_array_equal(cropped, x)
    norm = InstanceNormalization()
    fused = keras.ops.convert_to_numpy(norm(x))
    portable = keras.ops.convert_to_numpy(keras.layers.GroupNormalization.call(norm, x))
    np.testing.assert_allclose(fused, portable, atol=2e-5)


# One fresh JAX process loads every saved model: a JAX process start (Keras, JAX and bratskeras
# imports) is paid once, not once per model. Each model's result or error is reported on its own.
JAX_PROCESS = textwrap.dedent("""
    import json, sys, traceback
    import keras
    import numpy as np
    import bratskeras.models  # registers the custom layers

    assert keras.backend.backend() == "jax", keras.backend.backend()
    results = {}
    for name, model_path, io_path in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
        try:
            saved = np.load(io_path)
            model = keras.saving.load_model(model_path, safe_mode=True)
            output = np.asarray(model.predict(saved["image"], verbose=0))
            results[name] = {"backend": keras.backend.backend(),
                             "array": type(model(saved["image"][:1])).__module__,
                             "shape": list(output.shape),
                             "max_abs_diff": float(np.max(np.abs(output - saved["expected"])))}
        except Exception:
            results[name] = {"error": traceback.format_exc()[-3000:]}
    print(json.dumps(results))
""")

JAX_CASES = {
    "lightweight-unet": (None, (2, 20, 18, 17, 4)),   # dynamic sizes, pad/crop and instance norm
    "flair-unet": ((32, 32, 30, 1), (1, 32, 32, 30, 1)),  # static, 30 padded to 32
}


@pytest.fixture(scope="module")
def jax_predictions(tmp_path_factory):
    """{model name: (what the JAX process reported, the TensorFlow prediction)} for every JAX_CASES model."""
    pytest.importorskip("jax", reason="jax not installed (test extra)")
    root = tmp_path_factory.mktemp("jax")
    expected, arguments = {}, []
    for name, (input_shape, image_shape) in JAX_CASES.items():
        keras.utils.set_random_seed(5)
        overrides = {"base_filters": 4} if name == "lightweight-unet" else {}
        model = build_model(name, input_shape=input_shape, **overrides)
        path, io_path = root / f"{name}.keras", root / f"{name}.npz"
        model.save(path)
        image = np.random.default_rng(6).standard_normal(image_shape).astype(np.float32)
        expected[name] = model.predict(image, verbose=0)
        np.savez(io_path, image=image, expected=expected[name])
        arguments += [name, str(path), str(io_path)]
    # Loading rebuilds every layer, and Keras fills each new weight from its initializer before the
    # saved values replace it. With JAX's default partitionable threefry PRNG, XLA on CPU took 2-6 s
    # to compile the random draw of each weight shape (~35 shapes: most of this test's time on 2
    # cores); the classic threefry took ~0.3 s. Only those discarded initial values change: the
    # outputs compared below come from the saved weights, and prediction draws no random numbers.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "JAX_THREEFRY_PARTITIONABLE": "0",
           "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", JAX_PROCESS, *arguments],
                            capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: (reported.get(name, {"error": "not reported"}), expected[name]) for name in JAX_CASES}


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
@pytest.mark.parametrize("name", list(JAX_CASES))
def test_saved_model_predicts_the_same_under_jax(jax_predictions, name):
    info, expected = jax_predictions[name]
    assert "error" not in info, info.get("error")
    assert info["backend"] == "jax" and info["array"].startswith("jax"), info
    assert info["shape"] == list(expected.shape)
    # The fused instance norm and the parent's keras.ops form differ by float32 round-off only.
    assert info["max_abs_diff"] <= 1e-4, info
