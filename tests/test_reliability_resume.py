"""Issue #24, resume reliability: damaged resume state, a run's remembered dataset, --epochs on resume,
hand-edited config.json, and the checks a resume makes before it touches the data.

One tiny 2-epoch run (module fixture) is copied per test (shutil.copytree), so tests do not depend on
each other; every fault is injected into the copy.
"""

import json
import os
import shutil

import pytest
from cli_checks import deny_writes, tree
from click.testing import CliRunner
from model_cards import example_card

from bratskeras import pretrained
from bratskeras.cli import cli
from bratskeras.config.train_config import resolve_config
from bratskeras.core import run_folder
from bratskeras.core.errors import ConfigError, OutputError
from bratskeras.synth import phantoms as synth
from bratskeras.training import fit as fit_module
from bratskeras.training import resume_state
from bratskeras.training import run_dir as run_files
from bratskeras.training.fit import fit
from bratskeras.training.prepare import case_sizes

SHAPE = (24, 24, 16)
TINY = {"model_overrides": {"base_filters": 4}, "epochs": 2, "steps_per_epoch": 1, "batch_size": 2,
        "patch_size": (16, 16, 16), "crop": "none", "precision": "float32", "checkpoint_every": 1,
        "reduce_lr_patience": 0, "early_stopping_patience": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The dataset the run trains on (4 labelled cases), and another one (5)."""
    root = tmp_path_factory.mktemp("data")
    synth.write_dataset(root / "mine", cases=4, shape=SHAPE, layout="brats2021", seed=3)
    synth.write_dataset(root / "other", cases=5, shape=SHAPE, layout="brats2021", seed=4)
    return {"mine": str(root / "mine"), "other": str(root / "other")}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "run")
    fit(resolve_config("lightweight2020", TINY), data["mine"], run, verbose=0)
    return run


@pytest.fixture()
def run(trained, tmp_path):
    """A private copy of the trained run."""
    copy = str(tmp_path / "run")
    shutil.copytree(trained, copy)
    return copy




def _refused(args, *needles):
    """Runs the CLI, expects a one-line error (no traceback) holding every needle; returns that line."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- item 4: damaged resume state


@pytest.mark.parametrize("damage", ["garbage", "empty", "removed"])
def test_a_damaged_or_lost_state_pointer_is_refused_never_restarted_at_epoch_0(run, data, damage):
    pointer = os.path.join(run, "state", "checkpoint")
    if damage == "removed":
        os.remove(pointer)
    else:
        open(pointer, "w").write("not a checkpoint {{" if damage == "garbage" else "")
    before = tree(run, files_only=True)
    line = _refused(["fit", data["mine"], "--resume", run, "--epochs", "3", "--quiet"],
                    "nothing was changed", "--init-from")
    assert (os.path.join(run, "history.csv") if damage == "removed" else pointer) in line
    assert tree(run, files_only=True) == before  # the old state, history and config.json are all still there


@pytest.mark.parametrize("file,truncate_to", [("epoch-2.index", 100), ("epoch-2.data-00000-of-00001", 1000),
                                              ("epoch-2.json", 10)])
def test_a_truncated_state_file_is_a_one_line_error_naming_it(run, data, file, truncate_to):
    path = os.path.join(run, "state", file)
    os.truncate(path, truncate_to)
    before = tree(run, files_only=True)
    _refused(["fit", data["mine"], "--resume", run, "--epochs", "3", "--quiet"], f"{path}: damaged resume state")
    assert tree(run, files_only=True) == before


# ---------------------------------------------------------------- item 9: the run's dataset and --epochs


def test_resume_on_another_data_dir_is_refused_before_reading_it(run, data):
    config_json = open(os.path.join(run, "config.json"), "rb").read()
    _refused(["fit", data["other"], "--resume", run, "--epochs", "3", "--quiet"],
             f"was trained on {data['mine']}", f"DATA_DIR {data['other']} holds other data")
    assert open(os.path.join(run, "config.json"), "rb").read() == config_json
    assert not os.path.exists(os.path.join(data["other"], ".bratskeras_cache"))  # neither inspected nor cached


def test_the_same_cases_elsewhere_are_the_runs_data_and_changed_cases_are_not(run, data, tmp_path):
    moved = shutil.copytree(data["mine"], tmp_path / "moved")
    run_files.check_dataset(run, run_files.dataset_record(moved, case_sizes(moved)))
    label = next(moved.rglob("*_seg.nii.gz"))
    label.write_bytes(label.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match=f"the files of case {label.parent.name} changed size"):
        run_files.check_dataset(run, run_files.dataset_record(moved, case_sizes(moved)))


def test_fewer_epochs_than_trained_is_refused_and_config_json_kept(run, data):
    config_json = open(os.path.join(run, "config.json"), "rb").read()
    _refused(["fit", data["mine"], "--resume", run, "--epochs", "1", "--quiet"],
             "--epochs 1 is fewer than the 2 epochs it has trained")
    assert open(os.path.join(run, "config.json"), "rb").read() == config_json


def test_resume_without_data_dir_uses_the_remembered_folder_and_records_the_longer_budget(run, data):
    result = CliRunner().invoke(cli, ["fit", "--resume", run, "--epochs", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.load(open(os.path.join(run, run_folder.DATASET_FILE)))
    assert record["data_dir"] == os.path.abspath(data["mine"]) and len(record["cases"]) == 4
    assert json.load(open(os.path.join(run, "config.json")))["epochs"] == 3
    assert resume_state.read_state(resume_state.latest_state(run))["epoch"] == 3


# ---------------------------------------------------------------- item 11: a hand-edited config.json


EDITS = {
    "modalities: 5": (lambda c: {**c, "modalities": 5}, "field modalities must be"),
    "crop_size: null": (lambda c: {**c, "crop_size": None}, "field crop_size must be three positive integers"),
    "spacing: -1": (lambda c: {**c, "spacing": -1}, "field spacing must be"),
    "a list": (lambda c: [c], "must hold a JSON object"),
    "invalid JSON": (None, "not valid JSON"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_hand_edited_config_json_is_one_line_naming_file_and_field(run, data, tmp_path, monkeypatch, edit):
    change, message = EDITS[edit]
    path = os.path.join(run, "config.json")
    config = json.load(open(path))
    open(path, "w").write("{\"epochs\": 2," if change is None else json.dumps(change(config)))
    commands = {
        "predict": ["predict", run, data["mine"], str(tmp_path / "predicted")],
        "export": ["export", run, "--format", "keras", "--out", str(tmp_path / "exported.keras")],
        "fit --resume": ["fit", data["mine"], "--resume", run, "--quiet"],
        "fit --init-from": ["fit", data["mine"], "--init-from", run, "--out", str(tmp_path / "tuned"), "--quiet"],
    }
    for args in commands.values():
        _refused(args, f"{path}: ", message)
    assert not os.path.exists(tmp_path / "predicted") and not os.path.exists(tmp_path / "exported.keras")
    # A pretrained model's folder is a run folder too (`summary pretrained:NAME`).
    shipped = tmp_path / "catalogue" / "edited"
    shipped.mkdir(parents=True)
    for name in ("best.keras", "config.json"):
        shutil.copy(os.path.join(run, name), shipped / name)
    (shipped / "card.json").write_text(json.dumps(example_card("edited", "lightweight-unet", 1)))
    monkeypatch.setattr(pretrained, "shipped_folder", lambda: tmp_path / "catalogue")
    _refused(["summary", "pretrained:edited"], f"{shipped / 'config.json'}: ", message)


# ---------------------------------------------------------------- item 13: refusals before the data


def test_resume_of_an_unwritable_run_is_refused_before_the_data_is_read(run, data, monkeypatch):
    def touched(*args, **kwargs):
        raise AssertionError("the data was read before the run folder was checked")

    monkeypatch.setattr(fit_module, "load_cases", touched)
    monkeypatch.setattr(fit_module, "case_sizes", touched, raising=False)
    if os.geteuid() == 0:  # root writes anywhere: simulate the permission the folder lacks
        deny_writes(monkeypatch, os.path.abspath(run))
    else:
        os.chmod(run, 0o555)
    try:
        with pytest.raises(OutputError, match=f"{run}: output folder is not writable"):
            fit(resolve_config("lightweight2020", {**TINY, "epochs": 3}), data["mine"], run, resume=True, verbose=0)
    finally:
        os.chmod(run, 0o755)
