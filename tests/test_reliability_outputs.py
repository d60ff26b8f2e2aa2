"""Outputs under faults (issue #24): one writer per output folder, --overwrite only onto our own artefacts.

Covered: a second writer refused by every command (predict, evaluate, show,
synth, export, fit --resume) while another process holds the folder, and the
claim ending with a kill -9; two cases of one predict never sharing an output;
--overwrite refusing an input scan, a notes file, a text .png and a SavedModel
version folder holding the user's files; synth leaving no partial file on a
full disk (naming the file) and replacing, not merging, its own dataset; a full
disk in a SavedModel export and bad --postprocess values as one line before any
work; an export into an unwritable folder refused before the model loads;
stale `.tmp-*` files of dead writers removed by the next claimer. Runs as root:
permissions are simulated by patching `os.access`; a full disk by a writer
raising ENOSPC.
"""

import errno
import json
import os
import subprocess
import sys
import textwrap

import keras
import nibabel as nib
import numpy as np
import pytest
from cli_checks import deny_writes, invoke, one_line_error, subprocess_env, tree

from bratskeras.core.errors import DataError
from bratskeras.data import layouts
from bratskeras.export import exporter as export
from bratskeras.platform import claims
from bratskeras.predict import inference, model_setup
from bratskeras.synth import phantoms as synth

SHAPE = (16, 16, 16)




@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "brats2021"
    synth.write_dataset(root, cases=2, shape=SHAPE, layout="brats2021", seed=3)
    return root


@pytest.fixture(scope="module")
def predictions(dataset, tmp_path_factory):
    """The reference label maps of `dataset` saved as predictions (<id>.nii.gz): evaluate and show need no model."""
    folder = tmp_path_factory.mktemp("predictions")
    for case in layouts.discover(dataset).cases:
        nib.save(nib.load(case.seg), folder / f"{case.id}.nii.gz")
    return folder


