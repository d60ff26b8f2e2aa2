"""A run's resume states: published crash-safe, verified in full before a resume, restored by name.

    RUN_DIR/state/checkpoint     pointer to the newest complete resume state
    RUN_DIR/state/epoch-N.index, epoch-N.data-*   model and optimizer variables
                                 by name (tf.train.Checkpoint, names from
                                 training.state_names), N finished epochs
    RUN_DIR/state/epoch-N.json   epoch, learning rate, best score, callback state

A resume state is published by `tf.train.CheckpointManager` rewriting
`state/checkpoint` (atomically) only once its files and JSON are complete,
so a run killed at any moment leaves the previous state restorable.

`--resume` verifies everything before it writes or deletes anything
(`check_resume`, then run_dir.check_dataset): the run folder is writable,
its config.json is readable and asks for the same run, its newest state is
read in full, and history.csv and checkpoints/ record no epoch beyond it. A
run whose state cannot be read is refused, never restarted at epoch 0.
"""

import csv
import glob
import json
import os
import re
import shutil
from dataclasses import dataclass

from bratskeras.core.errors import ConfigError
from bratskeras.core.run_folder import CHECKPOINT_NAME, RunFolder
from bratskeras.platform import outputs
from bratskeras.training.run_dir import atomic_write_text, first_line
from bratskeras.training.state_names import checkpoint_key, saved_names, state_variables, trackables

# TensorFlow is imported inside the functions that save and restore states: claiming a run folder and
# checking its marker must not pay its ~5 s import.

# Resume states are state//epoch-N.{index,data-*,json} (N finished epochs).
STATE_PREFIX = "epoch"


# tf.train.CheckpointManager's pointer to the newest published state, in state/
STATE_POINTER = "checkpoint"


@dataclass(frozen=True)
class ResumePoint:
    """Where a verified run continues.

    Attributes:
        prefix: its newest resume state (RUN_DIR/state/epoch-N), or None
            when it stopped before saving its first.
        epochs: epochs it has finished (N, or 0).
    """

    prefix: str | None
    epochs: int


def check_resume(run_dir, config):
    """Every check `fit --resume` can make on the run folder alone, before any data is read; writes nothing.

    The folder (and its state/ and checkpoints/) must be writable, its
    config.json must hold the run `config` asks for (a larger epoch budget
    aside), its newest state must be readable in full (`verified_state`),
    and `config.epochs` must not be fewer than the epochs already trained.

    Returns:
        ResumePoint.

    Raises:
        ConfigError: one line naming the file or flag that is wrong.
        OutputError: the run folder is not writable.
    """
    from bratskeras.training.config_file import read_run_config

    folder = RunFolder(run_dir)
    config_path = folder.config
    if not os.path.exists(config_path):
        raise ConfigError(f"{run_dir}: nothing to resume (no config.json)")
    outputs.ensure_writable_folder(run_dir)
    for sub in (folder.state, folder.checkpoints):
        if os.path.isdir(sub):
            outputs.ensure_writable_folder(sub)
    differences = _differences(read_run_config(config_path).comparable(), config.comparable())
    if differences:
        raise ConfigError(f"{run_dir}: cannot resume with a different configuration ({'; '.join(differences)})")
    point = verified_state(run_dir)
    if config.epochs < point.epochs:
        raise ConfigError(f"{run_dir}: --epochs {config.epochs} is fewer than the {point.epochs} epochs it has "
                          f"trained; give --epochs {point.epochs} or more (nothing was changed)")
    return point


def _differences(saved, requested):
    keys = sorted(set(saved) | set(requested))
    return [f"{k}: saved {saved.get(k)!r}, asked {requested.get(k)!r}" for k in keys
            if saved.get(k) != requested.get(k)]


