"""The input contract: one definition, stored in every format, read back by predict.

A model's contract (modalities, spacing, normalisation, crop, target, task,
patch size) travels inside the model file, so a bare `.keras` copied out of a
3 mm run folder still predicts at 3 mm, and exported SavedModel / ONNX /
LiteRT models predict as the `.keras` they came from.
"""

import dataclasses
import importlib
import json
import os
import shutil
import types
import zipfile

import keras
import nibabel as nib
import numpy as np
import pytest
from cli_checks import only_line, record_batches, write_run_folder
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.config.train_config import resolve_config
from bratskeras.core.errors import ExportError, ModelError
from bratskeras.data import contract as contracts
from bratskeras.data import layouts, model_files
from bratskeras.data.contract import InputContract
from bratskeras.data.model_files import read_contract
from bratskeras.export.exporter import export_model
from bratskeras.models import build_model
from bratskeras.models.saving import save_model
from bratskeras.predict import model_setup, runtimes
from bratskeras.synth import phantoms as synth
from bratskeras.training.fit import run_contract

# A 32^3 head whose brain fills its volume (so the brain-box crop is the whole volume) at 1 mm: at the
# contract's 2 mm the network sees 16^3, which is also the LiteRT export's fixed input, so every format
# runs the case as one window of the same size and their outputs can be compared voxel by voxel.
HEAD = (32, 32, 32)
EXPORT_SPACING = (2.0, 2.0, 2.0)
LITERT_SHAPE = (16, 16, 16, 4)


def _contract(**changes):
    values = dict(modalities=("flair", "t1", "t1ce", "t2"), target="classes", spacing=EXPORT_SPACING,
                  crop="bbox", margin=2, patch_size=(16, 16, 16), input_multiple=4,
                  postprocess=({"name": "et_enhancement", "percentile": 75},))
    return InputContract(**{**values, **changes})


def _predict(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)])