class Holder:
    """Another process holding the claim on a folder (claims.claim_folder) until it is killed."""

    SCRIPT = """
        import sys, time
        from bratskeras.platform import claims
        with claims.claim_folder(sys.argv[1], "predict"):
            print("held", flush=True)
            time.sleep(600)
    """

    def __init__(self, folder):
        self.process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(self.SCRIPT), str(folder)],
                                        env=subprocess_env(log_level="2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.strip() == "held", self.process.stderr.read()

    def kill(self):
        self.process.kill()
        self.process.communicate()


@pytest.fixture()
def held(tmp_path):
    """A folder another process is writing into (its claim held), and that process."""
    folder = tmp_path / "busy"
    holder = Holder(folder)
    yield folder, holder
    if holder.process.poll() is None:
        holder.kill()


# ------------------------------------------------------------------ item 2, 5: one writer per folder


def test_every_writer_is_refused_while_another_process_writes_the_folder(held, tiny_model, dataset, predictions):
    folder, holder = held
    pid = f"pid {holder.process.pid}"
    one_line_error(invoke("predict", tiny_model, dataset, folder), folder, "in use by bratskeras predict", pid)
    one_line_error(invoke("evaluate", predictions, dataset, "--out", folder / "m.csv"), folder, pid)
    one_line_error(invoke("show", predictions, dataset, folder), folder, pid)
    one_line_error(invoke("synth", folder, "--cases", "1", "--shape", "16,16,16"), folder, pid)
    one_line_error(invoke("export", tiny_model, "--format", "keras", "--out", folder / "m.keras"), folder, pid)
    assert os.listdir(folder) == [claims.CLAIM_FILE]  # nothing written by any of them


def test_fit_resume_is_refused_before_config_json_while_the_run_trains(held, dataset):
    from bratskeras.config.train_config import resolve_config

    run, _ = held
    config = resolve_config("lightweight2020", {"model_overrides": {"base_filters": 4}, "epochs": 1,
                                                "steps_per_epoch": 1, "batch_size": 2, "patch_size": (16, 16, 16),
                                                "precision": "float32"})
    (run / "config.json").write_text(config.to_json())
    before = tree(run)
    result = invoke("fit", dataset, "--resume", run, "--quiet")
    one_line_error(result, run, "in use by bratskeras predict")
    assert tree(run) == before


def test_a_killed_writer_leaves_no_claim_behind(held, tiny_model, dataset):
    folder, holder = held
    holder.kill()  # SIGKILL: no clean-up ran, the claim file is still there
    assert claims.CLAIM_FILE in os.listdir(folder)
    with claims.claim_folder(folder, "evaluate"):
        assert json.load(open(folder / claims.CLAIM_FILE))["pid"] == os.getpid()
    assert os.listdir(folder) == []


def test_two_cases_of_one_predict_never_share_an_output(tmp_path):
    with pytest.raises(DataError, match="BraTS2021_00001: two input cases"):
        inference.check_output_folder(tmp_path / "out", ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00001"])


# ------------------------------------------------------------------ item 3: --overwrite only onto our artefacts


def test_evaluate_overwrite_never_replaces_an_input_scan(dataset):
    case = layouts.discover(dataset).cases[0]
    scan = case.modalities["t1"]
    before = open(scan, "rb").read()
    line = one_line_error(invoke("evaluate", dataset, dataset, "--out", scan, "--overwrite"), scan)
    assert "not a metrics CSV" in line
    assert open(scan, "rb").read() == before


def test_predict_overwrite_replaces_its_own_label_map_only(tiny_model, tmp_path):
    data = tmp_path / "data"
    synth.write_dataset(data, cases=1, shape=SHAPE, layout="brats2021", seed=5)
    case = layouts.discover(data).cases[0]
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"{case.id}.nii.gz"
    target.write_text("my notes")
    one_line_error(invoke("predict", tiny_model, data, out, "--overwrite"), target, "not a predicted label map")
    assert target.read_text() == "my notes"
    nib.save(nib.load(case.modalities["flair"]), target)  # an MRI scan (int16 intensities), not a label map
    scan = target.read_bytes()
    one_line_error(invoke("predict", tiny_model, data, out, "--overwrite"), target, "no label")
    assert target.read_bytes() == scan
    target.unlink()
    assert invoke("predict", tiny_model, data, out).exit_code == 0
    replaced = invoke("predict", tiny_model, data, out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sorted(os.listdir(out)) == [target.name]


def test_show_overwrite_never_replaces_a_text_png(dataset, tmp_path):
    case = layouts.discover(dataset).cases[0]
    out = tmp_path / "pngs"
    out.mkdir()
    fake = out / f"{case.id}.png"
    fake.write_text("not an image")
    one_line_error(invoke("show", dataset, dataset, out, "--case", case.id, "--overwrite"), fake, "not a PNG image")
    assert fake.read_text() == "not an image"


def test_artefact_kinds_judge_content(tmp_path):
    label_map = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(np.array([[[0, 1], [2, 4]]] * 2, np.uint8), np.eye(4)), label_map)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2) * 100, np.eye(4)), scan)
    assert inference.LABEL_MAP.recognise(label_map) and not inference.LABEL_MAP.recognise(scan)
    from bratskeras.evaluate.scoring import metrics_csv_kind, rows_to_csv

    csv = tmp_path / "m.csv"
    csv.write_text(rows_to_csv([]))
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    assert metrics_csv_kind().recognise(csv) and not metrics_csv_kind().recognise(notes)


# ------------------------------------------------------------------ item 6: SavedModel version folders


def test_export_saved_model_overwrite_never_deletes_the_users_files(tiny_model, tmp_path):
    version = tmp_path / "sm" / "1"
    (version / "variables").mkdir(parents=True)
    (version / "mydata").mkdir()
    (version / "saved_model.pb").write_bytes(b"an old export")
    (version / "variables" / "variables.index").write_bytes(b"")
    (version / "notes.txt").write_text("my notes")
    (version / "mydata" / "x.csv").write_text("1,2")
    before = tree(version)
    result = invoke("export", tiny_model, "--format", "saved_model", "--out", tmp_path / "sm", "--version", "1",
                     "--overwrite")
    line = one_line_error(result, version, "not a SavedModel folder")
    assert "mydata" in line and "notes.txt" in line
    assert tree(version) == before


# ------------------------------------------------------------------ item 7: synth


def test_synth_full_disk_leaves_no_partial_file_and_names_it(tmp_path, monkeypatch):
    save = nib.save
    calls = []

    def full_disk(image, path):
        calls.append(path)
        if len(calls) == 3:
            open(path, "wb").write(b"\x1f\x8b truncated")
            raise OSError(errno.ENOSPC, "No space left on device")
        save(image, path)

    monkeypatch.setattr(nib, "save", full_disk)
    out = tmp_path / "synth"
    line = one_line_error(invoke("synth", out, "--layout", "brats2021", "--cases", "2", "--shape", "16,16,16"),
                           "No space left on device")
    assert f"{out}{os.sep}BraTS2021_00000{os.sep}" in line and ".tmp-" not in line
    assert os.listdir(tmp_path) == []  # no partial file, and not the folder the failed synth created


