"""The run directory and its crash-safe files.

    RUN_DIR/.bratskeras-run      marker: the process that created the run (O_EXCL)
    RUN_DIR/config.json          resolved TrainConfig
    RUN_DIR/runtime.json         precision, strategy, devices chosen
    RUN_DIR/history.csv          one row per finished epoch
    RUN_DIR/curves.png           loss, Dice per region, learning rate
    RUN_DIR/tensorboard/         TensorBoard logs
    RUN_DIR/best.keras           inference model at the best validation Dice
    RUN_DIR/checkpoints/epoch-NNNN.keras   every `checkpoint_every` epochs
    RUN_DIR/state/LATEST         name of the newest complete resume state
    RUN_DIR/state/epoch-NNNN/    model and optimizer variables, callback state

Every file is written next to its destination and renamed into place
(`os.replace` is atomic on POSIX), and a resume state is a folder published by
rewriting `state/LATEST` only once the folder is complete, so a run killed at
any moment leaves only complete files behind.
"""

import json
import os
import shutil
import tempfile
import uuid

import numpy as np

from bratskeras import outputs
from bratskeras.errors import ConfigError, OutputExistsError
from bratskeras.outputs import atomic_path

STATE_DIR = "state"
# Created first, with O_EXCL, by the one process that makes a folder a run.
RUN_MARKER = ".bratskeras-run"
# Tells this process's claim from another's (pids repeat across containers).
_PROCESS_TOKEN = uuid.uuid4().hex


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file and a rename (synced to disk)."""
    with atomic_path(path) as tmp, open(tmp, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def atomic_save_model(model, path):
    """`model.save(path)` (a .keras file) through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def _read_marker(run_dir):
    try:
        with open(os.path.join(run_dir, RUN_MARKER)) as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return {}