def _head_dataset(folder, cases=1):
    """Cases of HEAD whose brain spans the whole volume (crop = the whole volume), like a skull-stripped scan.

    Every voxel is brain (non-zero) but the border's, which are background (0) outside a central patch of
    each face: the brain touches all six faces, so its box is the volume, yet most of the border is
    background, as predict's skull-stripping check (bratskeras.data.inspection) expects of a brain.
    """
    synth.write_dataset(folder, cases=cases, shape=HEAD, layout="brats2021", seed=5)
    border = np.zeros(HEAD, bool)
    for axis in range(3):
        for index in (0, -1):
            border[(slice(None),) * axis + (index,)] = True
    patch = np.zeros(HEAD, bool)
    for axis in range(3):  # each face's central patch, on the face itself
        reach = [slice(n // 2 - 6, n // 2 + 6) for n in HEAD]
        reach[axis] = slice(None)
        patch[tuple(reach)] = True
    background = border & ~patch
    for case in layouts.discover(folder).cases:
        for path in case.modalities.values():
            source = nib.load(path)
            values = np.abs(np.asarray(source.dataobj, dtype=np.float32)) + 1.0
            values[background] = 0.0
            nib.save(nib.Nifti1Image(values, source.affine, source.header), path)
    return folder




# ------------------------------------------------------------------ the definition


def test_json_round_trip_and_describe():
    contract = _contract(task="gli", target="regions", crop="center", crop_size=(20, 24, 16))
    text = contract.to_json()
    assert InputContract.from_json(text, "m.keras") == contract
    assert json.loads(text)["spacing"] == [2.0, 2.0, 2.0] and json.loads(text)["task"] == "gli"
    assert json.loads(text)["format_version"] == contracts.FORMAT_VERSION
    described = contract.describe()
    assert "modalities flair,t1,t1ce,t2" in described and "spacing 2x2x2 mm" in described
    assert "crop centre 20x24x16" in described and "target regions" in described and "labels gli" in described
    assert "source grid" in _contract(spacing=None).describe()
    assert "postprocess et_enhancement:percentile=75" in described
    assert "postprocess none" in _contract(postprocess=()).describe()


def test_a_format_1_contract_reads_as_one_without_postprocessing():
    """Models written before `postprocess` existed keep loading, and predict applies nothing to them."""
    values = _contract().to_dict()
    del values["postprocess"]
    values["format_version"] = 1
    assert InputContract.from_dict(values, "old.keras") == _contract(postprocess=(), format_version=1)
    values["format_version"] = 2
    with pytest.raises(ModelError, match="missing postprocess"):
        InputContract.from_dict(values, "new.keras")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("spacing"), "missing spacing"),
    (lambda d: d.update(colour="red"), "unknown colour"),
    (lambda d: d.update(modalities=["flair", "pd"]), "modalities must be distinct names"),
    (lambda d: d.update(spacing=[3, -1, 3]), "spacing must be three positive"),
    (lambda d: d.update(spacing=3), "spacing"),
    (lambda d: d.update(target="tumour"), "target must be one of"),
    (lambda d: d.update(task="liver"), "task must be one of"),
    (lambda d: d.update(normalisation="minmax"), "normalisation 'minmax'"),
    (lambda d: d.update(crop="square"), "crop must be one of"),
    (lambda d: d.update(patch_size=[16, 16]), "patch_size must be three positive integers"),
    (lambda d: d.update(input_multiple=0), "input_multiple"),
    (lambda d: d.update(postprocess="et_enhancement"), "postprocess must be a list of steps"),
    (lambda d: d.update(postprocess=[{"percentile": 75}]), "postprocess must be a list of steps"),
    (lambda d: d.update(format_version=contracts.FORMAT_VERSION + 1), "newer than this bratskeras reads"),
])
def test_a_damaged_contract_is_a_one_line_error_naming_the_file(change, message):
    values = _contract().to_dict()
    change(values)
    with pytest.raises(ModelError, match=message) as caught:
        InputContract.from_dict(values, "runs/x/best.keras")
    assert str(caught.value).startswith("runs/x/best.keras: ") and "\n" not in str(caught.value)
    with pytest.raises(ModelError, match="not JSON"):
        InputContract.from_json("{spacing: 3}", "m.keras")


def test_built_from_the_run_config_as_fit_writes_it():
    config = resolve_config("lightweight2020", {"spacing": (3, 3, 3), "patch_size": (48, 48, 40), "crop": "bbox",
                                                "model_overrides": {"base_filters": 4},
                                                "postprocess": [{"name": "major_components", "fraction": 0.2}]})
    network = build_model("lightweight-unet", base_filters=4)
    contract = run_contract(config, network)
    assert contract.spacing == (3.0, 3.0, 3.0) and contract.patch_size == (48, 48, 40)
    assert contract.modalities == config.modalities and contract.target == "classes" and contract.task is None
    assert contract.input_multiple == 4 and contract.normalisation == "zscore-nonzero"
    assert contract.postprocess == ({"name": "major_components", "fraction": 0.2},)
    # predict's resolution of the config.json fit writes is the same one.
    from_json = model_setup.setup_from_model(network, json.loads(config.to_json())).contract
    assert from_json == contract


