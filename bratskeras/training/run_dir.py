"""The run directory and its crash-safe files.

    RUN_DIR/.bratskeras-run      marker: the process that created the run (O_EXCL)
    RUN_DIR/config.json          resolved TrainConfig
    RUN_DIR/runtime.json         precision, strategy, devices chosen
    RUN_DIR/history.csv          one row per finished epoch
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
"""

import json
import os
import re
import shutil
import uuid

from bratskeras import outputs
from bratskeras.errors import ConfigError, OutputExistsError
from bratskeras.outputs import atomic_path

# TensorFlow is imported inside the functions that save and restore states:
# claiming a run folder and checking its marker must not pay its ~5 s import.

STATE_DIR = "state"
# Resume states are STATE_DIR/epoch-N.{index,data-*,json} (N finished epochs).
STATE_PREFIX = "epoch"
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
    entries = outputs.folder_entries(run_dir)  # the claim file of this fit (outputs.claim_folder) aside
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
    others = sorted(set(outputs.folder_entries(run_dir)) - {RUN_MARKER})
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
    """The newest complete resume state of a run (a checkpoint prefix, RUN_DIR/state/epoch-N), or None.

    Raises:
        ConfigError: the run holds a state in the positional npz format of
            older bratskeras versions, which cannot be restored by name, or
            the newest state's JSON is missing.
    """
    import tensorflow as tf

    state_root = os.path.join(run_dir, STATE_DIR)
    _refuse_positional_state(state_root)
    prefix = tf.train.latest_checkpoint(state_root)
    if prefix is not None and not os.path.exists(prefix + ".json"):
        # save_state writes the JSON before the pointer moves: it was removed since.
        raise ConfigError(f"{prefix}.json: missing, so the resume state {prefix} is incomplete")
    return prefix


def read_state(prefix):
    """The JSON part of a resume state (epoch, learning rate, callback states)."""
    with open(prefix + ".json") as stream:
        return json.load(stream)


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
        raise ConfigError(f"{prefix}: unreadable resume state ({str(error).splitlines()[0]})") from None
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
    """Deletes the JSON of states the pointer has moved past, and temp files a killed save left."""
    for entry in os.listdir(state_root):
        stale_json = entry.endswith(".json") and entry != keep + ".json"
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