def check_new_run_dir(run_dir):
    """Refuses, before any work, a --out that cannot become a new run folder.

    Accepted: an absent folder (its parent must be writable), an empty one,
    or one this process has claimed (`claim_run_dir`) without a run in it yet.

    Raises:
        OutputExistsError: the folder holds a run, is being claimed by another
            process, or holds anything else (never merged into).
        OutputError: it cannot be created or written.
    """
    run_dir = os.fspath(run_dir)
    if os.path.lexists(run_dir) and not os.path.isdir(run_dir):
        raise OutputExistsError(f"{run_dir}: exists and is not a folder; choose another --out")
    if not os.path.isdir(run_dir):
        outputs.ensure_writable_folder(run_dir)
        return
    entries = sorted(os.listdir(run_dir))
    if "config.json" in entries:
        raise OutputExistsError(
            f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    if RUN_MARKER in entries:
        if _read_marker(run_dir).get("token") == _PROCESS_TOKEN:
            return
        raise OutputExistsError(
            f"{run_dir}: another bratskeras fit is creating a run here (or one stopped before writing "
            "config.json: remove the folder if no fit is running)")
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputExistsError(f"{run_dir}: exists and is not a bratskeras run ({len(entries)} entries: "
                                f"{shown}); a new run needs an absent or empty --out")
    outputs.ensure_writable_folder(run_dir)


def claim_run_dir(run_dir):
    """Makes `run_dir` this process's new run folder, atomically.

    The folder is created (or found empty) and the marker file RUN_MARKER is
    created with O_CREAT | O_EXCL: of two processes started with the same
    --out, exactly one gets it, the other is refused. Claiming a folder this
    process already claimed does nothing.

    Raises:
        OutputExistsError, OutputError: as `check_new_run_dir`.
    """
    run_dir = os.fspath(run_dir)
    check_new_run_dir(run_dir)
    if _read_marker(run_dir).get("token") == _PROCESS_TOKEN:
        return
    with outputs.names_target(run_dir):
        os.makedirs(run_dir, exist_ok=True)
    try:
        descriptor = os.open(os.path.join(run_dir, RUN_MARKER), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise OutputExistsError(f"{run_dir}: another bratskeras fit is creating a run here") from None
    with os.fdopen(descriptor, "w") as stream:
        json.dump({"token": _PROCESS_TOKEN, "pid": os.getpid()}, stream)
    # Someone else's files may have arrived between the check and the marker.
    others = sorted(set(os.listdir(run_dir)) - {RUN_MARKER})
    if others:
        os.remove(os.path.join(run_dir, RUN_MARKER))
        raise OutputExistsError(f"{run_dir}: files appeared while it was being claimed ({others[0]}); "
                                "choose another --out")


def is_run_dir(folder):
    """True when `folder` holds a bratskeras run (its config.json)."""
    return os.path.isfile(os.path.join(folder, "config.json"))


def prepare_run_dir(run_dir, config, resume):
    """Claims RUN_DIR for a new run, or checks it for `--resume`, and writes config.json.

    A run folder is created fresh (`claim_run_dir`) or resumed, never merged
    into a folder that is not a run.

    Raises:
        OutputExistsError: a new run into a folder that already holds a run,
            or that holds anything else.
        ConfigError: resuming with a configuration other than the saved one,
            or resuming a folder that holds no run.
    """
    config_path = os.path.join(run_dir, "config.json")
    if resume:
        if not os.path.exists(config_path):
            raise ConfigError(f"{run_dir}: nothing to resume (no config.json)")
        saved = json.loads(open(config_path).read())
        from bratskeras.training.config import TrainConfig

        differences = _differences(TrainConfig.from_dict(saved).comparable(), config.comparable())
        if differences:
            raise ConfigError(
                f"{run_dir}: cannot resume with a different configuration ({'; '.join(differences)})"
            )
    else:
        claim_run_dir(run_dir)
    for sub in ("checkpoints", STATE_DIR):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    atomic_write_text(config_path, config.to_json())


def _differences(saved, requested):
    keys = sorted(set(saved) | set(requested))
    return [f"{k}: saved {saved.get(k)!r}, asked {requested.get(k)!r}" for k in keys
            if saved.get(k) != requested.get(k)]


def save_state(run_dir, epoch, model, optimizer, extra):
    """Publishes a complete resume state for `epoch` finished epochs.

    Args:
        epoch: number of finished epochs.
        model: the network (all its variables, seed states included, are saved).
        optimizer: the built optimizer (all its variables are saved in order).
        extra: JSON-able dict (callback states, learning rate, best score).
    """
    state_root = os.path.join(run_dir, STATE_DIR)
    name = f"epoch-{epoch:04d}"
    final = os.path.join(state_root, name)
    with outputs.names_target(final):
        tmp = tempfile.mkdtemp(dir=state_root, prefix=f".tmp-{name}-")
        try:
            # model.variables, not weights: they include the dropout layers' random
            # seed states, so a resumed run draws the same dropout masks.
            _save_variables(os.path.join(tmp, "model.npz"), model.variables)
            _save_variables(os.path.join(tmp, "optimizer.npz"), optimizer.variables)
            with open(os.path.join(tmp, "state.json"), "w") as stream:
                json.dump({"epoch": epoch, **extra}, stream, indent=2)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(os.path.join(state_root, "LATEST"), name)
    for entry in os.listdir(state_root):
        if entry not in (name, "LATEST"):
            shutil.rmtree(os.path.join(state_root, entry), ignore_errors=True)


def latest_state(run_dir):
    """The newest complete state folder of a run, or None."""
    pointer = os.path.join(run_dir, STATE_DIR, "LATEST")
    if not os.path.exists(pointer):
        return None
    folder = os.path.join(run_dir, STATE_DIR, open(pointer).read().strip())
    return folder if os.path.isdir(folder) else None


def load_state(folder, model, optimizer):
    """Restores weights and optimizer variables from a state folder.

    The optimizer must already be built for the model's trainable variables.

    Returns:
        the state.json dict.
    """
    _load_variables(os.path.join(folder, "model.npz"), model.variables, folder)
    _load_variables(os.path.join(folder, "optimizer.npz"), optimizer.variables, folder)
    with open(os.path.join(folder, "state.json")) as stream:
        return json.load(stream)


def _save_variables(path, variables):
    np.savez(path, *[np.asarray(v.numpy()) for v in variables])


def _load_variables(path, variables, folder):
    saved = np.load(path)
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(variables) or any(
            tuple(v.shape) != value.shape for v, value in zip(variables, values)):
        raise ConfigError(f"{folder}: saved state does not match this model and optimizer")
    for variable, value in zip(variables, values):
        variable.assign(value)