# ---------------------------------------------------------------- every format


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny lightweight-unet saved with a 2 mm contract, and its exports: {format: path}."""
    root = tmp_path_factory.mktemp("exported")
    keras.utils.set_random_seed(1)
    path = root / "bare.keras"
    save_model(build_model("lightweight-unet", base_filters=4), path, _contract())
    paths = {"keras": path}
    for format, out, shape in (("saved_model", root / "sm", None), ("onnx", root / "m.onnx", None),
                               ("tflite", root / "m.tflite", LITERT_SHAPE)):
        report = export_model(path, format, out=out, input_shape=shape)
        assert report.contract == _contract() and report.contract_source == model_setup.EMBEDDED
        paths[format] = report.path
    return paths


@pytest.mark.parametrize("format", ["keras", "saved_model", "onnx", "tflite"])
def test_the_contract_round_trips_through_every_format(exported, format):
    assert model_files.model_format(exported[format]) == format
    assert read_contract(exported[format]) == _contract()


def test_a_keras_file_with_its_contract_still_loads_in_plain_keras(exported):
    model = keras.saving.load_model(exported["keras"], safe_mode=True)
    assert model.output_shape[-1] == 4
    # Keras' own three entries only: an extra one would make Keras extract the archive on every load.
    assert sorted(zipfile.ZipFile(exported["keras"]).namelist()) == ["config.json", "metadata.json",
                                                                    "model.weights.h5"]


def test_the_saved_model_contract_is_a_tracked_asset(exported):
    folder = exported["saved_model"]
    assert (folder / "assets" / contracts.CONTRACT_FILE).is_file()
    tracked = runtimes.SavedModelPredictor(folder).asset_path(contracts.CONTRACT_KEY)
    assert os.path.samefile(tracked, folder / "assets" / contracts.CONTRACT_FILE)


def test_the_onnx_contract_is_in_metadata_props(exported):
    onnx = pytest.importorskip("onnx")
    props = {entry.key: entry.value for entry in onnx.load(str(exported["onnx"])).metadata_props}
    assert InputContract.from_json(props[contracts.CONTRACT_KEY], "m.onnx") == _contract()


def test_the_tflite_contract_is_a_named_metadata_buffer_and_the_file_still_runs(exported):
    schema = importlib.import_module(model_files.TFLITE_SCHEMA_MODULES[0])
    model = schema.Model.GetRootAs(exported["tflite"].read_bytes(), 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names.count(contracts.CONTRACT_KEY.encode()) == 1
    assert b"min_runtime_version" in names  # the converter's own metadata is kept
    predictor = runtimes.LiteRtPredictor(exported["tflite"])  # ai-edge-litert, as predict runs it
    out = predictor(np.zeros((2, *LITERT_SHAPE), np.float32))
    assert out.shape == (2, *LITERT_SHAPE[:3], 4)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


def test_an_export_whose_contract_does_not_read_back_is_not_written(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(model_files, "write_keras", lambda path, contract: None)  # the writer "forgets" it
    target = tmp_path / "m.keras"
    with pytest.raises(ExportError, match="input contract reads back as None"):
        export_model(exported["keras"], "keras", out=target)
    assert not target.exists() and os.listdir(tmp_path) == []


def test_a_model_without_a_contract_exports_without_one(tmp_path):
    plain = tmp_path / "plain.keras"
    build_model("lightweight-unet", base_filters=4).save(plain)  # Keras' own save: no contract
    report = export_model(plain, "keras", out=tmp_path / "copy.keras")
    assert report.contract is None and read_contract(report.path) is None


# ------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    return _head_dataset(tmp_path_factory.mktemp("heads") / "data")


@pytest.fixture(scope="module")
def keras_prediction(exported, heads, tmp_path_factory):
    """predict of the bare .keras: (labels, probabilities) of the one case."""
    out = tmp_path_factory.mktemp("keras_prediction")
    result = _predict(exported["keras"], heads, out, "--save-probabilities", "--overwrite")
    assert result.exit_code == 0, result.output
    return _written(out)


def _written(out):
    (labels,) = [p for p in out.glob("*.nii.gz")]
    probabilities = out / "probabilities" / labels.name
    return np.asarray(nib.load(labels).dataobj), np.asarray(nib.load(probabilities).dataobj)


@pytest.mark.parametrize("format", ["saved_model", "onnx", "tflite"])
def test_predict_on_an_export_matches_the_keras_model(exported, heads, keras_prediction, tmp_path, monkeypatch,
                                                      format):
    seen = record_batches(monkeypatch)
    result = _predict(exported[format], heads, tmp_path / "out", "--save-probabilities")
    assert result.exit_code == 0, result.output
    assert "spacing 2x2x2 mm" in result.output
    assert f"contract source: {model_setup.EXPORTED} ({model_files.LOCATIONS[format]})" in result.output
    # The 32^3 head at the contract's 2 mm, in one window: the spacing came from the export.
    assert seen == [(1, 16, 16, 16, 4)]
    labels, probabilities = _written(tmp_path / "out")
    expected_labels, expected_probabilities = keras_prediction
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-4)
    # An untrained model's classes are near ties: a runtime's float32 round-off may flip a rare voxel.
    assert np.mean(labels == expected_labels) >= 0.999


def test_a_missing_runtime_is_refused_before_any_work(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "ai_edge_litert") else find_spec(name, *a))
    for name, extra in (("m.onnx", "onnx"), ("m.tflite", "litert")):
        (tmp_path / name).write_bytes(b"never read")
        line = only_line(_predict(tmp_path / name, tmp_path, tmp_path / "out"))
        assert name in line and f'pip install "bratskeras[{extra}]"' in line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def three_mm_run(tmp_path_factory):
    """A 3 mm run folder as fit leaves it: config.json and best.keras written by fit's own writers."""
    return write_run_folder(tmp_path_factory.mktemp("runs") / "run")


