"""The run directory and its crash-safe files.

    RUN_DIR/.bratskeras-run      marker: the process that created the run (O_EXCL)
    RUN_DIR/config.json          resolved TrainConfig
    RUN_DIR/dataset.json         the data folder it trains on (absolute) and its labelled cases'
                                 sizes, checked by --resume (`check_dataset`)
    RUN_DIR/runtime.json         precision, strategy, devices chosen
    RUN_DIR/splits.json, environment.json, preset_changes.json, results.json
                                 the split, versions and command line, changes from the preset,
                                 final figures (bratskeras.training.records)
    RUN_DIR/history.csv          one row per finished epoch (with its epoch_seconds)
    RUN_DIR/curves.png           loss, Dice per region, learning rate
    RUN_DIR/tensorboard/         TensorBoard logs
    RUN_DIR/best.keras           inference model at the best validation Dice
    RUN_DIR/checkpoints/epoch-NNNN.keras   every `checkpoint_every` epochs
    RUN_DIR/state/checkpoint     pointer to the newest complete resume state
    RUN_DIR/state/epoch-N.index, epoch-N.data-*   model and optimizer variables
                                 by name (tf.train.Checkpoint), N finished epochs
    RUN_DIR/state/epoch-N.json   epoch, learning rate, best score, callback state

Every file is written next to its destination and renamed into place
(`os.replace` is atomic on POSIX), and a resume state is published by
`tf.train.CheckpointManager` rewriting `state/checkpoint` (atomically) only
once its files and JSON are complete, so a run killed at any moment leaves
the previous state restorable.

`--resume` verifies everything before it writes or deletes anything
(`check_resume`, then `check_dataset`): the run folder is writable, its
config.json is readable and asks for the same run, its newest state is read
in full, and history.csv and checkpoints/ record no epoch beyond it. A run
whose state cannot be read is refused, never restarted at epoch 0.
"""

import csv
import glob
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass

from bratskeras.core.errors import ConfigError, OutputExistsError
from bratskeras.platform import claims, outputs
from bratskeras.platform.outputs import atomic_path

# TensorFlow is imported inside the functions that save and restore states:
# claiming a run folder and checking its marker must not pay its ~5 s import.

STATE_DIR = "state"
# Resume states are STATE_DIR/epoch-N.{index,data-*,json} (N finished epochs).
STATE_PREFIX = "epoch"
# tf.train.CheckpointManager's pointer to the newest published state, in STATE_DIR.
STATE_POINTER = "checkpoint"
# The run's dataset: {"data_dir": absolute path, "cases": {case id: bytes of its files}}.
DATASET_FILE = "dataset.json"
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


def atomic_save_model(model, path, contract):
    """`model.save(path)` (a .keras file) with its input `contract`, through a temporary file and a rename."""
    from bratskeras.models.saving import save_model

    with atomic_path(path) as tmp:
        save_model(model, tmp, contract)


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
    entries = claims.folder_entries(run_dir)  # the claim file of this fit (claims.claim_folder) aside
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
    others = sorted(set(claims.folder_entries(run_dir)) - {RUN_MARKER})
    if others:
        os.remove(os.path.join(run_dir, RUN_MARKER))
        raise OutputExistsError(f"{run_dir}: files appeared while it was being claimed ({others[0]}); "
                                "choose another --out")


def is_run_dir(folder):
    """True when `folder` holds a bratskeras run (its config.json)."""
    return os.path.isfile(os.path.join(folder, "config.json"))


