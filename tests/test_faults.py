"""Fault injection: what a hostile but realistic user, a full disk or a kill -9 does to each command.

Covered: --overwrite and --out never deleting or merging into what a command
did not write (export, fit, predict, evaluate), artefacts replaced only after
their check, symlinked / unreadable / duplicate input folders reported by
name, prediction without labels, outputs checked for writability before any
work, a full disk (a patched writer raising ENOSPC), kill -9 during a
checkpoint write, an export, a prediction and a cache build, concurrent
`fit --out` claims, and every user error ending in one line on stderr
(`--debug` for the traceback). Runs as root too: permissions are simulated by
patching `os.access` / `os.scandir`, which root would bypass.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import nibabel as nib
import numpy as np
import pytest
from cli_checks import deny_writes, invoke, one_line_error, subprocess_env, tree
from side_by_side import finish_all

from bratskeras.core.errors import DataError, OutputExistsError
from bratskeras.data import inspection, layouts, volumes
from bratskeras.evaluate import scoring as evaluation
from bratskeras.predict import inference, model_setup
from bratskeras.synth import phantoms as synth
from bratskeras.training import run_dir as run_files

SHAPE = (16, 16, 16)
LIGHT_INPUT = "16,16,16,4"
TINY_FIT = ["--model-arg", "base_filters=4", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--patch-size", "16,16,16", "--precision", "float32", "--quiet"]






@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "brats2021"
    synth.write_dataset(root, cases=4, shape=SHAPE, layout="brats2021", seed=3)
    return root


def _spawn(script, *args):
    """A Python process running `script` (with bratskeras importable), stdout/stderr to files."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=subprocess_env(log_level="2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(process, flag, timeout=180):
    """SIGKILLs `process` once it has created the file `flag`."""
    deadline = time.time() + timeout
    while not os.path.exists(flag):
        if process.poll() is not None:
            pytest.fail(f"the process ended before the fault point: {process.stderr.read()[-2000:]}")
        if time.time() > deadline:
            process.kill()
            pytest.fail("the process did not reach the fault point")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


# ------------------------------------------------------------------ export (items 1, 2)


def test_export_overwrite_never_deletes_a_folder_it_did_not_write(tiny_model, tmp_path):
    other_run = tmp_path / "other_run"
    (other_run / "state").mkdir(parents=True)
    (other_run / "best.keras").write_bytes(b"PK weights")
    (other_run / "notes.txt").write_text("my notes")
    before = tree(other_run)
    result = invoke("export", tiny_model, "--format", "tflite", "--input-shape", LIGHT_INPUT,
                     "--out", other_run, "--overwrite")
    one_line_error(result, other_run, "not a LiteRT model")
    assert tree(other_run) == before