def test_a_bare_keras_copied_out_of_a_3mm_run_predicts_at_3mm(three_mm_run, heads, tmp_path, monkeypatch):
    bare = tmp_path / "elsewhere" / "model.keras"
    os.makedirs(bare.parent)
    shutil.copy(three_mm_run / "best.keras", bare)
    seen = record_batches(monkeypatch)
    result = _predict(bare, heads, tmp_path / "bare")
    assert result.exit_code == 0, result.output
    assert "spacing 3x3x3 mm" in result.output and f"contract source: {model_setup.EMBEDDED}" in result.output
    assert "warning" not in result.output
    assert seen == [(1, 11, 11, 11, 4)]  # 32 voxels of 1 mm at 3 mm (at 1 mm it would be 32^3)
    result = _predict(three_mm_run, heads, tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"contract source: {model_setup.RUN_CONFIG_AND_EMBEDDED}" in result.output
    (from_bare,), (from_run,) = (list((tmp_path / d).glob("*.nii.gz")) for d in ("bare", "run"))
    np.testing.assert_array_equal(np.asarray(nib.load(from_bare).dataobj), np.asarray(nib.load(from_run).dataobj))


def test_spacing_flag_overrides_the_contract(three_mm_run, heads, tmp_path, monkeypatch):
    seen = record_batches(monkeypatch)
    result = _predict(three_mm_run / "best.keras", heads, tmp_path / "source", "--spacing", "source")
    assert result.exit_code == 0, result.output
    assert "spacing source grid" in result.output
    assert "spacing overridden by --spacing (the contract says 3x3x3 mm)" in result.output
    assert seen == [(1, *HEAD, 4)]
    seen.clear()
    result = _predict(three_mm_run / "best.keras", heads, tmp_path / "two", "--spacing", "2,2,4")
    assert result.exit_code == 0, result.output
    assert "spacing 2x2x4 mm" in result.output and seen == [(1, 16, 16, 8, 4)]
    bad = _predict(three_mm_run / "best.keras", heads, tmp_path / "bad", "--spacing", "0,1,1")
    assert bad.exit_code == 2 and "--spacing" in bad.output and not (tmp_path / "bad").exists()


def test_a_run_config_that_disagrees_with_the_embedded_contract_is_refused(three_mm_run, heads, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(three_mm_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "spacing": [1, 1, 1]}))
    line = only_line(_predict(run, heads, tmp_path / "out"))
    assert "best.keras: its embedded contract and" in line and "config.json disagree (spacing" in line


