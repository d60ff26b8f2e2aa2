"""The run directory and its crash-safe files.

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

import numpy as np

from bratskeras.errors import ConfigError, OutputExistsError
from bratskeras.outputs import atomic_path

STATE_DIR = "state"


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


def prepare_run_dir(run_dir, config, resume):
    """Creates RUN_DIR for a new run, or checks it for `--resume`.

    Raises:
        OutputExistsError: a new run into a folder that already holds a run.
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
        if os.path.exists(config_path):
            raise OutputExistsError(
                f"{run_dir} already holds a run; use --resume to continue it or choose another --out"
            )
        os.makedirs(run_dir, exist_ok=True)
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
    tmp = tempfile.mkdtemp(dir=state_root, prefix=f".tmp-{name}-")
    # model.variables, not weights: they include the dropout layers' random
    # seed states, so a resumed run draws the same dropout masks.
    _save_variables(os.path.join(tmp, "model.npz"), model.variables)
    _save_variables(os.path.join(tmp, "optimizer.npz"), optimizer.variables)
    with open(os.path.join(tmp, "state.json"), "w") as stream:
        json.dump({"epoch": epoch, **extra}, stream, indent=2)
    final = os.path.join(state_root, name)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
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

