"""Export in every format, run each artefact in its own runtime, compare with Keras."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from side_by_side import finish_all

from bratskeras.cli import cli
from bratskeras.data.contract import CONTRACT_FILE, InputContract
from bratskeras.export.exporter import export_model
from bratskeras.export.formats import FORMATS
from bratskeras.export.graph import BuiltinMaxPool3D, serving_model
from bratskeras.export.litert import tflite_ops
from bratskeras.models import build_model
from bratskeras.models.saving import save_model
from bratskeras.predict.runtimes import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY

LIGHT_SHAPE = (16, 16, 16, 4)
FLAIR_SHAPE = (32, 32, 30, 1)  # 30 is not a multiple of 16: pad/crop layers included


# export_model holds its artefact to its tolerance on its own check volume (seed 0, batch 1), so
# `report.max_abs_diff <= tolerance` cannot fail here. These tests run the artefact themselves on
# another volume (batch 2, another seed and, where the input is dynamic, another size) and compare
# with the Keras model as trained: Keras' MaxPooling3D and the fused InstanceNormalization, not the
# export graph with builtin replacements that export_model compares LiteRT with.
INDEPENDENT_SEED = 2024


def independent_diff(model_path, runner, artefact, shape):
    """max |artefact - Keras model| on a fresh (2, *shape) standard-normal volume."""
    image = np.random.default_rng(INDEPENDENT_SEED).standard_normal((2, *shape)).astype("float32")
    model = keras.saving.load_model(model_path)
    expected = keras.ops.convert_to_numpy(serving_model(model, shape)(image, training=False))
    actual = runner(artefact, image)
    assert actual.shape == expected.shape
    return float(np.max(np.abs(actual - expected)))


# The input contracts the models carry, so every export below also writes and checks one (tests/test_contract.py
# covers the contract itself).
CONTRACTS = {
    "light": InputContract(modalities=("flair", "t1", "t1ce", "t2"), target="classes", spacing=(3, 3, 3),
                           patch_size=(16, 16, 16), input_multiple=4),
    "flair": InputContract(modalities=("flair",), target="whole_tumor", crop="center", crop_size=FLAIR_SHAPE[:3],
                           input_multiple=16),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny lightweight (dynamic spatial) and FLAIR (static, padded) models saved as .keras with contracts."""
    root = tmp_path_factory.mktemp("models")
    light = build_model("lightweight-unet", base_filters=4)
    flair = build_model("flair-unet", input_shape=FLAIR_SHAPE)
    paths = {"light": root / "light.keras", "flair": root / "flair.keras"}
    save_model(light, paths["light"], CONTRACTS["light"])
    save_model(flair, paths["flair"], CONTRACTS["flair"])
    return paths


@pytest.mark.parametrize("which,shape", [("light", LIGHT_SHAPE), ("flair", None)])
def test_tflite_is_builtin_only_and_matches_keras(models, tmp_path, which, shape):
    report = export_model(models[which], "tflite", out=tmp_path / "m.tflite", input_shape=shape)
    # Against Keras' own MaxPooling3D and instance norm: the builtin replacements are checked too.
    assert independent_diff(models[which], FORMATS["tflite"].run, report.path, shape or FLAIR_SHAPE) <= 1e-4
    assert "CONV_3D" in report.ops and "MAX_POOL_2D" in report.ops
    assert not [op for op in tflite_ops(report.path) if op.startswith("Flex")]
    assert b"Flex" not in report.path.read_bytes()


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
@pytest.mark.parametrize("quantize", ["float16", "dynamic-int8"])
def test_tflite_quantized_reports_error_and_size(models, tmp_path, quantize):
    full = export_model(models["light"], "tflite", out=tmp_path / "f32.tflite", input_shape=LIGHT_SHAPE)
    small = export_model(models["light"], "tflite", out=tmp_path / "q.tflite",
                         input_shape=LIGHT_SHAPE, quantize=quantize)
    diff = independent_diff(models["light"], FORMATS["tflite"].run, small.path, LIGHT_SHAPE)
    # An approximation (so not the float32 graph), within its documented bound.
    assert 0 < diff <= small.tolerance
    assert small.size_bytes <= full.size_bytes
    if quantize == "float16":
        assert small.size_bytes < full.size_bytes


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_saved_model_layout_and_auto_version(models, tmp_path):
    base = tmp_path / "saved_models" / "lightweight-unet"
    first = export_model(models["light"], "saved_model", out=base)
    second = export_model(models["light"], "saved_model", out=base)
    assert (first.path, second.path) == (base / "1", base / "2")
    assert (base / "1" / "saved_model.pb").is_file() and (base / "1" / "variables").is_dir()
    assert independent_diff(models["light"], FORMATS["saved_model"].run, first.path, (20, 18, 17, 4)) <= 1e-4