def test_export_overwrite_never_replaces_a_file_of_another_kind(tiny_model, tmp_path):
    notes = tmp_path / "notes.tflite"
    notes.write_text("not a model, a user's file")
    result = invoke("export", tiny_model, "--format", "tflite", "--input-shape", LIGHT_INPUT,
                     "--out", notes, "--overwrite")
    one_line_error(result, notes)
    assert notes.read_text() == "not a model, a user's file"


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_export_overwrite_keeps_the_old_artefact_when_the_new_one_fails(tiny_model, tmp_path):
    target = tmp_path / "m.tflite"
    assert invoke("export", tiny_model, "--format", "tflite", "--input-shape", LIGHT_INPUT,
                   "--out", target).exit_code == 0
    good = target.read_bytes()
    result = invoke("export", tiny_model, "--format", "tflite", "--input-shape", LIGHT_INPUT, "--out", target,
                     "--overwrite", "--quantize", "float16", "--tolerance", "0")
    one_line_error(result, target, "failed its check", "existing one is kept")
    assert target.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]
    replaced = invoke("export", tiny_model, "--format", "tflite", "--input-shape", LIGHT_INPUT,
                       "--out", target, "--overwrite", "--quantize", "float16")
    assert replaced.exit_code == 0, replaced.output
    assert target.read_bytes() != good and sorted(os.listdir(tmp_path)) == ["m.tflite"]


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_saved_model_version_is_swapped_only_after_its_check(tiny_model, tmp_path, monkeypatch):
    from bratskeras.predict import runtimes

    base = tmp_path / "sm"
    assert invoke("export", tiny_model, "--format", "saved_model", "--out", base, "--version", "1").exit_code == 0
    before = tree(base / "1")
    with monkeypatch.context() as patched:  # a SavedModel that computes something else
        patched.setattr(runtimes.SavedModelPredictor, "__call__", lambda self, batch: np.zeros_like(batch[..., :4]))
        failed = invoke("export", tiny_model, "--format", "saved_model", "--out", base, "--version", "1",
                         "--overwrite")
    one_line_error(failed, base / "1", "existing one is kept")
    assert tree(base / "1") == before
    replaced = invoke("export", tiny_model, "--format", "saved_model", "--out", base, "--version", "1",
                       "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (base / "1" / "saved_model.pb").is_file() and sorted(os.listdir(base)) == ["1"]
    (base / "2").mkdir()
    (base / "2" / "readme.txt").write_text("not a SavedModel")
    foreign = invoke("export", tiny_model, "--format", "saved_model", "--out", base, "--version", "2",
                      "--overwrite")
    one_line_error(foreign, base / "2", "not a SavedModel folder")
    assert (base / "2" / "readme.txt").read_text() == "not a SavedModel"
    assert sorted(os.listdir(base)) == ["1", "2"]


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_kill_during_export_leaves_the_old_artefact(tiny_model, tmp_path):
    target = tmp_path / "m.tflite"
    old = b"\0\0\0\0TFL3 an older export"
    target.write_bytes(old)
    flag = tmp_path / "checking"
    process = _spawn("""
        import sys, time
        from bratskeras.export import exporter as export
        from bratskeras.cli import main
        def hang(*args, **kwargs):
            open(sys.argv[1], "w").close()
            time.sleep(300)
        export.verify = hang
        main(["export", sys.argv[2], "--format", "tflite", "--input-shape", "16,16,16,4",
              "--out", sys.argv[3], "--overwrite"])
    """, flag, tiny_model, target)
    _kill_when(process, flag)
    assert target.read_bytes() == old


# ------------------------------------------------------------------ discovery (item 3)


def _symlinked_dataset(tmp_path):
    store, data = tmp_path / "store", tmp_path / "data"
    synth.write_dataset(store, cases=3, shape=SHAPE, layout="brats2021", seed=1)
    data.mkdir()
    folders = sorted(p for p in store.iterdir() if p.is_dir())
    folders[0].rename(data / folders[0].name)
    for folder in folders[1:]:
        (data / folder.name).symlink_to(folder, target_is_directory=True)
    return data, [f.name for f in folders]


def test_symlinked_case_folders_are_found(tmp_path):
    data, ids = _symlinked_dataset(tmp_path)
    (data / "loop").symlink_to(data, target_is_directory=True)  # a link back to the root must not loop
    dataset = layouts.discover(data)
    assert [c.id for c in dataset.cases] == ids
    assert len(dataset.skipped) == 1 and "loop" in dataset.skipped[0]
    result = invoke("inspect", data)
    assert "3 case(s)" in result.output


@pytest.fixture()
def unreadable(monkeypatch):
    """Makes os.scandir refuse the folders added to the returned set, as for a user without permission."""
    refused = set()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.abspath(os.fspath(path)) in refused:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return refused


def test_unreadable_case_folder_is_reported_by_every_command(tmp_path, unreadable, tiny_model):
    data = tmp_path / "data"
    synth.write_dataset(data, cases=3, shape=SHAPE, layout="brats2021", seed=2)
    hidden = sorted(p for p in data.iterdir() if p.is_dir())[1]
    unreadable.add(str(hidden))
    dataset = layouts.discover(data)
    assert len(dataset.cases) == 2
    assert dataset.skipped and str(hidden) in dataset.skipped[0] and "Permission denied" in dataset.skipped[0]

    result = invoke("inspect", data)
    assert result.exit_code == 1 and str(hidden) in result.output and "1 problem(s)" in result.output
    _, report = inspection.inspect_dataset(data)
    with pytest.raises(DataError, match="folder"):
        inspection.require_clean(dataset, report)
    cases, skipped = inspection.require_clean(dataset, report, skip_bad=True)
    assert len(cases) == 2 and str(hidden) in skipped[0]

    predicted = invoke("predict", tiny_model, data, tmp_path / "out")
    assert predicted.exit_code == 1 and str(hidden) in predicted.output
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 2

    scored = evaluation.evaluate(tmp_path / "out", data)
    assert not scored.ok and any(str(hidden) in line for line in scored.failed)


# ------------------------------------------------------------------ fit (items 4, 6, 9)


def test_fit_never_writes_into_a_folder_that_is_not_a_run(dataset, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "history.csv").write_text("my own history\n")
    result = invoke("fit", dataset, "--out", folder, *TINY_FIT)
    one_line_error(result, folder, "not a bratskeras run")
    assert tree(folder) == {"history.csv": b"my own history\n"}


def test_library_fit_refuses_a_folder_that_is_not_a_run(dataset, tmp_path):
    from bratskeras.config.train_config import resolve_config
    from bratskeras.training.fit import fit

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "history.csv").write_text("my own history\n")
    config = resolve_config("lightweight2020", {"model_overrides": {"base_filters": 4}, "epochs": 1,
                                                "steps_per_epoch": 1, "batch_size": 2, "patch_size": (16, 16, 16),
                                                "crop": "none", "precision": "float32"})
    with pytest.raises(OutputExistsError, match="not a bratskeras run"):
        fit(config, str(dataset), str(folder), verbose=0)
    assert tree(folder) == {"history.csv": b"my own history\n"}