def prepare_run_dir(run_dir, config, resume, dataset=None):
    """Claims RUN_DIR for a new run, or continues a resumed one, and writes config.json and dataset.json.

    A run folder is created fresh (`claim_run_dir`) or resumed, never merged
    into a folder that is not a run. A resumed run must have passed
    `check_resume` and `check_dataset`: its config.json (a larger epoch
    budget) and dataset.json are rewritten, each atomically, only then.

    Args:
        dataset: `dataset_record` of the data the run trains on, or None.

    Raises:
        OutputExistsError: a new run into a folder that already holds a run,
            or that holds anything else.
    """
    if not resume:
        claim_run_dir(run_dir)
    for sub in ("checkpoints", STATE_DIR):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    atomic_write_text(os.path.join(run_dir, "config.json"), config.to_json())
    if dataset is not None:
        atomic_write_text(os.path.join(run_dir, DATASET_FILE), json.dumps(dataset, indent=2, sort_keys=True))


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
    from bratskeras.training.config import read_run_config

    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise ConfigError(f"{run_dir}: nothing to resume (no config.json)")
    outputs.ensure_writable_folder(run_dir)
    for sub in (STATE_DIR, "checkpoints"):
        if os.path.isdir(os.path.join(run_dir, sub)):
            outputs.ensure_writable_folder(os.path.join(run_dir, sub))
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

    state_root = os.path.join(run_dir, STATE_DIR)
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
    state_root = os.path.join(run_dir, STATE_DIR)
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
                          f"{os.path.join(run_dir, STATE_DIR)} (state files lost); " + _nothing_changed(run_dir))
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
    state_root = os.path.join(run_dir, STATE_DIR)
    pointer = os.path.join(state_root, STATE_POINTER)
    if not os.path.lexists(pointer):
        return None
    try:
        with open(pointer, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream if line.strip()]
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{pointer}: unreadable resume-state pointer ({_first_line(error)}); "
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
        raise ConfigError(f"{prefix}.index: damaged resume state ({_first_line(error)}); "
                          + _nothing_changed(run_dir)) from None
    data_files = sorted(glob.glob(glob.escape(prefix) + ".data-*")) or [prefix + ".data-00000-of-00001"]
    try:
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as error:
        # A truncated data file: TensorFlow's reader raises IndexError ("Read less bytes than requested").
        where = data_files[0] if len(data_files) == 1 else f"{prefix}.data-*"
        raise ConfigError(f"{where}: damaged resume state ({_first_line(error)}); "
                          + _nothing_changed(run_dir)) from None