# One fresh process loads every SavedModel given to it (path and input size in pairs): a TensorFlow
# start (~7 s of one core) is paid once, not once per model. "modules" is read after each load. The
# SavedModel is also loaded as TF Serving's C++ SavedModelBundle loads it (the TF1 loader: its meta graph,
# its asset files fed to their placeholders, the signature run in a session).
FRESH_PROCESS = """
import json, sys
import numpy as np, tensorflow as tf
results = {}
for path, size in zip(sys.argv[1::2], sys.argv[2::2]):
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["image"]
    image = np.random.default_rng(0).standard_normal([1, *map(int, size.split(","))]).astype("float32")
    out = signature(image=tf.constant(image))
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], path)
        served = meta_graph.signature_def["serving_default"]
        v1_out = session.run(served.outputs["probabilities"].name, {served.inputs["image"].name: image})
    results[path] = {"modules": sorted(m for m in sys.modules if m.startswith("bratskeras")),
                     "input": [spec.dtype.name, spec.shape.as_list()],
                     "outputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in out.items()},
                     "sum": float(out["probabilities"].numpy().sum(axis=-1).mean()),
                     "v1_diff": float(np.max(np.abs(v1_out - out["probabilities"].numpy()))),
                     "v1_assets": [a.filename for a in meta_graph.asset_file_def]}
print(json.dumps(results))
"""
FRESH_SIZES = {"light": "20,18,17,4", "flair": "32,32,30,1"}


@pytest.fixture(scope="module")
def saved_models(models, tmp_path_factory):
    """{which: SavedModel version folder} exported once for the tests that only read them."""
    root = tmp_path_factory.mktemp("saved_models")
    return {which: export_model(models[which], "saved_model", out=root / which).path for which in FRESH_SIZES}


