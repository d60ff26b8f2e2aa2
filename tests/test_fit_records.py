"""Issue #25 item 1: what `fit` prints before training and what the run folder records, and where the cache goes.

One tiny 2-epoch run through the CLI (module fixture, its output captured) with a patch longer than the
volumes along D; one resume of it laid out as the demo's (its data under RUN/demo_data, held-out cases
scored) with --cache-dir. The other tests need no training.
"""

import csv
import json
import os
import sys

import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.cli.train import fit_command
from bratskeras.core import run_folder
from bratskeras.data import cache
from bratskeras.synth import phantoms as synth
from bratskeras.training import plan
from bratskeras.training.config import resolve_config

# What's new is imported inside the tests, so each one fails on its own against code without it.
CACHE_ENV = "BRATSKERAS_CACHE"

SHAPE = (24, 24, 16)
# D 32 > 24: every volume is padded along D.
ARGS = ["--model-arg", "base_filters=4", "--epochs", "2", "--steps-per-epoch", "1", "--batch-size", "2",
        "--patch-size", "32,16,16", "--learning-rate", "0.002", "--precision", "float32"]


def _files(folder):
    return sorted(os.path.relpath(os.path.join(parent, name), folder)
                  for parent, _, names in os.walk(folder) for name in names)


def _json(run_dir, name):
    with open(os.path.join(run_dir, name), encoding="utf-8") as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data folder, its files before the run, run folder, the cache root, CLI result) of one tiny CLI run."""
    root = tmp_path_factory.mktemp("records")
    data = str(root / "brats2021")
    synth.write_dataset(data, cases=5, shape=SHAPE, layout="brats2021", seed=3)
    before = _files(data)
    run_dir, cache_root = str(root / "run"), str(root / "user-cache")
    argv = ["bratskeras", "fit", data, "--out", run_dir, *ARGS]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, cache_root)
        patch.setattr(sys, "argv", argv)
        result = CliRunner().invoke(cli, argv[1:])
    assert result.exit_code == 0, result.output
    return data, before, run_dir, cache_root, result


def _cache_folder(data, cache_root):
    """The cache folder of dataset `data` under `cache_root` (as the run's environment had it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, cache_root)
        folder = cache.cache_dir_for(data)
    assert os.path.dirname(folder) == cache_root
    return folder


def test_fit_prints_a_header_before_training(trained):
    data, _, run_dir, cache_root, result = trained
    lines = result.output.splitlines()
    header = lines[:lines.index("Epoch 1/2")]
    expected = [
        f"run folder: {run_dir}",
        f"data: {os.path.abspath(data)} (5 labelled cases found)",
        f"cache: {_cache_folder(data, cache_root)}",
        "split: 4 training, 1 validation cases (80/20 split, split seed 42)",
        "preprocessing/caching 5 cases (cases already cached are reused)",
        "precision: float32 (as configured)",
        "training epochs 1-2 of 2: 1 step of 2 patches per epoch",
    ]
    for line in expected:
        assert line in header, (line, header)
    assert [line for line in header if line.startswith("  cached ")] == [f"  cached {n}/5" for n in range(1, 6)]
    assert any(line.startswith("patch 32x16x16 on volumes of median size ") for line in header), header
    model = [line for line in header if line.startswith("model: lightweight-unet, ")]
    assert model and model[0].endswith(" parameters"), header
    assert "preset lightweight2020, changed: " in result.output and "learning_rate 0.0005 -> 0.002" in result.output
    # One line per epoch when stdout is not a terminal (verbose=2): no progress bar's carriage returns.
    assert "\r" not in result.output


def test_a_patch_longer_than_the_volumes_is_announced_as_padded(trained):
    *_, result = trained
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.output
    assert "patch 32x16x16 is larger than the preprocessed volumes along D" in warnings[0]
    assert "zero-padded" in warnings[0] and "--patch-size 16,16," in warnings[0]


def test_the_cache_goes_to_the_users_cache_folder_never_into_the_data(trained):
    data, before, _, cache_root, _ = trained
    assert _files(data) == before  # neither .bratskeras_cache nor anything else was written into DATA_DIR
    folder = _cache_folder(data, cache_root)
    assert os.path.basename(folder).startswith("brats2021-")
    assert len([entry for entry in os.listdir(folder) if entry.startswith("BraTS2021_")]) == 5


def test_the_default_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == str(tmp_path / "xdg" / "bratskeras")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == str(tmp_path / "home" / ".cache" / "bratskeras")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache.cache_root() == str(tmp_path / "mine")
    # One folder per dataset: two datasets of the same name never share one; a given folder is used as is.
    assert cache.cache_dir_for(tmp_path / "a" / "data") != cache.cache_dir_for(tmp_path / "b" / "data")
    assert cache.cache_dir_for(tmp_path / "a" / "data", tmp_path / "given") == str(tmp_path / "given")


def test_the_run_records_its_split_environment_and_preset_changes(trained):
    *_, run_dir, _, result = trained
    splits = _json(run_dir, "splits.json")
    assert len(splits["train"]) == 4 and len(splits["validation"]) == 1
    assert sorted(splits["train"] + splits["validation"]) == [f"BraTS2021_{n:05d}" for n in range(5)]
    assert (splits["fold"], splits["folds"], splits["seed"]) == (None, None, 42)
    environment = _json(run_dir, "environment.json")
    assert set(environment["versions"]) == {"bratskeras", "keras", "tensorflow", "numpy", "python"}
    assert environment["command"][:2] == ["bratskeras", "fit"] and "--out" in environment["command"]
    assert environment["isa_class"] and environment["earlier"] == [] and environment["resume"] is False
    changes = _json(run_dir, "preset_changes.json")
    assert changes["preset"] == "lightweight2020"
    assert changes["changed_from_preset"]["learning_rate"] == {"preset": 5e-4, "run": 2e-3}
    assert changes["changed_from_preset"]["patch_size"] == {"preset": [128, 128, 128], "run": [32, 16, 16]}
    assert "optimizer" not in changes["changed_from_preset"]


def test_results_json_holds_the_best_and_final_validation_dice(trained):
    *_, run_dir, _, result = trained
    results = _json(run_dir, "results.json")
    with open(os.path.join(run_dir, "history.csv"), newline="") as stream:
        rows = list(csv.DictReader(stream))
    best = max(rows, key=lambda row: float(row["val_dice_wt"]))
    assert results["best"]["epoch"] == int(best["epoch"]) and results["final"]["epoch"] == 2
    assert results["best"]["dice"]["WT"] == pytest.approx(float(best["val_dice_wt"]))
    assert set(results["validation"]["dice"]) == {"WT", "TC", "ET"} and results["validation"]["cases"] == 1
    shown = f"WT {results['validation']['dice']['WT']:.2f}"
    assert f"validation Dice: {shown}" in result.output
    assert results["epochs"] == 2 and results["time_limit_reached"] is False and "heldout" not in results


def test_history_records_each_epochs_seconds(trained):
    *_, run_dir, _, _ = trained
    with open(os.path.join(run_dir, "history.csv"), newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(float(row["epoch_seconds"]) > 0 for row in rows)


def test_a_demo_run_resumed_with_cache_dir_records_its_heldout_dice_and_the_size_of_its_data(trained, tmp_path):
    """A run laid out as the demo's (RUN/demo_data/train and heldout) resumes without DATA_DIR."""
    import shutil

    data, _, trained_dir, _, _ = trained
    run_dir = str(tmp_path / "demo-run")
    shutil.copytree(trained_dir, run_dir)
    for part in ("train", "heldout"):
        shutil.copytree(data, os.path.join(run_dir, run_folder.DEMO_DATA_DIR, part))
    given = tmp_path / "given-cache"
    argv = ["bratskeras", "fit", "--resume", run_dir, "--epochs", "3", "--cache-dir", str(given)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        result = CliRunner().invoke(cli, argv[1:])
    assert result.exit_code == 0, result.output
    assert f"resuming: {run_dir}" in result.output and f"cache: {given}" in result.output
    # Training and held-out cases cached in the folder given, as given (no per-dataset sub-folder).
    assert len([e for e in os.listdir(given) if e.startswith("BraTS2021_")]) == 10
    assert not os.path.exists(os.path.join(run_dir, run_folder.DEMO_DATA_DIR, run_folder.DEMO_CACHE_DIR))
    results = _json(run_dir, "results.json")
    assert results["epochs"] == 3 and set(results["heldout"]["dice"]) == {"WT", "TC", "ET"}
    assert results["heldout"]["data_dir"] == os.path.join(run_dir, run_folder.DEMO_DATA_DIR, "heldout")
    assert f"held-out Dice: WT {results['heldout']['dice']['WT']:.2f}" in result.output
    environment = _json(run_dir, "environment.json")
    assert environment["resume"] is True and environment["command"] == argv
    assert [earlier["command"][:2] for earlier in environment["earlier"]] == [["bratskeras", "fit"]]
    note = [line for line in result.output.splitlines() if line.startswith("demo data: ")]
    assert len(note) == 1 and os.path.join(run_dir, run_folder.DEMO_DATA_DIR) in note[0]
    assert " MB of generated phantoms" in note[0] and "delete it" in note[0] and "fit --resume" in note[0]


def test_the_demo_keeps_its_cache_inside_its_demo_data(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / run_folder.DEMO_DATA_DIR / "train").mkdir(parents=True)
    (run_dir / "config.json").write_text(resolve_config().to_json())
    resumed = plan.plan_resume(str(run_dir), None, None, {})
    assert resumed.cache_dir == str(run_dir / run_folder.DEMO_DATA_DIR / run_folder.DEMO_CACHE_DIR)


def test_keras_shows_a_progress_bar_on_a_terminal_only_and_quiet_says_what_it_does():
    from bratskeras.cli.train import keras_verbosity

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    assert (keras_verbosity(False, Stream(True)), keras_verbosity(False, Stream(False))) == (1, 2)
    assert keras_verbosity(True, Stream(True)) == 0
    quiet = next(option for option in fit_command.params if option.name == "quiet")
    assert "No progress bars" not in quiet.help and "warnings and the final summary" in quiet.help


def test_preset_changes_list_exactly_the_fields_that_differ():
    from bratskeras.training import records

    config = resolve_config("lightweight2020", {"epochs": 7, "patch_size": (64, 64, 64)})
    assert records.preset_changes(config) == {"epochs": {"preset": 100, "run": 7},
                                              "patch_size": {"preset": [128] * 3, "run": [64] * 3}}
    assert records.preset_changes(resolve_config("flair2017")) == {}