def save_state(run_dir, epoch, model, optimizer, extra):
    """Publishes a complete resume state for `epoch` finished epochs.

    The variables go into a `tf.train.Checkpoint` keyed by name
    (`state_variables`), the rest into JSON beside it. The JSON is written
    first and `CheckpointManager` rewrites its pointer (state/checkpoint) only
    once the checkpoint files are complete, so a kill at any moment leaves the
    previous state restorable; older states are removed after the pointer
    moved. Only the chief worker calls this (`callbacks.RunFiles`).

    Args:
        epoch: number of finished epochs.
        model: the network (all its variables, seed states included, are saved).
        optimizer: the built optimizer (all its variables are saved).
        extra: JSON-able dict (callback states, learning rate, best score).
    """
    import tensorflow as tf

    state_root = RunFolder(run_dir).state
    os.makedirs(state_root, exist_ok=True)
    # A pointer damaged since the run started would be ignored by the manager, which then forgets the
    # states it named: refuse (ConfigError) instead of publishing over it.
    _pointed_state(run_dir)
    prefix = os.path.join(state_root, f"{STATE_PREFIX}-{epoch}")
    # model.variables, not weights: they include the dropout layers' random
    # seed states, so a resumed run draws the same dropout masks.
    manager = _manager(state_root, state_variables(model, optimizer))
    try:
        with outputs.names_target(prefix):
            atomic_write_text(prefix + ".json", json.dumps({"epoch": epoch, **extra}, indent=2))
            try:
                manager.save(checkpoint_number=epoch)
            except tf.errors.OpError as error:
                raise outputs.tensorflow_os_error(error) from None
    except Exception:
        if tf.train.latest_checkpoint(state_root) != prefix:
            _remove_unpublished(state_root, os.path.basename(prefix))
        raise
    _remove_stale_states(state_root, keep=os.path.basename(prefix))


def _remove_unpublished(state_root, name):
    """Removes what a failed save of state `name` left (its JSON, checkpoint files, TensorFlow's temp folder)."""
    for entry in os.listdir(state_root):
        if entry == name + ".json" or entry.startswith(name + ".") or entry == name + "_temp":
            path = os.path.join(state_root, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def latest_state(run_dir):
    """The newest published resume state of a run (a checkpoint prefix, RUN_DIR/state/epoch-N), or None.

    None only when the run has no pointer (state/checkpoint) at all: it
    stopped before saving its first state.

    Raises:
        ConfigError: the run holds a state in the positional npz format of
            older bratskeras versions, which cannot be restored by name; the
            pointer is damaged or names a state whose files are missing; or
            the newest state's JSON is missing.
    """
    state_root = RunFolder(run_dir).state
    _refuse_positional_state(state_root)
    prefix = _pointed_state(run_dir)
    if prefix is not None and not os.path.exists(prefix + ".json"):
        # save_state writes the JSON before the pointer moves: it was removed since.
        raise ConfigError(f"{prefix}.json: missing, so the resume state {prefix} is incomplete; "
                          + _nothing_changed(run_dir))
    return prefix


def verified_state(run_dir):
    """The run's newest resume state, read in full, and the epochs it finished.

    Every variable of the state is read (a truncated index or data file
    fails here, not halfway through a restore), its JSON is checked, and
    history.csv and checkpoints/epoch-NNNN.keras must record no epoch past
    the one after it (a run killed between its history row and its state
    records one more): more means newer states were lost, and resuming
    would silently train those epochs again over their files.

    Returns:
        ResumePoint (prefix None and 0 epochs for a run that saved no state).

    Raises:
        ConfigError: one line naming the damaged or missing file and what
            to do; nothing is changed.
    """
    prefix = latest_state(run_dir)
    epochs = 0
    if prefix is not None:
        epochs = read_state(prefix)["epoch"]
        _read_every_variable(run_dir, prefix)
    recorded, where = _recorded_epochs(run_dir)
    if recorded > epochs + 1:
        newest = f"the newest resume state is {os.path.basename(prefix)}" if prefix else "there is no resume state"
        raise ConfigError(f"{where}: records {recorded} finished epochs, but {newest} in "
                          f"{RunFolder(run_dir).state} (state files lost); " + _nothing_changed(run_dir))
    return ResumePoint(prefix, epochs)


def _nothing_changed(run_dir):
    """What a user can do about a run whose resume state is damaged (the tail of each such error)."""
    return (f"nothing was changed: restore the file from a backup, or start a new run from this one's weights "
            f"(fit DATA_DIR --init-from {run_dir})")


_POINTER_LINE = re.compile(r'(model_checkpoint_path|all_model_checkpoint_paths): "([^"\\]+)"'
                           r"|(all_model_checkpoint_timestamps|last_preserved_timestamp): [-+.0-9eE]+")


def _pointed_state(run_dir):
    """The state prefix state/checkpoint points to, None without a pointer; ConfigError when it is damaged.

    Read here, not by tf.train.latest_checkpoint: that logs a warning and
    returns None for a damaged pointer, which a resume would take for a run
    that never saved a state (and restart at epoch 0).
    """
    state_root = RunFolder(run_dir).state
    pointer = os.path.join(state_root, STATE_POINTER)
    if not os.path.lexists(pointer):
        return None
    try:
        with open(pointer, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream if line.strip()]
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{pointer}: unreadable resume-state pointer ({first_line(error)}); "
                          + _nothing_changed(run_dir)) from None
    matches = [_POINTER_LINE.fullmatch(line) for line in lines]
    named = [m.group(2) for m in matches if m is not None and m.group(1) == "model_checkpoint_path"]
    if None in matches or len(named) != 1:
        raise ConfigError(f"{pointer}: damaged resume-state pointer{_pointer_hint(state_root)}; "
                          + _nothing_changed(run_dir))
    prefix = os.path.join(state_root, named[0])  # fit writes it relative; os.path.join keeps an absolute one
    if not os.path.exists(prefix + ".index"):
        raise ConfigError(f"{pointer}: points to {named[0]}, whose files ({prefix}.index) are missing; "
                          + _nothing_changed(run_dir))
    return prefix


