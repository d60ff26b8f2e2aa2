"""Training: configuration, run directory, resume after SIGKILL, determinism,
distribution strategies, precision policies and bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import nibabel as nib
import numpy as np
import pytest
from cli_checks import subprocess_env
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.config.train_config import PRESETS, TrainConfig, resolve_config
from bratskeras.core import run_folder
from bratskeras.core.errors import ConfigError, DataError, OutputExistsError
from bratskeras.data.augment import AUGMENTATION_SETS
from bratskeras.synth import phantoms as synth
from bratskeras.training import resume_state
from bratskeras.training.fit import fit

SHAPE = (24, 24, 16)
TINY = {
    "model_overrides": {"base_filters": 4},
    "epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "patch_size": (16, 16, 16),
    "crop": "none",
    "precision": "float32",
    "checkpoint_every": 1,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "brats2021"
    synth.write_dataset(root, cases=5, shape=SHAPE, layout="brats2021", seed=3)
    return str(root)


def tiny_config(**changes):
    return resolve_config("lightweight2020", {**TINY, **changes})


def history_rows(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as stream:
        return list(csv.DictReader(stream))


def state_weights(run_dir):
    """The network's variables in the run's newest resume state, in the order of their names."""
    saved = resume_state.saved_variables(resume_state.latest_state(run_dir))
    return [saved[name] for name in sorted(saved) if name.startswith("model/")]


# ---------------------------------------------------------------- configuration


def test_presets_reproduce_the_papers():
    light = resolve_config("lightweight2020")
    assert (light.model, light.optimizer, light.learning_rate, light.weight_decay) == (
        "lightweight-unet", "adamw", 5e-4, 5e-4)
    assert (light.reduce_lr_factor, light.reduce_lr_patience, light.reduce_lr_min) == (0.5, 2, 1e-6)
    assert light.loss == "dice_ce" and light.loss_kwargs == {"ce_weight": 0.3, "dice_weight": 0.7}
    assert (light.batch_size, light.val_fraction, light.split_seed, light.checkpoint_every) == (2, 0.2, 42, 5)
    assert light.clipnorm > 0 and light.early_stopping_patience > 0
    flair = resolve_config("flair2017")
    assert (flair.model, flair.modalities, flair.target) == ("flair-unet", ("flair",), "whole_tumor")
    assert (flair.optimizer, flair.learning_rate, flair.batch_size) == ("adam", 1e-4, 1)
    assert flair.crop == "center" and flair.crop_size == (192, 192, 154)
    assert flair.loss == "flair_dice"


def test_flags_override_presets_and_round_trip_through_json():
    config = resolve_config("flair2017", {"epochs": 3, "batch_size": None})
    assert config.epochs == 3 and config.batch_size == PRESETS["flair2017"]["batch_size"]
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config


@pytest.mark.parametrize("preset,overrides,message", [
    ("nope", {}, "unknown preset"),
    ("lightweight2020", {"precision": "float8"}, "--precision"),
    ("lightweight2020", {"folds": 5, "fold": 5}, "--fold"),
    ("lightweight2020", {"patch_size": (64, 64)}, "--patch-size"),
    ("lightweight2020", {"colour": "red"}, "unknown configuration keys"),
    ("lightweight2020", {"spacing": (2, 0, 2)}, "spacing must be three positive voxel sizes"),
    ("lightweight2020", {"crop": "weird"}, "crop must be one of"),
])
def test_bad_configuration_is_refused(preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(preset, overrides)


# ---------------------------------------------------------------- a short run


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "run")
    result = fit(tiny_config(), dataset, run_dir, verbose=0)
    return run_dir, result


def test_run_directory_holds_every_artefact(finished_run):
    run_dir, result = finished_run
    assert result.epochs == 2
    for name in ("config.json", "runtime.json", "history.csv", "curves.png", "best.keras"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
        "epoch-0001.keras", "epoch-0002.keras"]
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    assert os.path.basename(resume_state.latest_state(run_dir)) == "epoch-2"
    assert resume_state.read_state(resume_state.latest_state(run_dir))["epoch"] == 2
    saved = TrainConfig.from_dict(json.load(open(os.path.join(run_dir, "config.json"))))
    assert saved == tiny_config()
    assert json.load(open(os.path.join(run_dir, "runtime.json")))["precision"] == "float32"
    leftovers = [n for _, _, files in os.walk(run_dir) for n in files if n.startswith(".tmp-")]
    assert leftovers == []
    # Written through outputs.atomic_path: the usual permissions, not a temp file's owner-only ones.
    probe = os.path.join(run_dir, "probe")
    open(probe, "w").close()
    usual = os.stat(probe).st_mode & 0o777
    os.remove(probe)
    for name in ("config.json", "history.csv", "best.keras", "curves.png"):
        assert os.stat(os.path.join(run_dir, name)).st_mode & 0o777 == usual, name


def test_every_keras_file_of_the_run_carries_its_input_contract(finished_run):
    from bratskeras.data.model_files import read_contract

    run_dir, _ = finished_run
    saved = TrainConfig.from_dict(json.load(open(os.path.join(run_dir, "config.json"))))
    paths = [os.path.join(run_dir, "best.keras")] + sorted(
        os.path.join(run_dir, "checkpoints", name) for name in os.listdir(os.path.join(run_dir, "checkpoints")))
    for path in paths:
        contract = read_contract(path)
        assert contract is not None, path
        assert contract.modalities == saved.modalities and contract.target == saved.target, path
        assert (contract.crop, contract.spacing, contract.patch_size) == (saved.crop, saved.spacing, saved.patch_size)


def test_history_logs_loss_learning_rate_and_dice_per_region(finished_run):
    rows = history_rows(finished_run[0])
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("loss", "val_loss", "learning_rate", "dice_wt", "dice_tc", "dice_et",
                "val_dice_wt", "val_dice_tc", "val_dice_et"):
        assert key in rows[0], key
        assert all(np.isfinite(float(r[key])) for r in rows)
    assert float(rows[0]["learning_rate"]) == pytest.approx(5e-4)


def test_best_model_reloads_with_safe_mode_and_scores(finished_run):
    run_dir, result = finished_run
    model = keras.saving.load_model(os.path.join(run_dir, "best.keras"), safe_mode=True)
    assert model.output_shape[-1] == 4 and getattr(model, "optimizer", None) is None
    assert set(result.heldout_dice) == {"WT", "TC", "ET"}
    assert all(0.0 <= v <= 1.0 for v in result.heldout_dice.values())


def test_new_run_never_overwrites_an_existing_one(finished_run, dataset):
    run_dir, _ = finished_run
    before = open(os.path.join(run_dir, "history.csv")).read()
    with pytest.raises(OutputExistsError, match="already holds a run"):
        fit(tiny_config(), dataset, run_dir, verbose=0)
    assert open(os.path.join(run_dir, "history.csv")).read() == before


def test_resume_with_another_configuration_is_refused(finished_run, dataset):
    run_dir, _ = finished_run
    with pytest.raises(ConfigError, match="different configuration.*learning_rate"):
        fit(tiny_config(learning_rate=1e-2, epochs=3), dataset, run_dir, resume=True, verbose=0)


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_flair2017_preset_trains_on_flair_alone(tmp_path):
    data = tmp_path / "brats2020"
    synth.write_dataset(data, cases=3, shape=SHAPE, layout="brats2020", seed=5)
    config = resolve_config("flair2017", {
        "epochs": 1, "steps_per_epoch": 1, "crop_size": (32, 32, 16), "patch_size": (32, 32, 16),
        "precision": "float32"})
    result = fit(config, str(data), str(tmp_path / "run"), verbose=0)
    model = keras.saving.load_model(str(tmp_path / "run" / "best.keras"), safe_mode=True)
    assert model.input_shape[-1] == 1 and model.output_shape[-1] == 1
    assert set(result.heldout_dice) == {"WT"}


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_device_augmentation_trains(dataset, tmp_path):
    result = fit(tiny_config(augment_on="device", epochs=1), dataset, str(tmp_path / "run"), verbose=0)
    assert result.epochs == 1
    model = keras.saving.load_model(str(tmp_path / "run" / "best.keras"), safe_mode=True)
    assert model.name == "lightweight_unet"


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_nnunet_augmentation_on_device_trains(dataset, tmp_path):
    result = fit(tiny_config(augment_on="device", augmentation="nnunet", epochs=1), dataset, str(tmp_path / "run"),
                 verbose=0)
    assert result.epochs == 1 and np.isfinite(float(history_rows(result.run_dir)[0]["loss"]))


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_fit_augment_flag_selects_the_set(dataset, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["fit", dataset, "--out", str(out), "--augment", "nnunet", "--epochs", "1",
                                      "--steps-per-epoch", "1", "--patch-size", "16,16,16", "--model-arg",
                                      "base_filters=4", "--precision", "float32", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.load(open(out / "config.json"))["augmentation"] == "nnunet"
    assert resolve_config().augmentation == "paper"  # the lightweight2020 preset keeps the paper's set
    # The CPU pipeline applies the chosen set, not the pipeline's default (it once did, whatever --augment said).
    for name in ("paper", "nnunet"):
        assert resolve_config("lightweight2020", {"augmentation": name}).pipeline_config().augmentation == \
            AUGMENTATION_SETS[name]
    with pytest.raises(ConfigError, match="--augment must be one of"):
        resolve_config("lightweight2020", {"augmentation": "heavy"})


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_fit_at_a_coarser_spacing_predicts_on_the_source_grid(dataset, tmp_path):
    """fit --spacing 2 caches and trains at 2 mm (half the voxels per axis); predict resamples back to 1 mm."""
    out, predictions = tmp_path / "run", tmp_path / "pred"
    result = CliRunner().invoke(cli, ["fit", dataset, "--out", str(out), "--spacing", "2", "--epochs", "1",
                                      "--steps-per-epoch", "1", "--patch-size", "8,8,8", "--model-arg",
                                      "base_filters=4", "--precision", "float32", "--quiet",
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert json.load(open(out / "config.json"))["spacing"] == [2.0, 2.0, 2.0]
    cached = [json.load(open(p)) for p in (tmp_path / "cache").glob("*/meta.json")]
    assert cached and all(meta["shape"] == meta["geometry"]["resampled_size"] ==
                          [round(n / 2) for n in meta["geometry"]["size"]] for meta in cached)
    result = CliRunner().invoke(cli, ["predict", str(out), dataset, str(predictions)])
    assert result.exit_code == 0, result.output
    written = sorted(predictions.glob("*.nii.gz"))
    assert len(written) == 5 and all(nib.load(p).shape == SHAPE for p in written)
    # best.keras copied out of the run folder keeps the run's 2 mm (its embedded contract): the same labels.
    bare = tmp_path / "elsewhere" / "model.keras"
    bare.parent.mkdir()
    bare.write_bytes((out / "best.keras").read_bytes())
    result = CliRunner().invoke(cli, ["predict", str(bare), dataset, str(tmp_path / "bare")])
    assert result.exit_code == 0, result.output
    assert "spacing 2x2x2 mm" in result.output and "warning" not in result.output
    for path in written:
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "bare" / path.name).dataobj),
                                      np.asarray(nib.load(path).dataobj))
    bad = CliRunner().invoke(cli, ["fit", dataset, "--out", str(tmp_path / "bad"), "--spacing", "2,0,2"])
    assert bad.exit_code != 0 and "--spacing" in bad.output


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_mixed_bfloat16_training_keeps_losses_and_metrics_float32(dataset, tmp_path):
    result = fit(tiny_config(precision="mixed_bfloat16", epochs=1), dataset, str(tmp_path / "run"), verbose=0)
    rows = history_rows(result.run_dir)
    assert np.isfinite(float(rows[0]["loss"])) and np.isfinite(float(rows[0]["val_dice_wt"]))
    runtime = json.load(open(os.path.join(result.run_dir, "runtime.json")))
    assert runtime["precision"] == "mixed_bfloat16"
    keras.mixed_precision.set_global_policy("float32")
    best = keras.saving.load_model(os.path.join(result.run_dir, "best.keras"), safe_mode=True)
    assert {layer.dtype_policy.name for layer in best.layers} == {"float32"}


def test_mixed_float16_compiles_with_loss_scaling():
    # float16 MaxPool3D has GPU kernels only, so here the set-up is checked, not run.
    from bratskeras.models.losses import get_loss
    from bratskeras.models.metrics import dice_metrics
    from bratskeras.training.fit import build_network, make_optimizer

    keras.mixed_precision.set_global_policy("mixed_float16")
    config = tiny_config(precision="mixed_float16")
    network = build_network(config)
    network.compile(optimizer=make_optimizer(config), loss=get_loss("dice_ce", from_logits=True),
                    metrics=dice_metrics("classes"))
    assert isinstance(network.optimizer, keras.optimizers.LossScaleOptimizer)
    assert network.output.dtype == "float32"


def test_the_optimizer_is_built_before_the_train_step_is_traced(tmp_path):
    """Built inside the first trace (Keras' default without a strategy), its variables would make
    tf.function trace the whole train step twice: seconds of every fit's start."""
    from bratskeras.training import fit as fit_module

    config = tiny_config()
    with fit_module.process_settings(config) as (policy, precision_details):
        strategy = fit_module._strategy(config, None)
        model, saved = fit_module._compiled_model(config, str(tmp_path / "run"), False, strategy, None, policy,
                                                  precision_details)
    assert saved == {} and model.optimizer.built
    assert len(model.optimizer.variables) > len(model.trainable_variables)  # the Adam moments exist


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_identical_weights_with_seed_and_deterministic_option(dataset, tmp_path):
    config = tiny_config(deterministic=True, epochs=1, checkpoint_every=5)
    fit(config, dataset, str(tmp_path / "a"), verbose=0)
    fit(config, dataset, str(tmp_path / "b"), verbose=0)
    first, second = state_weights(str(tmp_path / "a")), state_weights(str(tmp_path / "b"))
    assert len(first) == len(second) > 0  # zip would compare only the shorter list's weights
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bad input


def test_patch_size_incompatible_with_the_model_depth(dataset, tmp_path):
    with pytest.raises(ConfigError, match="multiple of 4"):
        fit(tiny_config(patch_size=(18, 16, 16)), dataset, str(tmp_path / "run"), verbose=0)
    assert not os.path.exists(tmp_path / "run")


def test_batch_too_large_for_memory_is_refused_before_training(dataset, tmp_path):
    with pytest.raises(ConfigError, match="GiB"):
        fit(tiny_config(batch_size=4096, patch_size=(128, 128, 128)), dataset,
            str(tmp_path / "run"), verbose=0)
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_dataset_with_problems_stops_unless_skipped(tmp_path):
    data = tmp_path / "bad"
    synth.write_dataset(data, cases=4, shape=SHAPE, layout="brats2021", seed=1)
    victim = next(p for p in sorted(data.rglob("*_t1ce.nii.gz")))
    victim.unlink()
    with pytest.raises(DataError, match="t1ce"):
        fit(tiny_config(epochs=1), str(data), str(tmp_path / "run"), verbose=0)
    result = fit(tiny_config(epochs=1), str(data), str(tmp_path / "run2"), skip_bad_cases=True, verbose=0)
    assert len(result.skipped) == 1 and "t1ce" in result.skipped[0]


@pytest.mark.parametrize("args,message", [
    (["--model", "unet-9000"], "unknown model"),
    (["--patch-size", "16,16"], "--patch-size"),
])
def test_cli_bad_flags_give_one_line_errors(dataset, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["fit", dataset, "--out", str(tmp_path / "run"), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


def test_cli_unknown_preset_is_refused(dataset):
    result = CliRunner().invoke(cli, ["fit", dataset, "--preset", "unet2099"])
    assert result.exit_code == 2 and "unet2099" in result.output


def test_cli_missing_data_dir(tmp_path):
    result = CliRunner().invoke(cli, ["fit", str(tmp_path / "absent")])
    assert result.exit_code != 0 and "absent" in result.output


# ---------------------------------------------------------------- processes


def _fit_command(dataset, run_dir, *extra):
    return [sys.executable, "-m", "bratskeras.cli", "fit", dataset, "--out", run_dir,
            "--model-arg", "base_filters=4", "--steps-per-epoch", "3", "--batch-size", "2",
            "--patch-size", "16,16,16", "--precision", "float32", "--seed", "7",
            "--deterministic", "--quiet", *extra]




def _latest_epoch(run_dir):
    """Finished epochs of the newest published resume state (0 before the first)."""
    if not os.path.exists(os.path.join(run_dir, "state")):
        return 0
    prefix = resume_state.latest_state(run_dir)
    return int(prefix.rsplit("-", 1)[1]) if prefix else 0


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_resume_after_sigkill_mid_epoch_matches_an_uninterrupted_run(dataset, tmp_path):
    # The dataset's cache is shared, so both runs read identical preprocessed arrays (two processes
    # building the same entry is safe: cache._write_entry renames one complete copy into place).
    epochs = ["--epochs", "4"]
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    # The uninterrupted run goes on alongside the one that is killed and resumed: each fit process
    # keeps about one core busy (TensorFlow's import, tracing and tiny steps), so on 2 cores this
    # test takes about as long as the killed-and-resumed run alone. --deterministic makes the
    # results independent of what else runs at the time.
    background_log = open(tmp_path / "reference.log", "w+")  # a file: a full pipe would block the run
    background = subprocess.Popen(_fit_command(dataset, reference, *epochs), env=subprocess_env(),
                                  stdout=subprocess.DEVNULL, stderr=background_log)
    try:
        process = subprocess.Popen(_fit_command(dataset, killed, *epochs), env=subprocess_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            if _latest_epoch(killed) == 2:
                break
            time.sleep(0.05)
        if process.poll() is None and time.time() >= deadline:
            process.kill()
            process.wait()
            pytest.fail("the run did not finish epoch 2 within 240 s")
        assert process.poll() is None, "the run ended before it could be killed"
        # epoch-0002 was just published, so the run is now inside epoch 3.
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _latest_epoch(killed) < 4

        resumed = subprocess.run(_fit_command(dataset, killed, *epochs[:0], "--epochs", "4", "--resume"),
                                 env=subprocess_env(), capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        background.wait(timeout=400)
        background_log.seek(0)
        assert background.returncode == 0, background_log.read()[-2000:]
    finally:
        if background.poll() is None:
            background.kill()
            background.wait()
        background_log.close()
    assert [int(r["epoch"]) for r in history_rows(reference)] == [1, 2, 3, 4]
    assert [int(r["epoch"]) for r in history_rows(killed)] == [1, 2, 3, 4]
    uninterrupted, resumed_weights = state_weights(reference), state_weights(killed)
    assert len(uninterrupted) == len(resumed_weights) > 0
    for a, b in zip(uninterrupted, resumed_weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with open(os.path.join(killed, "best.keras"), "rb") as stream:
        assert stream.read(2) == b"PK"  # a complete zip, never a torn write


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_cli_resume_starts_from_the_saved_configuration(finished_run, dataset, tmp_path):
    # Also a finished run (2 epochs) resumed to a larger budget: --epochs 3 trains the third.
    import shutil

    run_dir = str(tmp_path / "copy")
    shutil.copytree(finished_run[0], run_dir)
    result = CliRunner().invoke(cli, ["fit", dataset, "--resume", run_dir, "--epochs", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"run directory: {run_dir} (3 epochs" in result.output  # FitResult.epochs counts all 3
    assert [int(r["epoch"]) for r in history_rows(run_dir)] == [1, 2, 3]
    refused = CliRunner().invoke(cli, ["fit", dataset, "--resume", run_dir, "--learning-rate", "0.1"])
    assert refused.exit_code == 1 and "learning_rate: saved 0.0005, asked 0.1" in refused.output
    # A run remembers its data folder (dataset.json, tests/test_reliability_resume.py); one written before
    # runs did needs DATA_DIR.
    os.remove(os.path.join(run_dir, run_folder.DATASET_FILE))
    no_data = CliRunner().invoke(cli, ["fit", "--resume", run_dir])
    assert no_data.exit_code != 0 and "DATA_DIR" in no_data.output


# ---------------------------------------------------------------- time limit


class FakeClock:
    """A clock that advances one second each time it is read."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_time_limit_stops_when_the_next_epoch_would_not_fit():
    from bratskeras.training.callbacks import TimeLimit, TimeLimitReached

    timer = TimeLimit(10, clock=FakeClock())  # deadline 11
    model = keras.Sequential()
    model.stop_training = False  # as Keras' fit sets it
    timer.set_model(model)
    stopped_after = None
    for epoch in range(5):
        timer.on_epoch_begin(epoch)
        timer.on_train_batch_end(0)
        timer.on_epoch_end(epoch)  # each epoch reads 3 clock ticks: begin, batch, end
        if timer.model.stop_training:
            stopped_after = epoch + 1
            break
    # epoch 1 ends at 4 (next would end at 6), epoch 2 at 7 (10 <= 11), epoch 3 at 10 (12 > 11).
    assert stopped_after == 3 and timer.reached
    late = TimeLimit(1, clock=FakeClock())
    late.on_epoch_begin(0)
    with pytest.raises(TimeLimitReached):
        late.on_train_batch_end(0)


def test_time_limit_leaves_the_first_epochs_tracing_out_of_its_estimate():
    """A first epoch of 30 s (tracing) and later ones of 10 s: within 75 s, 5 epochs fit, not 3."""
    from bratskeras.training.callbacks import TimeLimit

    readings = iter([0.0] + [t for epoch in range(8) for t in (30 + 10 * (epoch - 1) if epoch else 0,
                                                                  30 + 10 * epoch)])
    timer = TimeLimit(75, clock=lambda: next(readings))  # deadline 75
    model = keras.Sequential()
    model.stop_training = False
    timer.set_model(model)
    finished = 0
    while not model.stop_training:
        timer.on_epoch_begin(finished)
        timer.on_epoch_end(finished)  # epochs end at 30, 40, 50, 60, 70
        finished += 1
    # With the slowest epoch (30 s) as the estimate it stopped after the third (50 + 30 > 75).
    assert finished == 5 and timer.expected_epoch == 10 and timer.reached


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_fit_with_a_time_limit_stops_resumably(dataset, tmp_path, monkeypatch):
    from bratskeras.training import fit as fit_module
    from bratskeras.training.callbacks import TimeLimit

    # 2 steps per epoch: an epoch reads the clock 4 times, so a limit of 10 ticks allows 2 epochs.
    monkeypatch.setattr(fit_module, "TimeLimit", lambda seconds: TimeLimit(seconds, clock=FakeClock()))
    run_dir = str(tmp_path / "run")
    result = fit(tiny_config(epochs=4), dataset, run_dir, verbose=0, time_limit=10)
    assert result.time_limit_reached and result.epochs == 2
    assert [int(r["epoch"]) for r in history_rows(run_dir)] == [1, 2]
    assert result.heldout_dice and os.path.exists(os.path.join(run_dir, "best.keras"))
    resumed = fit(tiny_config(epochs=4), dataset, run_dir, resume=True, verbose=0)
    assert not resumed.time_limit_reached and resumed.epochs == 4
    assert [int(r["epoch"]) for r in history_rows(run_dir)] == [1, 2, 3, 4]


def test_time_limit_before_the_first_epoch_is_a_one_line_error(dataset, tmp_path, monkeypatch):
    from bratskeras.training import fit as fit_module
    from bratskeras.training.callbacks import TimeLimit

    monkeypatch.setattr(fit_module, "TimeLimit", lambda seconds: TimeLimit(seconds, clock=FakeClock()))
    with pytest.raises(ConfigError, match="ended before the first epoch finished"):
        fit(tiny_config(), dataset, str(tmp_path / "run"), verbose=0, time_limit=2)


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400),
                                           ("4m30s", 270), ("0.5m", 30)])
def test_parse_duration(text, seconds):
    from bratskeras.cli.train import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5 minutes", "-3", "0"])
def test_bad_time_limit_is_refused(dataset, tmp_path, text):
    # Tiny settings, so that a limit wrongly accepted costs seconds, not a full training run.
    result = CliRunner().invoke(cli, ["fit", dataset, "--out", str(tmp_path / "r"), "--time-limit", text,
                                      "--epochs", "1", "--steps-per-epoch", "1", "--patch-size", "16,16,16",
                                      "--model-arg", "base_filters=4"])
    assert result.exit_code == 2 and "--time-limit" in result.output
    assert not os.path.exists(tmp_path / "r")


def test_runtime_json_records_the_cpu_class_and_onednn(finished_run):
    runtime = json.load(open(os.path.join(finished_run[0], "runtime.json")))
    from bratskeras.platform.cpu import ISA_CLASS_NAMES

    assert runtime["isa_class"] in ISA_CLASS_NAMES
    assert isinstance(runtime["onednn"], bool) and runtime["float32_matmul_gflops"] > 0


# ---------------------------------------------------------------- fine-tuning (--init-from)


def test_init_from_takes_the_architecture_and_inputs_of_its_source(finished_run, dataset, tmp_path):
    from bratskeras.training import plan

    source = finished_run[0]
    run = plan.plan_new(dataset, str(tmp_path / "run"), None, {"init_from": source, "learning_rate": 1e-4})
    assert run.config.init_from == os.path.abspath(source)
    assert (run.config.model, run.config.model_overrides) == ("lightweight-unet", {"base_filters": 4})
    assert (run.config.patch_size, run.config.crop, run.config.spacing) == ((16, 16, 16), "none", None)
    # How to train comes from the preset (the source's own) and the flags, not from the source run.
    assert run.config.preset == "lightweight2020" and run.config.learning_rate == 1e-4
    assert run.config.steps_per_epoch == 0 and run.config.epochs == TrainConfig.epochs
    explicit = plan.plan_new(dataset, str(tmp_path / "run"), None, {"init_from": source, "patch_size": (24, 24, 16)})
    assert explicit.config.patch_size == (24, 24, 16)  # inherited fields a flag may change: the patch ...
    regridded = plan.plan_new(dataset, str(tmp_path / "run"), None, {"init_from": source, "spacing": (2.0, 2.0, 2.0)})
    assert regridded.config.spacing == (2.0, 2.0, 2.0)  # ... and the voxel grid it is tuned at
    assert (regridded.config.model_overrides, regridded.config.crop) == ({"base_filters": 4}, "none")
    with pytest.raises(ConfigError, match="--init-from needs a DATA_DIR"):
        plan.plan_demo(str(tmp_path / "run"), None, {"init_from": source})
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("args, message", [
    (["--model", "medium-unet-16"], 'model "lightweight-unet", --model asks for "medium-unet-16"'),
    (["--model-arg", "base_filters=8"], '--model-arg asks for {"base_filters": 8}'),
    (["--target", "regions"], 'target "classes", --target asks for "regions"'),
    (["--task", "gli"], "task null, --task asks for \"gli\""),
    (["--preset", "flair2017"], "is a lightweight-unet, --preset flair2017 trains flair-unet"),
])
def test_init_from_with_a_conflicting_option_is_a_one_line_error_before_any_work(finished_run, dataset, tmp_path,
                                                                                  args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["fit", dataset, "--init-from", finished_run[0], "--out", str(out), *args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.startswith("Error: --init-from ") and result.output.count("\n") == 1
    assert not out.exists()


def test_init_from_a_bare_keras_file_takes_its_contract_and_needs_a_network_of_its_shapes(finished_run, dataset,
                                                                                         tmp_path):
    """Outside a run there is no config.json: the embedded contract gives the inputs, the flags the
    architecture, and the weights must fit it."""
    import shutil

    from bratskeras.training import plan

    bare = tmp_path / "elsewhere" / "model.keras"
    bare.parent.mkdir()
    shutil.copy(os.path.join(finished_run[0], "best.keras"), bare)
    fitting = {"init_from": str(bare), "model_overrides": {"base_filters": 4}}
    run = plan.plan_new(dataset, str(tmp_path / "run"), None, fitting)
    assert run.config.init_from == str(bare)
    # The source's inputs (crop "none", 16^3 patches: not TrainConfig's defaults) came from its contract.
    assert (run.config.crop, run.config.patch_size) == ("none", (16, 16, 16)) != (TrainConfig.crop,
                                                                                  TrainConfig.patch_size)
    with pytest.raises(ConfigError, match="trained with target \"classes\", --target asks for \"regions\""):
        plan.plan_new(dataset, str(tmp_path / "run"), None, {**fitting, "target": "regions"})
    with pytest.raises(ConfigError, match=r"model.keras: its weight .* is \(3, 3, 3, 4, 4\), .* here is "
                                          r"\(3, 3, 3, 4, 16\)"):
        plan.plan_new(dataset, str(tmp_path / "run"), None, {"init_from": str(bare)})
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_init_from_starts_from_the_source_weights_and_resumes_as_any_run(finished_run, dataset, tmp_path):
    from bratskeras.models import load_model

    source, out = finished_run[0], tmp_path / "tuned"
    result = CliRunner().invoke(cli, ["fit", dataset, "--init-from", source, "--out", str(out), "--epochs", "1",
                                      "--learning-rate", "1e-12", "--precision", "float32", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"fine-tuning {os.path.abspath(source)}" in result.output
    # A learning rate of 1e-12 (0 is refused) moves an AdamW weight by about 1e-12 (its decay scales with the
    # rate too): the run's weights are its source's, not a fresh network's.
    for tuned, original in zip(load_model(out).get_weights(), load_model(source).get_weights(), strict=True):
        np.testing.assert_allclose(tuned, original, rtol=0, atol=1e-9)
    saved = json.load(open(out / "config.json"))
    assert saved["init_from"] == os.path.abspath(source) and saved["model_overrides"] == {"base_filters": 4}
    resumed = CliRunner().invoke(cli, ["fit", dataset, "--resume", str(out), "--epochs", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert "fine-tuning" not in resumed.output and [int(r["epoch"]) for r in history_rows(out)] == [1, 2]
    # Its .keras files carry the contract of its own configuration, which inherited its source's inputs.
    from bratskeras.data.model_files import read_contract

    for path in [out / "best.keras", *sorted((out / "checkpoints").glob("*.keras"))]:
        contract = read_contract(path)
        assert contract is not None, path
        assert contract.needs() == read_contract(source).needs(), path
    other = CliRunner().invoke(cli, ["fit", dataset, "--resume", str(out), "--init-from", str(out / "best.keras")])
    assert other.exit_code == 1 and "init_from: saved" in other.output
    demo = CliRunner().invoke(cli, ["fit", "--init-from", source])
    assert demo.exit_code == 1 and "--init-from needs a DATA_DIR" in demo.output


def test_a_fine_tuned_run_stores_its_input_contract_in_best_keras_and_every_checkpoint(finished_run, dataset,
                                                                                       tmp_path):
    from bratskeras.data.model_files import read_contract
    from bratskeras.models import load_model
    from bratskeras.training import plan
    from bratskeras.training.fit import run_contract

    source = finished_run[0]
    how = {key: TINY[key] for key in ("steps_per_epoch", "batch_size", "precision", "checkpoint_every")}
    run = plan.plan_new(dataset, str(tmp_path / "tuned"), None, {"init_from": source, **how, "epochs": 1})
    fit(run.config, dataset, run.run_dir, verbose=0)
    paths = [os.path.join(run.run_dir, "best.keras"), os.path.join(run.run_dir, "checkpoints", "epoch-0001.keras")]
    for path in paths:
        contract = read_contract(path)
        assert contract is not None, path
        assert contract == run_contract(run.config, load_model(path)), path
        assert contract.needs() == read_contract(source).needs(), path  # the inputs it inherited


# Phantoms with their modality files swapped: contrasts that a model trained on the usual ones has never seen
# (z-scoring cannot undo a swap), so a model must learn again to segment them.
SWAPPED_MODALITIES = {"flair": "t2", "t2": "flair", "t1": "t1ce", "t1ce": "t1"}
TRANSFER_SHAPE = (32, 32, 24)
TRANSFER = {"model_overrides": {"base_filters": 4}, "steps_per_epoch": 8, "batch_size": 2,
            "patch_size": TRANSFER_SHAPE, "crop": "none", "precision": "float32", "learning_rate": 3e-3,
            "early_stopping_patience": 0, "reduce_lr_patience": 0, "checkpoint_every": 100, "seed": 11}


def _swapped_phantoms(root, cases, seed):
    synth.write_dataset(root, cases=cases, shape=TRANSFER_SHAPE, layout="brats2021", seed=seed)
    for path in sorted(root.glob("*/*.nii.gz")):
        modality = path.name[:-len(".nii.gz")].rsplit("_", 1)[1]
        if modality in SWAPPED_MODALITIES:
            path.rename(path.with_name(path.name.replace(f"_{modality}.", f"_{SWAPPED_MODALITIES[modality]}.swapped.")))
    for path in root.glob("*/*.swapped.nii.gz"):
        path.rename(path.with_name(path.name.replace(".swapped", "")))
    return str(root)


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_init_from_fine_tunes_to_shifted_data_far_better_than_training_from_scratch(tmp_path):
    """A model of usual phantoms, fine-tuned for 16 steps on swapped ones, against its start and a fresh network.

    Measured on 2 cores (this set-up, and 5 + 2 epochs on three other seeds): held-out WT rose 0.34-0.49 above
    the source's (0.10-0.38 on the swapped phantoms) and ended 0.40-0.62 above the network trained from scratch
    with the same steps and settings. About 30 s of CPU time, 5 of them TensorFlow's import.
    """
    import dataclasses

    from bratskeras.training.heldout import evaluate_heldout

    usual = str(tmp_path / "usual")
    synth.write_dataset(usual, cases=8, shape=TRANSFER_SHAPE, layout="brats2021", seed=14)
    swapped = _swapped_phantoms(tmp_path / "swapped", cases=6, seed=16)
    held_out = _swapped_phantoms(tmp_path / "held_out", cases=4, seed=18)
    source = str(tmp_path / "source")
    fit(resolve_config("lightweight2020", {**TRANSFER, "epochs": 6}), usual, source, verbose=0)

    tuned = tmp_path / "tuned"
    result = CliRunner().invoke(cli, ["fit", swapped, "--init-from", source, "--out", str(tuned), "--epochs", "2",
                                      "--steps-per-epoch", "8", "--batch-size", "2", "--learning-rate", "3e-3",
                                      "--precision", "float32", "--seed", "11", "--quiet"])
    assert result.exit_code == 0, result.output
    config = TrainConfig.from_dict(json.load(open(tuned / "config.json")))
    scratch = str(tmp_path / "scratch")
    fit(dataclasses.replace(config, init_from=None), swapped, scratch, verbose=0)  # all else the same

    before, after, fresh = (evaluate_heldout(run, held_out, config)["WT"] for run in (source, str(tuned), scratch))
    assert after >= before + 0.2, (before, after)
    assert after >= fresh + 0.2, (after, fresh)