def test_synth_overwrite_replaces_its_dataset_whole(tmp_path):
    out = tmp_path / "synth"
    for _ in range(2):
        assert invoke("synth", out, "--cases", "2", "--shape", "16,16,16", "--overwrite").exit_code == 0
    parent = out / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    assert len((parent / "name_mapping.csv").read_text().splitlines()) == 3  # header + 2, not duplicated
    assert invoke("synth", out, "--layout", "brats2021", "--cases", "1", "--shape", "16,16,16",
                   "--overwrite").exit_code == 0
    assert sorted(p for p in os.listdir(out) if not p.startswith(".")) == ["BraTS2021_00000"]
    (out / "BraTS2021_00000" / "my_notes.txt").write_text("mine")
    one_line_error(invoke("synth", out, "--cases", "1", "--shape", "16,16,16", "--overwrite"),
                    out, "my_notes.txt")
    assert (out / "BraTS2021_00000" / "my_notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ item 12, 13: one line, before any work


def test_full_disk_during_saved_model_export_is_one_line_naming_the_target(tiny_model, tmp_path, monkeypatch):
    import tensorflow as tf

    def full_disk(archive, path, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables: No space left on device")

    # ExportArchive() makes the backend's subclass, whose write_out tf.saved_model.save runs in.
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", full_disk)
    base = tmp_path / "sm"
    line = one_line_error(invoke("export", tiny_model, "--format", "saved_model", "--out", base, "--version", "1"),
                           base / "1", "No space left on device")
    assert ".tmp-" not in line
    assert not base.exists()  # nothing partial, not even the base folder the failed export created


@pytest.mark.parametrize("step, message", [
    ("min_component:voxels=abc", "voxels must be a non-negative integer"),
    ("average_pool:size=0", "size must be a positive integer"),
])
def test_bad_postprocess_values_are_refused_before_the_model_loads(step, message, tiny_model, dataset, tmp_path,
                                                                   monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was loaded for a --postprocess that cannot run")

    monkeypatch.setattr(model_setup, "load_predictor", must_not_run)
    one_line_error(invoke("predict", tiny_model, dataset, tmp_path / "out", "--postprocess", step), step, message)
    assert not (tmp_path / "out").exists()


def test_export_into_an_unwritable_folder_is_refused_before_the_model_loads(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "exports"
    out.mkdir()
    deny_writes(monkeypatch, out)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was loaded for an export that cannot be written")

    monkeypatch.setattr(export, "load_model", must_not_run)
    one_line_error(invoke("export", tiny_model, "--format", "tflite", "--out", out / "m.tflite"), out,
                    "not writable")


# ------------------------------------------------------------------ item 15: leftovers of killed writers


def test_the_next_writer_removes_temporaries_of_dead_writers_only(dataset, predictions, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "metrics"
    out.mkdir()
    stale = out / f".tmp-{dead.pid}-0123abcd-m.csv"
    stale.write_text("half a CSV")
    stale_folder = out / f".tmp-{dead.pid}-89abcdef-sm"
    stale_folder.mkdir()
    live = out / f".tmp-{os.getppid()}-0123abcd-m.csv"  # a process that runs: a write in progress
    live.write_text("being written")
    mine = out / ".tmp-notes"
    mine.write_text("a user's file that merely looks alike")
    result = invoke("evaluate", predictions, dataset, "--out", out / "m.csv", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == sorted([live.name, mine.name, "m.csv", "summary.json"])


def test_a_killed_synths_staging_folder_is_removed_by_the_next_synth(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "synth"
    staging = tmp_path / f".tmp-{dead.pid}-0123abcd-synth"  # what a kill -9 during synth leaves beside OUT_DIR
    (staging / "BraTS2021_00000").mkdir(parents=True)
    other = tmp_path / f".tmp-{dead.pid}-0123abcd-another"  # another output's: not synth's to remove
    other.mkdir()
    assert invoke("synth", out, "--layout", "brats2021", "--cases", "1", "--shape", "16,16,16").exit_code == 0
    assert sorted(os.listdir(tmp_path)) == sorted([other.name, "synth"])