def test_only_one_of_two_concurrent_claims_wins(tmp_path):
    script = """
        import sys
        from bratskeras.core.errors import OutputExistsError
        from bratskeras.training.run_dir import claim_run_dir
        try:
            claim_run_dir(sys.argv[1])
            print("claimed")
        except OutputExistsError:
            print("refused")
    """
    for attempt in range(3):
        target = tmp_path / f"run{attempt}"
        processes = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(target)],
                                      env=subprocess_env(log_level="2"), stdout=subprocess.PIPE, text=True) for _ in range(4)]
        answers = sorted(p.communicate(timeout=60)[0].strip() for p in processes)
        assert answers == ["claimed", "refused", "refused", "refused"], answers


def test_a_claim_by_another_process_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "run"
    monkeypatch.setattr(run_files, "_PROCESS_TOKEN", "first")
    run_files.claim_run_dir(target)
    run_files.claim_run_dir(target)  # the same process again: nothing happens
    monkeypatch.setattr(run_files, "_PROCESS_TOKEN", "second")
    with pytest.raises(OutputExistsError, match="another bratskeras fit"):
        run_files.claim_run_dir(target)


@pytest.mark.skipif(bool(__import__("tensorflow").config.list_physical_devices("GPU")),
                    reason="mixed_float16 is allowed on a GPU")
def test_mixed_float16_on_a_cpu_is_refused_before_anything_is_written(dataset, tmp_path):
    run = tmp_path / "run"
    args = [a for a in TINY_FIT if a not in ("--precision", "float32")]
    result = invoke("fit", dataset, "--out", run, *args, "--precision", "mixed_float16")
    one_line_error(result, "mixed_float16 needs a GPU")
    assert not run.exists()
    assert invoke("fit", dataset, "--out", run, *TINY_FIT).exit_code == 0