def _recorded_epochs(run_dir):
    """(the most finished epochs history.csv or checkpoints/ record, which of them says so); (0, None) if none."""
    found = [(0, None)]
    history = os.path.join(run_dir, "history.csv")
    try:
        with open(history, newline="") as stream:
            found.append((max((int(row["epoch"]) for row in csv.DictReader(stream)), default=0), history))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no or unreadable history: no evidence either way (it is rewritten after the next epoch)
    for path in glob.glob(os.path.join(glob.escape(run_dir), "checkpoints", "epoch-*.keras")):
        match = re.fullmatch(r"epoch-([0-9]+)\.keras", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return max(found, key=lambda item: item[0])


def _first_line(error):
    """The first line of an error's text, or its class name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
        raise ConfigError(f"{path}: damaged resume state (not valid JSON: {_first_line(error)}); "
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


def dataset_record(data_dir, cases):
    """What dataset.json remembers: the data folder (absolute) and {case id: bytes of its files}."""
    return {"data_dir": os.path.abspath(os.fspath(data_dir)), "cases": dict(sorted(cases.items()))}


def recorded_dataset(run_dir):
    """The run's dataset.json (`dataset_record`), or None for a run written before runs remembered it.

    Raises:
        ConfigError: naming the file when it is not such a record.
    """
    path = os.path.join(run_dir, DATASET_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            record = json.load(stream)
    except ValueError as error:  # UnicodeDecodeError included
        raise ConfigError(f"{path}: not valid JSON ({_first_line(error)})") from None
    valid = (isinstance(record, dict) and isinstance(record.get("data_dir"), str)
             and isinstance(record.get("cases"), dict)
             and all(isinstance(size, int) and not isinstance(size, bool) for size in record["cases"].values()))
    if not valid:
        raise ConfigError(f"{path}: damaged (needs data_dir, a folder, and cases, {{case id: bytes}})")
    return record


def check_dataset(run_dir, record):
    """Refuses to resume a run on data other than its own (`record`: `dataset_record` of the data given).

    The same cases with the same file sizes in another folder (a moved or
    copied dataset) are the same data; a run older than dataset.json is not
    checked.

    Raises:
        ConfigError: one line naming the recorded folder and the one given
            (one folder when its cases changed) and the first difference.
    """
    recorded = recorded_dataset(run_dir)
    if recorded is None or recorded["cases"] == record["cases"]:
        return
    before, now = recorded["cases"], record["cases"]
    added, removed = sorted(set(now) - set(before)), sorted(set(before) - set(now))
    if added:
        detail = f"case {added[0]} is not in the data it was trained on"
    elif removed:
        detail = f"its case {removed[0]} is missing"
    else:
        changed = sorted(case for case in now if now[case] != before[case])
        detail = f"the files of case {changed[0]} changed size"
    trained_on = f"{run_dir} was trained on {recorded['data_dir']} ({len(before)} labelled cases)"
    if os.path.abspath(recorded["data_dir"]) == record["data_dir"]:
        problem = f"{trained_on}, whose cases have changed since ({detail})"
    else:
        problem = f"{trained_on}; DATA_DIR {record['data_dir']} holds other data ({detail})"
    raise ConfigError(f"{problem}: resume on the data it was trained on, or start a new run from its weights "
                      f"(fit DATA_DIR --init-from {run_dir})")


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
    status = tf.train.Checkpoint(**_trackables(variables)).read(prefix)
    # Every variable was checked above; the checkpoint's own save_counter is the one thing left unread.
    status.assert_existing_objects_matched().expect_partial()
    return read_state(prefix)


def saved_variables(prefix):
    """{name: numpy array} of every variable in a resume state, names as `state_variables`."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(key) for key, name in _saved_names(reader).items()}


def state_variables(model, optimizer):
    """{name: variable} of everything a resume state holds.

    Names do not depend on the order of the variables nor on Keras' process-
    wide name counters: "model/<layer>/<variable>" walks the model's layers
    by their names (a dropout layer's seed state is "model/head_dropout/
    seed_generator_state", where Keras' own path would be "seed_generator_2/
    ..."); "optimizer/<optimizer>/<variable>" drops the optimizer's counter
    suffix ("adam_w_1/iteration" -> "optimizer/adam_w/iteration") and names a
    slot after its model variable ("optimizer/adam_w/enc0_conv0/kernel/
    momentum").

    Raises:
        ConfigError: two variables would share a name, or a model variable
            belongs to no layer.
    """
    named = {}
    for name, variable in _layer_variables(model, "model"):
        _add_unique(named, name, variable)
    owned = {id(v) for v in named.values()}
    stray = [v.path for v in model.variables if id(v) not in owned]
    if stray:
        raise ConfigError(f"model variable {stray[0]} belongs to no layer; it cannot be saved by name")
    # Keras names a slot after its model variable's path with "/" -> "_" (a Sequential's
    # path starts with its counter-numbered name): renamed after the variable's state name.
    slot_owners = {v.path.replace("/", "_"): name.removeprefix("model/") for name, v in named.items()}
    for variable in optimizer.variables:
        owner, _, rest = variable.path.partition("/")
        reference = max((flat for flat in slot_owners if rest.startswith(flat + "_")), key=len, default=None)
        if reference is not None:
            rest = f"{slot_owners[reference]}/{rest[len(reference) + 1:]}"
        _add_unique(named, f"optimizer/{re.sub(r'_[0-9]+$', '', owner)}/{rest}", variable)
    return named


def _layer_variables(layer, scope):
    """(name, variable) of `layer` and its sublayers, named scope/layer/.../variable."""
    sublayers = getattr(layer, "layers", None)
    if not sublayers:
        for variable in layer.variables:
            yield f"{scope}/{variable.name}", variable
        return
    for sublayer in sublayers:
        yield from _layer_variables(sublayer, f"{scope}/{sublayer.name}")


def _add_unique(named, name, variable):
    if name in named and named[name] is not variable:
        raise ConfigError(f"two variables are named {name}; a resume state needs unique names")
    named[name] = variable


def _trackables(variables):
    """tf.train.Checkpoint keyword arguments: {"model": {name: tf.Variable}, "optimizer": {...}}."""
    groups = {}
    for name, variable in variables.items():
        group, _, rest = name.partition("/")
        # .value: the backend's tf.Variable (a MirroredVariable under a strategy).
        groups.setdefault(group, {})[rest] = getattr(variable, "value", variable)
    return groups


def _checkpoint_key(name):
    """The key tf.train.Checkpoint gives variable `name` ('.' -> '..', '/' -> '.S' inside a dict key)."""
    group, _, rest = name.partition("/")
    return f"{group}/{rest.replace('.', '..').replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"


def _saved_names(reader):
    """{checkpoint key: variable name} for the model and optimizer variables of a checkpoint."""
    names = {}
    for key in reader.get_variable_to_shape_map():
        group, _, rest = key.partition("/")
        if group in ("model", "optimizer") and rest.endswith("/.ATTRIBUTES/VARIABLE_VALUE"):
            escaped = rest[:-len("/.ATTRIBUTES/VARIABLE_VALUE")]
            names[key] = f"{group}/" + re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), escaped)
    return names


def _check_saved_variables(prefix, variables):
    """Raises ConfigError naming the first variable whose name, shape or dtype differs from the state's."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ConfigError(f"{prefix}: unreadable resume state ({_first_line(error)})") from None
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    saved = _saved_names(reader)
    expected = {_checkpoint_key(name): name for name in variables}
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


def _manager(state_root, variables):
    # max_to_keep=1: the pointer moves to the new checkpoint before the old one is deleted.
    import tensorflow as tf

    return tf.train.CheckpointManager(tf.train.Checkpoint(**_trackables(variables)), state_root,
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
