"""predict with several models (the mean of their probabilities) and --device (issue #25 item 5).

Tiny untrained lightweight-unets (base_filters 4) on one 32x32x24 case: a
run folder at 3 mm and bare .keras files at the source grid, so an ensemble
mixes spacings, and each member's probabilities must come back to the
source grid before the mean.
"""


import keras
import nibabel as nib
import numpy as np
import pytest
from cli_checks import only_line, write_run_folder
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core import labels, targets
from bratskeras.data.contract import InputContract
from bratskeras.models import build_model, inference_model
from bratskeras.models.saving import save_model
from bratskeras.predict import tiling
from bratskeras.synth import phantoms as synth

SHAPE = (32, 32, 24)


def _predict(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)])


def _bare_model(path, seed, target="classes", modalities=("flair", "t1", "t1ce", "t2"), postprocess=()):
    """An untrained .keras at the source grid whose embedded contract says `target`, `modalities`, `postprocess`."""
    keras.utils.set_random_seed(seed)
    network = build_model("lightweight-unet", input_shape=(None, None, None, len(modalities)), base_filters=4,
                          num_classes=targets.get_target(target).channels(None))
    contract = InputContract(modalities=modalities, target=target, patch_size=(16, 16, 16), input_multiple=4,
                             postprocess=postprocess)
    save_model(inference_model(network), str(path), contract)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"run": a 3 mm run folder, "bare": a source-grid .keras, "regions": one of target regions}."""
    root = tmp_path_factory.mktemp("models")
    run = write_run_folder(root / "run")
    return {"run": run, "bare": _bare_model(root / "bare.keras", 3),
            "regions": _bare_model(root / "regions.keras", 4, target="regions")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "d"
    synth.write_dataset(folder, cases=1, shape=SHAPE, layout="brats2021", seed=3)
    return folder


def _written(out):
    """(labels, probabilities or None) of the one case predicted into `out`."""
    (path,) = out.glob("*.nii.gz")
    probabilities = out / "probabilities" / path.name
    return (np.asarray(nib.load(path).dataobj),
            np.asarray(nib.load(probabilities).dataobj) if probabilities.exists() else None)


@pytest.fixture(scope="module")
def alone(models, data, tmp_path_factory):
    """Each model's own predict with --save-probabilities: {name: (labels, probabilities)}."""
    written = {}
    for name in ("run", "bare"):
        out = tmp_path_factory.mktemp(f"alone-{name}")
        result = _predict(models[name], data, out, "--save-probabilities", "--overwrite")
        assert result.exit_code == 0, result.output
        written[name] = _written(out)
    return written


def test_an_ensemble_is_the_mean_of_its_models_probabilities(models, data, alone, tmp_path):
    result = _predict(models["run"], models["bare"], data, tmp_path / "out", "--save-probabilities")
    assert result.exit_code == 0, result.output
    # The header names each model, its contract and where the contract came from.
    assert f"model 1/2: {models['run']}" in result.output and f"model 2/2: {models['bare']}" in result.output
    assert "spacing 3x3x3 mm" in result.output and "spacing source grid" in result.output
    assert "contract source: run config.json" in result.output and "contract source: embedded" in result.output
    labels_map, probabilities = _written(tmp_path / "out")
    # The 3 mm model's probabilities came back to the source grid before the mean.
    expected = (alone["run"][1] + alone["bare"][1]) / 2
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    classes = targets.output_to_classes(probabilities, "classes")
    np.testing.assert_array_equal(labels_map, labels.classic_to_labels(classes, "brats2020"))
    # Not either model's own answer: the mean decided.
    assert np.abs(probabilities - alone["bare"][1]).max() > 1e-3


def test_the_same_model_twice_predicts_as_once(models, data, alone, tmp_path):
    result = _predict(models["run"], models["run"], data, tmp_path / "out", "--save-probabilities")
    assert result.exit_code == 0, result.output
    labels_map, probabilities = _written(tmp_path / "out")
    np.testing.assert_array_equal(labels_map, alone["run"][0])
    np.testing.assert_array_equal(probabilities, alone["run"][1])


def test_models_that_disagree_on_the_target_are_refused_in_one_line(models, data, tmp_path):
    line = only_line(_predict(models["bare"], models["regions"], data, tmp_path / "out"))
    assert str(models["bare"]) in line and str(models["regions"]) in line
    assert "disagree on target (classes vs regions)" in line
    assert not (tmp_path / "out").exists()


def test_models_that_disagree_on_the_modalities_are_refused_in_one_line(models, data, tmp_path):
    flair_only = _bare_model(tmp_path / "flair.keras", 5, modalities=("flair",))
    line = only_line(_predict(models["bare"], flair_only, data, tmp_path / "out"))
    assert "disagree on modalities (flair,t1,t1ce,t2 vs flair)" in line and str(flair_only) in line
    assert not (tmp_path / "out").exists()


def test_models_that_carry_different_postprocessing_need_the_users_steps(models, data, alone, tmp_path):
    # The mean is post-processed once: whose steps would apply is the user's to say.
    cleaned = _bare_model(tmp_path / "cleaned.keras", 3, postprocess=({"name": "major_components", "fraction": 0.1},))
    line = only_line(_predict(models["bare"], cleaned, data, tmp_path / "out"))
    assert f"{models['bare']} and {cleaned} carry different post-processing" in line
    assert "(none vs major_components:fraction=0.1)" in line and "--postprocess" in line
    assert not (tmp_path / "out").exists()
    # Named steps apply to the mean: here none, so the mean of one model twice is that model's own answer.
    result = _predict(models["bare"], cleaned, data, tmp_path / "out", "--postprocess", "none")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(_written(tmp_path / "out")[0], alone["bare"][0])


@pytest.mark.parametrize("device", ["gpu", "gpu:1"])
def test_a_gpu_that_is_not_there_is_refused_in_one_line(models, data, tmp_path, device):
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    line = only_line(_predict(models["bare"], data, tmp_path / "out", "--device", device))
    assert line.startswith(f"Error: --device {device}: TensorFlow sees no GPU (its devices: CPU:0")
    assert not (tmp_path / "out").exists()


def test_device_cpu_runs_the_model_on_the_cpu(models, data, alone, tmp_path, monkeypatch):
    from tensorflow.python.eager import context

    devices = []
    forward = tiling._network_function

    def recording(model):  # the device scope every window batch runs under
        function = forward(model)
        return lambda batch: (devices.append(context.context().device_name), function(batch))[1]

    monkeypatch.setattr(tiling, "_network_function", recording)
    result = _predict(models["bare"], data, tmp_path / "out", "--device", "CPU")
    assert result.exit_code == 0, result.output
    assert devices and all(name.endswith("device:CPU:0") for name in devices)
    np.testing.assert_array_equal(_written(tmp_path / "out")[0], alone["bare"][0])


def test_device_is_a_usage_error_when_malformed_and_refused_for_cpu_runtimes(data, tmp_path):
    result = _predict(tmp_path, data, tmp_path / "out", "--device", "tpu")
    assert result.exit_code == 2 and "expected auto, cpu, gpu or gpu:N" in result.output
    model = tmp_path / "m.onnx"
    model.write_bytes(b"never read")
    line = only_line(_predict(model, data, tmp_path / "out", "--device", "gpu"))
    assert "m.onnx runs in onnxruntime on the CPU" in line
    assert not (tmp_path / "out").exists()
