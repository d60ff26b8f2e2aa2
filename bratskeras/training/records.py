"""What a run records about itself beyond its configuration: split, environment, results, preset changes.

    RUN_DIR/splits.json          train and validation case ids, fold, folds, split seed
    RUN_DIR/environment.json     versions (bratskeras, Keras, TensorFlow, numpy, Python), CPU class,
                                 the command line and when it started; a resumed run keeps the
                                 earlier invocations' records under "earlier"
    RUN_DIR/preset_changes.json  the fields that differ from the preset's values, with both values
    RUN_DIR/results.json         best and final validation Dice per region with their epochs (from
                                 history.csv), best.keras's whole-volume validation Dice, and the
                                 held-out Dice when the demo scores its held-out cases

config.json holds exactly TrainConfig's fields (predict, export and --resume
read it back and refuse unknown keys), so the preset changes live beside it.
Every file is written through run_dir.atomic_write_text.
"""

import dataclasses
import json
import os
import platform
import sys
import time

from bratskeras.core.run_folder import (
    ENVIRONMENT_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    PRESET_CHANGES_FILE,
    RESULTS_FILE,
    SPLITS_FILE,
)
from bratskeras.training import run_dir as run_files

# The history.csv column that picks best.keras (callbacks.RunFiles' monitor).
MONITOR = "val_dice_wt"
_VAL_DICE = "val_dice_"


def _write_json(run_dir, name, record):
    run_files.atomic_write_text(os.path.join(run_dir, name), json.dumps(record, indent=2, sort_keys=True) + "\n")


def _read_json(path):
    """The JSON object in `path`, or None when it is absent or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as stream:
            value = json.load(stream)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_splits(run_dir, config, train_ids, validation_ids):
    """RUN_DIR/splits.json: the case ids the run trains and validates on, and how they were split."""
    _write_json(run_dir, SPLITS_FILE, {
        "train": list(train_ids), "validation": list(validation_ids),
        "fold": config.fold if config.folds else None, "folds": config.folds or None,
        "val_fraction": None if config.folds else config.val_fraction, "seed": config.split_seed})


def versions():
    """{package: version} of what a run depends on (imports TensorFlow)."""
    import keras
    import numpy
    import tensorflow

    import bratskeras

    return {"bratskeras": bratskeras.__version__, "keras": keras.__version__, "tensorflow": tensorflow.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def write_environment(run_dir, command, resume):
    """RUN_DIR/environment.json: versions, machine and command line of this invocation.

    Args:
        command: the command line (sys.argv) when run from the CLI, else None.
        resume: True when this invocation resumes the run: the records of the
            earlier invocations are kept, oldest first, under "earlier".
    """
    from bratskeras.platform import cpu

    path = os.path.join(run_dir, ENVIRONMENT_FILE)
    earlier = []
    previous = _read_json(path) if resume else None
    if previous is not None:
        earlier = [*previous.pop("earlier", []), previous]
    model, flags = cpu.cpu_model_and_flags()
    _write_json(run_dir, ENVIRONMENT_FILE, {
        "versions": versions(), "platform": platform.platform(), "cpu": model, "isa_class": cpu.isa_class(flags),
        "command": list(command) if command is not None else None, "executable": sys.executable,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume": bool(resume), "earlier": earlier})


def preset_changes(config):
    """{field: {"preset": its value in config.preset, "run": the run's}} for every field the run changed.

    Values are compared as config.json stores them (tuples as lists).
    """
    from bratskeras.training.config import resolve_config

    preset = json.loads(json.dumps(dataclasses.asdict(resolve_config(config.preset))))
    run = json.loads(config.to_json())
    return {name: {"preset": preset.get(name), "run": value} for name, value in sorted(run.items())
            if name != "preset" and value != preset.get(name)}


def write_preset_changes(run_dir, config):
    """RUN_DIR/preset_changes.json: {"preset": name, "changed_from_preset": `preset_changes`}."""
    _write_json(run_dir, PRESET_CHANGES_FILE, {"preset": config.preset,
                                               "changed_from_preset": preset_changes(config)})


def _epoch_record(row):
    """{"epoch": n, "dice": {"WT": ...}, "val_loss": ...} of one history.csv row."""
    dice = {key[len(_VAL_DICE):].upper(): float(value) for key, value in row.items()
            if key.startswith(_VAL_DICE) and value not in ("", None)}
    record = {"epoch": int(row["epoch"]), "dice": dice}
    if row.get("val_loss") not in ("", None):
        record["val_loss"] = float(row["val_loss"])
    return record


def write_results(run_dir, epochs, validation_dice, validation_cases, time_limit_reached):
    """RUN_DIR/results.json from history.csv and best.keras's whole-volume validation Dice.

    "best" is the first epoch with the highest val_dice_wt (the one best.keras
    holds), "final" the last epoch trained. Rewritten whole: a held-out
    score of an earlier best.keras is dropped (`add_heldout` adds the new one).

    Args:
        epochs: epochs finished in total.
        validation_dice: {"WT": ..., ...} of best.keras on the validation cases.
        validation_cases: how many validation cases that is.
    """
    from bratskeras.training.callbacks import read_history

    rows = read_history(os.path.join(run_dir, HISTORY_FILE))
    scored = [row for row in rows if row.get(MONITOR) not in ("", None)]
    best = max(scored, key=lambda row: float(row[MONITOR]), default=None)
    _write_json(run_dir, RESULTS_FILE, {
        "epochs": epochs, "monitor": MONITOR, "time_limit_reached": bool(time_limit_reached),
        "best": _epoch_record(best) if best else None,
        "final": _epoch_record(rows[-1]) if rows else None,
        "validation": {"model": MODEL_FILE, "cases": validation_cases, "dice": dict(validation_dice),
                       "scored": "whole volumes, predict's sliding window"},
    })


def add_heldout(run_dir, data_dir, dice):
    """Adds best.keras's held-out Dice on `data_dir` to RUN_DIR/results.json."""
    record = _read_json(os.path.join(run_dir, RESULTS_FILE)) or {}
    record["heldout"] = {"model": MODEL_FILE, "data_dir": os.path.abspath(data_dir), "dice": dict(dice)}
    _write_json(run_dir, RESULTS_FILE, record)
