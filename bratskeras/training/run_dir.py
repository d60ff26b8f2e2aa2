"""Making a folder a run folder, crash-safe writes into it, and the dataset it remembers.

The folder's file names live in bratskeras.core.run_folder (RunFolder); the
resume states in it are bratskeras.training.resume_state's. A run folder is
created fresh (`claim_run_dir`: one process wins, with O_EXCL) or resumed,
never merged into a folder that is not a run. Every file is written next to
its destination and renamed into place (`os.replace` is atomic on POSIX), so
a run killed at any moment leaves each file whole.

dataset.json: {"data_dir": absolute path, "cases": {case id: bytes of its
files}}, checked by --resume (`check_dataset`).
"""

import json
import os
import uuid

from bratskeras.core.errors import ConfigError, OutputExistsError
from bratskeras.core.run_folder import CONFIG_FILE, MARKER_FILE, RunFolder
from bratskeras.platform import claims, outputs
from bratskeras.platform.outputs import atomic_path

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
        with open(RunFolder(run_dir).marker) as stream:
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
    if CONFIG_FILE in entries:
        raise OutputExistsError(
            f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    if MARKER_FILE in entries:
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

    The folder is created (or found empty) and the marker file MARKER_FILE is
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
        descriptor = os.open(RunFolder(run_dir).marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise OutputExistsError(f"{run_dir}: another bratskeras fit is creating a run here") from None
    with os.fdopen(descriptor, "w") as stream:
        json.dump({"token": _PROCESS_TOKEN, "pid": os.getpid()}, stream)
    # Someone else's files may have arrived between the check and the marker.
    others = sorted(set(claims.folder_entries(run_dir)) - {MARKER_FILE})
    if others:
        os.remove(RunFolder(run_dir).marker)
        raise OutputExistsError(f"{run_dir}: files appeared while it was being claimed ({others[0]}); "
                                "choose another --out")


def is_run_dir(folder):
    """True when `folder` holds a bratskeras run (its config.json)."""
    return RunFolder(folder).has_config()


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
    folder = RunFolder(run_dir)
    for sub in (folder.checkpoints, folder.state):
        os.makedirs(sub, exist_ok=True)
    atomic_write_text(folder.config, config.to_json())
    if dataset is not None:
        atomic_write_text(folder.dataset, json.dumps(dataset, indent=2, sort_keys=True))


def dataset_record(data_dir, cases):
    """What dataset.json remembers: the data folder (absolute) and {case id: bytes of its files}."""
    return {"data_dir": os.path.abspath(os.fspath(data_dir)), "cases": dict(sorted(cases.items()))}


def recorded_dataset(run_dir):
    """The run's dataset.json (`dataset_record`), or None for a run written before runs remembered it.

    Raises:
        ConfigError: naming the file when it is not such a record.
    """
    path = RunFolder(run_dir).dataset
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            record = json.load(stream)
    except ValueError as error:  # UnicodeDecodeError included
        raise ConfigError(f"{path}: not valid JSON ({first_line(error)})") from None
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


def first_line(error):
    """The first line of an error's text, or its class name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