@pytest.fixture(scope="module")
def saved_model_processes(saved_models):
    """The fresh TensorFlow-only process and `saved_model_cli show`, started together (each is mostly a
    TensorFlow import: side by side on 2 cores). {name: CompletedProcess}."""
    arguments = [str(value) for which in FRESH_SIZES for value in (saved_models[which], FRESH_SIZES[which])]
    started = {
        "fresh": subprocess.Popen([sys.executable, "-c", FRESH_PROCESS, *arguments], cwd=saved_models["light"].parent,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "cli": subprocess.Popen([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                                 "--dir", str(saved_models["light"]), "--all"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    return finish_all(started)


@pytest.mark.parametrize("which", ["light", "flair"])
def test_saved_model_runs_in_fresh_tensorflow_only_process(saved_models, saved_model_processes, which):
    result = saved_model_processes["fresh"]
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])[str(saved_models[which])]
    assert info["modules"] == []
    size = FRESH_SIZES[which]
    spatial = [None, None, None, None, 4] if which == "light" else [None, 32, 32, 30, 1]
    assert info["input"] == ["float32", spatial]
    channels = 4 if which == "light" else 1
    assert info["outputs"] == {OUTPUT_NAME: ["float32", [1, *map(int, size.split(",")[:3]), channels]]}
    if which == "light":  # softmax over 4 classes sums to one
        assert abs(info["sum"] - 1.0) < 1e-5
    # TF Serving's loader takes the layout with the input contract as an asset, and serves the same output.
    assert info["v1_assets"] == [CONTRACT_FILE] and info["v1_diff"] <= 1e-6


def test_saved_model_cli_lists_the_signature(saved_model_processes):
    result = saved_model_processes["cli"]
    assert result.returncode == 0, result.stderr[-3000:]
    shown = result.stdout
    assert f"signature_def['{SIGNATURE_KEY}']" in shown
    assert f"inputs['{INPUT_NAME}']" in shown and f"outputs['{OUTPUT_NAME}']" in shown


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
@pytest.mark.parametrize("which", ["light", "flair"])
def test_onnx_matches_keras(models, tmp_path, which):
    pytest.importorskip("onnxruntime", reason="ONNX runtime not installed (extra `onnx`)")
    pytest.importorskip("tf2onnx", reason="tf2onnx not installed (extra `onnx`)")
    report = export_model(models[which], "onnx", out=tmp_path / "m.onnx")
    shape = (20, 18, 17, 4) if which == "light" else FLAIR_SHAPE
    assert independent_diff(models[which], FORMATS["onnx"].run, report.path, shape) <= 1e-4


def test_keras_inference_file_has_no_optimizer_and_matches(models, tmp_path):
    import keras

    trained = keras.saving.load_model(models["light"])
    trained.compile(optimizer="adam", loss="mse")
    report = export_model(trained, "keras", out=tmp_path / "inference.keras")
    assert report.max_abs_diff == 0.0
    reloaded = keras.saving.load_model(report.path, safe_mode=True)
    assert getattr(reloaded, "optimizer", None) is None
    x = np.zeros((1, 8, 8, 8, 4), "float32")
    assert np.array_equal(keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(trained(x)))


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def test_cli_prints_path_size_and_diff(models, tmp_path):
    result = _invoke(models["light"], "--format", "tflite", "--out", tmp_path / "m.tflite",
                     "--input-shape", "16,16,16,4")
    assert result.exit_code == 0, result.output
    assert "path:" in result.output and "size:" in result.output and "max abs diff:" in result.output


def test_cli_unknown_format_is_a_usage_error(models):
    result = _invoke(models["light"], "--format", "pt")
    assert result.exit_code == 2  # click's usage error: --format is a choice
    assert "'pt' is not one of 'saved_model', 'tflite', 'onnx', 'keras'" in result.output


def test_cli_foreign_file_is_one_line_error(tmp_path):
    bogus = tmp_path / "notes.keras"
    bogus.write_text("not a model")
    result = _invoke(bogus, "--format", "keras", "--out", tmp_path / "x.keras")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "not a .keras model file" in result.output


def test_cli_existing_output_needs_overwrite(models, tmp_path):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"keep me")
    result = _invoke(models["light"], "--format", "tflite", "--out", target, "--input-shape", "16,16,16,4")
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert target.read_bytes() == b"keep me"
    result = _invoke(models["light"], "--format", "saved_model", "--out", tmp_path / "sm", "--version", "3")
    assert result.exit_code == 0, result.output
    result = _invoke(models["light"], "--format", "saved_model", "--out", tmp_path / "sm", "--version", "3")
    assert result.exit_code == 1 and "exists" in result.output


def test_builtin_instance_norm_matches_the_models_instance_norm():
    from bratskeras.export.graph import BuiltinInstanceNormalization
    from bratskeras.models.layers import InstanceNormalization

    x = np.random.default_rng(4).normal(3.0, 2.0, size=(2, 12, 10, 8, 5)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(InstanceNormalization(epsilon=1e-5)(x))
    actual = keras.ops.convert_to_numpy(BuiltinInstanceNormalization(epsilon=1e-5)(x))
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    np.testing.assert_allclose(actual.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)


def test_cli_tolerance_flag_fails_and_removes_the_artefact(models, tmp_path):
    target = tmp_path / "q.tflite"
    result = _invoke(models["light"], "--format", "tflite", "--quantize", "float16", "--out", target,
                     "--input-shape", "16,16,16,4", "--tolerance", "1e-12")
    assert result.exit_code == 1
    assert "failed its check" in result.output and "tolerance 1e-12" in result.output
    assert not target.exists()


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_model_trained_in_mixed_precision_exports_as_float32(tmp_path):
    from bratskeras.models import inference_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    trained = build_model("lightweight-unet", base_filters=4)
    keras.mixed_precision.set_global_policy("float32")
    path = tmp_path / "best.keras"
    inference_model(trained).save(path)
    for fmt, out in (("onnx", tmp_path / "m.onnx"), ("tflite", tmp_path / "m.tflite")):
        if fmt == "onnx":
            pytest.importorskip("onnxruntime")
        report = export_model(path, fmt, out=out, input_shape=LIGHT_SHAPE)
        runner = FORMATS[fmt].run
        assert independent_diff(path, runner, report.path, LIGHT_SHAPE) <= 1e-4


@pytest.mark.parametrize("shape", [(1, 8, 6, 4, 3), (2, 16, 16, 16, 5), (3, 2, 2, 2, 1)])
def test_builtin_max_pool_3d_equals_keras_max_pooling_3d(shape):
    """LiteRT's replacement of 3-D pooling gives exactly Keras' MaxPooling3D (2x2x2, stride 2)."""
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape).astype(np.float32)
    x[..., 0] = np.round(x[..., 0])  # ties inside windows, and negative maxima
    expected = keras.ops.convert_to_numpy(keras.layers.MaxPooling3D(2, strides=2)(x))
    actual = keras.ops.convert_to_numpy(BuiltinMaxPool3D()(x))
    np.testing.assert_array_equal(actual, expected)