def test_disk_full_during_fit_is_one_line_and_leaves_no_partial_file(dataset, tmp_path, monkeypatch):
    import tensorflow as tf

    def full_disk(manager, checkpoint_number):
        # As TensorFlow's writer fails: a partial shard in its temp folder, then its own error class.
        partial = os.path.join(manager.directory, f"epoch-{checkpoint_number}_temp")
        os.makedirs(partial)
        with open(os.path.join(partial, "part-00000-of-00001.data-00000-of-00001"), "wb") as stream:
            stream.write(b"partial")
        raise tf.errors.ResourceExhaustedError(None, None, f"{partial}/part; No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
    run = tmp_path / "run"
    result = invoke("fit", dataset, "--out", run, *TINY_FIT)
    one_line_error(result, os.path.join(run, "state", "epoch-1"), "No space left on device")
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".tmp")]
    assert leftovers == []
    assert [p.name for p in (run / "state").iterdir() if p.name.startswith("epoch-1")] == []


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_kill_during_checkpoint_write_leaves_complete_files_and_resumes(dataset, tmp_path):
    run = tmp_path / "run"
    flag = tmp_path / "saving"
    process = _spawn("""
        import sys, time
        import keras
        from bratskeras.cli import main
        save = keras.Model.save
        def save_then_hang(self, path, *args, **kwargs):  # killed after writing, before the rename
            save(self, path, *args, **kwargs)
            open(sys.argv[1], "w").close()
            time.sleep(300)
        keras.Model.save = save_then_hang
        main(sys.argv[2:])
    """, flag, "fit", dataset, "--out", run, *TINY_FIT)
    _kill_when(process, flag)
    assert (run / "config.json").exists()
    assert [p.name for p in run.rglob("*.keras") if not p.name.startswith(".")] == []
    assert [p.name for p in run.rglob(".tmp-*.keras")], "the write was not under a temporary name"
    resumed = invoke("fit", dataset, "--resume", run, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    with open(run / "best.keras", "rb") as stream:
        assert stream.read(2) == b"PK"


# ------------------------------------------------------------------ predict (items 5, 6, 7)


def test_predict_never_reads_labels(tmp_path, tiny_model):
    data = tmp_path / "data"
    synth.write_dataset(data, cases=1, shape=SHAPE, layout="brats2020", seed=4)
    case = layouts.discover(data).cases[0]
    seg = nib.load(case.seg)
    labels = np.asarray(seg.dataobj).copy()
    labels[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(labels, seg.affine, seg.header), case.seg)
    result = invoke("predict", tiny_model, data, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / f"{case.id}.nii.gz").exists()


def test_predict_into_a_folder_that_cannot_be_created_is_one_line(tmp_path, tiny_model, dataset):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = invoke("predict", tiny_model, dataset, blocker / "out")
    one_line_error(result, blocker / "out", "cannot create")


def test_predict_into_an_unwritable_folder_stops_before_any_work(tmp_path, tiny_model, dataset, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    deny_writes(monkeypatch, out)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was loaded for an output that cannot be written")

    monkeypatch.setattr(model_setup, "load_predictor", must_not_run)
    result = invoke("predict", tiny_model, dataset, out)
    one_line_error(result, out, "not writable")
    from bratskeras.core.errors import OutputError

    with pytest.raises(OutputError, match="not writable"):
        inference.predict_dataset(None, None, layouts.discover(dataset).cases, out)


def test_a_failed_write_names_the_output_not_its_temporary_name(tmp_path, tiny_model, dataset, monkeypatch):
    def full_disk(label_map, properties, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(volumes, "write_label_map", full_disk)
    case = layouts.discover(dataset).cases[0]
    network, setup = model_setup.load_predictor(tiny_model)
    (result,) = inference.predict_dataset(network, setup, [case], tmp_path / "out")
    assert str(tmp_path / "out" / f"{case.id}.nii.gz") in result.error
    assert ".tmp-" not in result.error and "No space left" in result.error
    assert not os.path.exists(tmp_path / "out")  # nothing written: not even the folder predict's claim made


def test_predict_refusal_names_the_flag(tmp_path, tiny_model, dataset):
    out = tmp_path / "out"
    assert invoke("predict", tiny_model, dataset, out).exit_code == 0
    one_line_error(invoke("predict", tiny_model, dataset, out), "pass --overwrite")


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_kill_during_predict_leaves_no_partial_output(tmp_path, tiny_model):
    data = tmp_path / "data"
    synth.write_dataset(data, cases=1, shape=SHAPE, layout="brats2021", seed=6)
    out, flag = tmp_path / "out", tmp_path / "writing"
    process = _spawn("""
        import sys, time
        from bratskeras.data import volumes
        from bratskeras.cli import main
        write = volumes.write_label_map
        def write_then_hang(label_map, properties, path):
            write(label_map, properties, path)
            open(sys.argv[1], "w").close()
            time.sleep(300)
        volumes.write_label_map = write_then_hang
        main(sys.argv[2:])
    """, flag, "predict", tiny_model, data, out)
    _kill_when(process, flag)
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []  # only a hidden temporary file
    assert invoke("predict", tiny_model, data, out).exit_code == 0
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == [f"{layouts.discover(data).cases[0].id}.nii.gz"]


def test_kill_during_cache_build_never_serves_a_partial_entry(tmp_path):
    from bratskeras.data import cache

    data, store = tmp_path / "data", tmp_path / "cache"
    synth.write_dataset(data, cases=1, shape=SHAPE, layout="brats2021", seed=7)
    flag = tmp_path / "caching"
    process = _spawn("""
        import sys, time
        from bratskeras.data import cache
        from bratskeras.data import layouts
        def hang(seg, key):
            open(sys.argv[1], "w").close()
            time.sleep(300)
        cache._foreground_coords = hang
        cache.cache_case(layouts.discover(sys.argv[2]).cases[0], sys.argv[3])
    """, flag, data, store)
    _kill_when(process, flag)
    assert not [p for p in store.iterdir() if not p.name.startswith(".")]
    entry = cache.cache_case(layouts.discover(data).cases[0], store)
    image, seg, _ = entry.load()
    assert image.shape[:3] == seg.shape and np.isfinite(image).all()


# ------------------------------------------------------------------ evaluate (item 8)


def test_unreadable_prediction_is_scored_as_empty_not_dropped(tmp_path):
    synth.write_dataset(tmp_path / "ref", cases=2, shape=SHAPE, layout="brats2021", seed=8)
    cases = layouts.discover(tmp_path / "ref").cases
    (tmp_path / "pred").mkdir()
    for case in cases:
        image = nib.load(case.seg)
        nib.save(image, tmp_path / "pred" / f"{case.id}.nii.gz")
    wrong = tmp_path / "pred" / f"{cases[1].id}.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), wrong)
    result = evaluation.evaluate(tmp_path / "pred", tmp_path / "ref")
    assert not result.ok and str(wrong) in result.failed[0]
    assert [row["status"] for row in result.rows] == ["ok", "unreadable"]
    assert result.rows[1]["dice_wt"] == 0.0
    assert result.summary["dice_wt"]["n"] == 2 and result.summary["dice_wt"]["mean"] == 0.5


def test_evaluate_out_into_a_missing_parent_file_is_one_line(tmp_path, dataset):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = invoke("evaluate", dataset, dataset, "--out", blocker / "m.csv")
    one_line_error(result, blocker)


# ------------------------------------------------------------------ messages (items 6, 10)


def test_debug_flag_shows_the_traceback_on_demand(tmp_path):
    missing = tmp_path / "absent.keras"
    plain = invoke("export", missing, "--format", "keras", "--out", tmp_path / "x.keras")
    one_line_error(plain, missing)
    debug = invoke("--debug", "export", missing, "--format", "keras", "--out", tmp_path / "x.keras")
    assert debug.exit_code != 0 and type(debug.exception).__name__ == "ModelError"


def test_os_errors_become_one_line_naming_the_file(monkeypatch, tmp_path):
    from bratskeras.core.errors import user_message
    from bratskeras.platform import outputs

    assert user_message(PermissionError(errno.EACCES, "Permission denied", "/x/y.nii.gz")) == \
        "/x/y.nii.gz: Permission denied"
    with pytest.raises(OSError) as caught:
        with outputs.atomic_path(tmp_path / "target.txt") as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", tmp)
    assert caught.value.filename == str(tmp_path / "target.txt")
    assert os.listdir(tmp_path) == []


def test_garbage_and_lambda_models_are_explained(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(os.urandom(2000))
    line = one_line_error(invoke("export", garbage, "--format", "keras", "--out", tmp_path / "x.keras"), garbage)
    assert "not a .keras model file" in line and "File not found" not in line

    inputs = keras.Input((None, None, None, 4))
    lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    lambda_model.save(path)
    line = one_line_error(invoke("export", path, "--format", "keras", "--out", tmp_path / "y.keras"), path)
    # Keras' whole sentence, not the first 200 characters of it.
    assert line.rstrip(")").rstrip().endswith(".") and "safe_mode" in line


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_evaluate_and_predict_print_no_tensorflow_start_up_lines(tmp_path, tiny_model, dataset):
    # evaluate scores the reference labels saved as predictions, so that it need not wait for predict:
    # the two commands (each mostly a TensorFlow import, ~7 s of one core) run side by side.
    labels = tmp_path / "labels"
    labels.mkdir()
    for case in layouts.discover(dataset).cases:
        nib.save(nib.load(case.seg), labels / f"{case.id}.nii.gz")
    commands = [["predict", tiny_model, dataset, tmp_path / "out"], ["evaluate", labels, dataset]]
    started = [subprocess.Popen([sys.executable, "-m", "bratskeras.cli", *map(str, command)], env=subprocess_env(log_level="2"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for command in commands]
    predicted, scored = finish_all(dict(enumerate(started))).values()
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == len(layouts.discover(dataset).cases)
    for result in (predicted, scored):
        assert result.returncode == 0, result.stderr[-2000:]
        for noise in ("cuInit", "absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard"):
            assert noise not in result.stderr, result.stderr


def test_synth_overwrite_writes_only_into_its_own_folder(tmp_path):
    real = tmp_path / "real"
    (real / "BraTS2021_00000").mkdir(parents=True)
    (real / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz").write_bytes(b"a real scan")
    before = tree(real)
    result = invoke("synth", real, "--layout", "brats2021", "--cases", "1", "--shape", "16,16,16", "--overwrite")
    one_line_error(result, real, "not written by bratskeras synth")
    assert tree(real) == before
    mine = tmp_path / "mine"
    for seed in ("0", "1"):
        assert invoke("synth", mine, "--cases", "1", "--shape", "16,16,16", "--seed", seed,
                       "--overwrite").exit_code == 0


def test_fit_out_that_cannot_be_created_is_refused_before_any_work(dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    one_line_error(invoke("fit", dataset, "--out", blocker / "run", *TINY_FIT), blocker / "run", "cannot create")