def _pointer_hint(state_root):
    """" (...)": which complete-looking state a damaged pointer could be pointed back at, if any."""
    found = [int(m.group(1)) for m in (re.fullmatch(rf"{STATE_PREFIX}-([0-9]+)\.index", e)
                                       for e in os.listdir(state_root)) if m]
    complete = [n for n in found if os.path.exists(os.path.join(state_root, f"{STATE_PREFIX}-{n}.json"))]
    if not complete:
        return ""
    name = f"{STATE_PREFIX}-{max(complete)}"
    return f" ({name} beside it may be intact: the line model_checkpoint_path: \"{name}\" in it resumes from that)"


def _read_every_variable(run_dir, prefix):
    """Reads every tensor of a state; ConfigError naming its index or data file when one cannot be read."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ConfigError(f"{prefix}.index: damaged resume state ({first_line(error)}); "
                          + _nothing_changed(run_dir)) from None
    data_files = sorted(glob.glob(glob.escape(prefix) + ".data-*")) or [prefix + ".data-00000-of-00001"]
    try:
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as error:
        # A truncated data file: TensorFlow's reader raises IndexError ("Read less bytes than requested").
        where = data_files[0] if len(data_files) == 1 else f"{prefix}.data-*"
        raise ConfigError(f"{where}: damaged resume state ({first_line(error)}); "
                          + _nothing_changed(run_dir)) from None


def _recorded_epochs(run_dir):
    """(the most finished epochs history.csv or checkpoints/ record, which of them says so); (0, None) if none."""
    found = [(0, None)]
    folder = RunFolder(run_dir)
    history = folder.history
    try:
        with open(history, newline="") as stream:
            found.append((max((int(row["epoch"]) for row in csv.DictReader(stream)), default=0), history))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no or unreadable history: no evidence either way (it is rewritten after the next epoch)
    for path in glob.glob(os.path.join(glob.escape(folder.checkpoints), "*")):
        match = CHECKPOINT_NAME.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return max(found, key=lambda item: item[0])


def read_state(prefix):
    """The JSON part of a resume state (epoch, learning rate, callback states).

    Raises:
        ConfigError: naming the JSON file when it is missing, not JSON, or
            lacks its finished epoch count and learning rate.
    """
    path = prefix + ".json"
    try:
        with open(path, encoding="utf-8") as stream:
            state = json.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing, so the resume state {prefix} is incomplete") from None
    except ValueError as error:  # UnicodeDecodeError included
        raise ConfigError(f"{path}: damaged resume state (not valid JSON: {first_line(error)}); "
                          + _nothing_changed(_run_of_state(prefix))) from None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    rate = state.get("learning_rate") if isinstance(state, dict) else None
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1) or not (
            isinstance(rate, (int, float)) and not isinstance(rate, bool)):
        raise ConfigError(f"{path}: damaged resume state (needs an epoch >= 1 and a learning_rate); "
                          + _nothing_changed(_run_of_state(prefix)))
    return state


def _run_of_state(prefix):
    """RUN_DIR of a state prefix RUN_DIR/state/epoch-N."""
    return os.path.dirname(os.path.dirname(prefix))


def load_state(prefix, model, optimizer):
    """Restores weights and optimizer variables, by name, from a resume state.

    The optimizer must already be built for the model's trainable variables.
    Every variable of the model and optimizer must be in the state with the
    same shape and dtype, and the state must hold no other variable: nothing
    is restored otherwise.

    Returns:
        the state's JSON dict (`read_state`).

    Raises:
        ConfigError: one line naming the first variable that is missing,
            extra, or of another shape or dtype.
    """
    import tensorflow as tf

    variables = state_variables(model, optimizer)
    _check_saved_variables(prefix, variables)
    status = tf.train.Checkpoint(**trackables(variables)).read(prefix)
    # Every variable was checked above; the checkpoint's own save_counter is the one thing left unread.
    status.assert_existing_objects_matched().expect_partial()
    return read_state(prefix)


def saved_variables(prefix):
    """{name: numpy array} of every variable in a resume state, names as `state_variables`."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(key) for key, name in saved_names(reader).items()}