def test_no_contract_warns_and_says_what_it_guessed(heads, tmp_path, exported):
    plain = tmp_path / "plain.keras"
    build_model("lightweight-unet", base_filters=4).save(plain)
    result = _predict(plain, heads, tmp_path / "out")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "no input contract" in warnings[0] and "guessed from its channel counts" in warnings[0]
    assert "modalities flair,t1,t1ce,t2, target classes, crop bbox, the source grid" in warnings[0]
    assert f"contract source: {model_setup.GUESSED}" in result.output
    # A SavedModel without its asset (an export of an older bratskeras) is guessed the same way.
    old = tmp_path / "old_saved_model"
    shutil.copytree(exported["saved_model"], old)
    os.remove(old / "assets" / contracts.CONTRACT_FILE)
    result = _predict(old, heads, tmp_path / "old")
    assert result.exit_code == 0, result.output
    assert "no input contract" in result.output and f"contract source: {model_setup.GUESSED}" in result.output


def test_no_contract_and_no_guess_is_refused_in_one_line(heads, tmp_path):
    two = tmp_path / "two.keras"
    build_model("lightweight-unet", base_filters=4, num_classes=2).save(two)
    line = only_line(_predict(two, heads, tmp_path / "out"))
    assert "two.keras: no input contract, and no default for 4 input / 2 output channels" in line


def _damage_keras(source, target):
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as damaged:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata[contracts.CONTRACT_KEY]["modalities"] = ["flair", "flair"]
                data = json.dumps(metadata)
            damaged.writestr(info, data)


@pytest.mark.parametrize("format", ["keras", "saved_model", "onnx", "tflite"])
def test_a_damaged_contract_in_any_format_stops_predict_in_one_line(exported, heads, tmp_path, format):
    damaged = tmp_path / exported[format].name
    if format == "keras":
        _damage_keras(exported["keras"], damaged)
    elif format == "saved_model":
        shutil.copytree(exported[format], damaged)
        (damaged / "assets" / contracts.CONTRACT_FILE).write_text('{"modalities": ')
    else:
        bad = types.SimpleNamespace(to_json=lambda: json.dumps({**_contract().to_dict(), "crop": "square"}))
        if format == "onnx":
            shutil.copy(exported[format], damaged)
            model_files.write_onnx(damaged, bad)
        else:
            damaged.write_bytes(model_files.with_tflite_contract(exported[format].read_bytes(), bad, damaged))
    line = only_line(_predict(damaged, heads, tmp_path / "out"))
    assert line.startswith(f"Error: {damaged}") and f"damaged {contracts.CONTRACT_KEY}" in line
    assert not (tmp_path / "out").exists()


def test_setup_checks_a_contract_against_the_network():
    network = build_model("lightweight-unet", base_filters=4, num_classes=3)
    with pytest.raises(ModelError, match="says 4 modalities and target 'classes'.*3 output"):
        model_setup.setup_for(network.input_shape[1:], 3, _contract(), model_setup.EMBEDDED, "m.keras")
    setup = model_setup.setup_for(network.input_shape[1:], 3, _contract(target="regions"), model_setup.EMBEDDED,
                                  "m.keras")
    assert setup.window == (160, 160, 160) and setup.multiple == 4 and setup.preprocess.margin == 2
    fixed = model_setup.setup_for((16, 16, 16, 4), 3, _contract(target="regions"), model_setup.EXPORTED, "m.tflite")
    assert fixed.fixed_input and fixed.window == (16, 16, 16)
    overridden = model_setup.override_spacing(setup, None)
    assert overridden.preprocess.spacing is None and overridden.contract_spacing == EXPORT_SPACING
    assert dataclasses.replace(overridden.contract, spacing=EXPORT_SPACING) == setup.contract


def test_a_contract_whose_steps_cannot_apply_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "m.keras"
    save_model(build_model("lightweight-unet", base_filters=4), path, _contract(postprocess=({"name": "blur"},)))
    with pytest.raises(ModelError, match="its contract's postprocess: a post-processing step must be") as caught:
        model_setup.load_predictor(str(path))
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