def _manager(state_root, variables):
    # max_to_keep=1: the pointer moves to the new checkpoint before the old one is deleted.
    import tensorflow as tf

    return tf.train.CheckpointManager(tf.train.Checkpoint(**trackables(variables)), state_root,
                                      max_to_keep=1, checkpoint_name=STATE_PREFIX)


def _remove_stale_states(state_root, keep):
    """Deletes the JSON of states the pointer has moved past, and temp files a killed save left.

    Only states older than `keep` (epoch-N, N fewer epochs) are stale: a
    newer one is not this run's to delete (`verified_state` refuses to resume
    a run whose history is ahead of its pointer).
    """
    kept_epoch = int(keep.rsplit("-", 1)[1])
    for entry in os.listdir(state_root):
        match = re.fullmatch(rf"{STATE_PREFIX}-([0-9]+)\.json", entry)
        stale_json = match is not None and int(match.group(1)) < kept_epoch
        if stale_json or entry.startswith(".tmp-") or entry.endswith("_temp"):
            path = os.path.join(state_root, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _refuse_positional_state(state_root):
    """Refuses a state written by bratskeras before states were saved by name (state/LATEST + model.npz)."""
    pointer = os.path.join(state_root, "LATEST")
    if os.path.exists(pointer):
        folder = os.path.join(state_root, open(pointer).read().strip())
        if os.path.exists(os.path.join(folder, "model.npz")):
            raise ConfigError(
                f"{folder}: resume state of an older bratskeras (positional model.npz), which cannot be restored "
                "by variable name; start a new run (best.keras and checkpoints/*.keras still load)")


def _check_saved_variables(prefix, variables):
    """Raises ConfigError naming the first variable whose name, shape or dtype differs from the state's."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ConfigError(f"{prefix}: unreadable resume state ({first_line(error)})") from None
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    saved = saved_names(reader)
    expected = {checkpoint_key(name): name for name in variables}
    for key, name in sorted(expected.items(), key=lambda item: item[1]):
        variable = variables[name]
        if key not in shapes:
            raise ConfigError(f"{prefix}: variable {name} of this model/optimizer is not in the saved state")
        if tuple(shapes[key]) != tuple(variable.shape):
            raise ConfigError(f"{prefix}: variable {name} has shape {tuple(shapes[key])} in the saved state, "
                              f"{tuple(variable.shape)} here")
        if dtypes[key].name != tf.as_dtype(variable.dtype).name:
            raise ConfigError(f"{prefix}: variable {name} is {dtypes[key].name} in the saved state, "
                              f"{tf.as_dtype(variable.dtype).name} here")
    extra = sorted(name for key, name in saved.items() if key not in expected)
    if extra:
        raise ConfigError(f"{prefix}: the saved state holds variable {extra[0]}, which this model/optimizer lacks")
