"""Where outputs go: the one place that writes, replaces and checks output paths.

The rules every writer in bratskeras follows through these helpers:

- A file or folder appears at its final path only complete: it is written
  under a temporary name beside the target and renamed onto it
  (`os.replace` and `os.rename` are atomic on POSIX), so a crash, a kill -9
  or a full disk never leaves a partial artefact at the target.
- `overwrite` replaces only an artefact of the kind the command writes
  (`ArtefactKind`), never a folder tree or file it did not create, and only
  after the new artefact has passed its check; a failed check leaves the old
  one in place.
- An output folder is checked for writability before any work starts.
- An OSError raised while writing names the target, not the temporary name.
- An output folder is claimed by one writer at a time (`claim_folder`): a
  second bratskeras command writing into it is refused, and the claim ends
  with its process, even after a kill -9. The claimer removes the hidden
  temporary files that killed writers left there.
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

from bratskeras.core.errors import OutputError, OutputExistsError

# Held (flock) by the one process writing into a folder; it says which one.
CLAIM_FILE = ".bratskeras-claim"
# `_temporary_sibling`'s names: .tmp-<pid>-<8 hex>-<target name>.
_TEMPORARY_RE = re.compile(r"^\.tmp-(?P<pid>[0-9]+)-[0-9a-f]{8}-(?P<name>.+)$")


def _temporary_sibling(path, tag="tmp"):
    """A fresh hidden name beside `path` that keeps `path`'s own name as its end (and so its suffix)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")


@contextlib.contextmanager
def names_target(path):
    """Re-raises an OSError from the block with `path` as its filename.

    Writers fail on their temporary name (or with none, as a full disk's
    ENOSPC from write()); the user knows only the target. The class is kept
    (OSError(errno, ...) builds PermissionError, FileNotFoundError, ...).
    """
    try:
        yield
    except OSError as error:
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror or os.strerror(error.errno), os.fspath(path)) from None


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path`, renamed onto it when the block succeeds.

    Writers that take a path (nibabel, Keras, matplotlib, open) write through
    it, so a crash never leaves a partial file at `path`. The temporary name
    ends with `path`'s own name, so writers that pick the format from the
    suffix (.nii.gz, .keras, .png) still do, and it is created by the
    writer, so the file gets the usual permissions (mkstemp's would be
    owner-only). The folder is created. An OSError names `path`.

        >>> with atomic_path("run/config.json") as tmp:
        ...     open(tmp, "w").write("{}")
    """
    with names_target(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = _temporary_sibling(path)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                _remove(tmp)


@dataclass(frozen=True)
class ArtefactKind:
    """What a command writes at a path, so `overwrite` can tell it from anything else (an input above all).

    Attributes:
        name: shown in messages ("LiteRT model", "SavedModel folder").
        is_folder: the artefact is a folder (SavedModel) rather than a file.
        problem: callable(path) -> None when an existing `path` holds this
            kind, judged by its content, else a few words saying why not
            ("its data are not integers", "foreign entries: notes.txt").
    """

    name: str
    is_folder: bool
    problem: Callable

    def recognise(self, path):
        """True when the existing `path` holds this kind of artefact."""
        return self.problem(os.fspath(path)) is None


def _regular_file_problem(path):
    if os.path.islink(path) or not os.path.isfile(path):
        return "not a regular file"
    return None


def _magic_problem(offset, magic, what):
    """problem() of a file whose bytes at `offset` are `magic`."""
    def problem(path):
        not_file = _regular_file_problem(path)
        if not_file:
            return not_file
        with open(path, "rb") as stream:
            if stream.read(offset + len(magic))[offset:] != magic:
                return f"its content is not {what}"
        return None
    return problem


def _keras_archive_problem(path):
    import zipfile

    not_file = _regular_file_problem(path)
    if not_file:
        return not_file
    if not zipfile.is_zipfile(path):
        return "not a zip archive"
    with zipfile.ZipFile(path) as archive:
        return None if "config.json" in archive.namelist() else "a zip archive without a Keras config.json"


def _onnx_problem(path):
    return _regular_file_problem(path) or (None if path.endswith(".onnx") else "not an .onnx file")


def text_file_kind(name, first_line):
    """ArtefactKind of a text file (a CSV) whose first line starts with `first_line` (its header)."""
    def problem(path):
        not_file = _regular_file_problem(path)
        if not_file:
            return not_file
        with open(path, "rb") as stream:
            head = stream.readline(len(first_line) + 1)
        if not head.startswith(first_line.encode()):
            return f"its first line is not the header {first_line.split(',')[0]},... this command writes"
        return None
    return ArtefactKind(name, False, problem)


# The entries of a SavedModel folder that bratskeras.export.exporter writes (TensorFlow's
# layout), and what its assets may hold: the input contract alone.
SAVED_MODEL_ENTRIES = {"saved_model.pb", "variables", "assets", "fingerprint.pb"}
SAVED_MODEL_ASSETS = {"bratskeras_contract.json"}  # contract.CONTRACT_FILE (contract imports TensorFlow)


def _saved_model_problem(path):
    """None for a SavedModel folder as export writes it: saved_model.pb, variables/, assets/ with our contract."""
    if os.path.islink(path) or not os.path.isdir(path):
        return "not a folder"
    entries = set(os.listdir(path))
    if "saved_model.pb" not in entries or not os.path.isdir(os.path.join(path, "variables")):
        return "no saved_model.pb and variables/"
    foreign = sorted(entries - SAVED_MODEL_ENTRIES)
    foreign += [f"variables/{e}" for e in sorted(os.listdir(os.path.join(path, "variables")))
                if not e.startswith("variables.")]
    assets = os.path.join(path, "assets")
    if os.path.isdir(assets):
        foreign += [f"assets/{e}" for e in sorted(set(os.listdir(assets)) - SAVED_MODEL_ASSETS)]
    if foreign:
        return f"it holds entries export never writes: {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}"
    return None


KINDS = {
    "saved_model": ArtefactKind("SavedModel folder", True, _saved_model_problem),
    # A LiteRT flatbuffer carries the identifier "TFL3" at byte 4.
    "tflite": ArtefactKind("LiteRT model", False, _magic_problem(4, b"TFL3", "a LiteRT flatbuffer")),
    # ONNX is a bare protobuf without a magic number: the suffix is all there is.
    "onnx": ArtefactKind("ONNX model", False, _onnx_problem),
    "keras": ArtefactKind(".keras model", False, _keras_archive_problem),
    "png": ArtefactKind("PNG image", False, _magic_problem(0, b"\x89PNG\r\n\x1a\n", "a PNG image")),
}


def refuse_existing(path, overwrite, kind):
    """Raises unless `path` may be written: absent, or `overwrite` and holding `kind`'s artefact.

    `--overwrite` replaces only what the command itself would have written,
    recognised by its content (`ArtefactKind.problem`), so an input scan, a
    notes file or a folder of someone else's is never replaced.

    Args:
        path: the target.
        overwrite: the user asked to replace an existing artefact.
        kind: ArtefactKind of what the command writes at `path`.

    Raises:
        OutputExistsError: `path` exists and `overwrite` is False, or it holds
            something other than the artefact the command writes.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")
    problem = "a symbolic link" if os.path.islink(path) else kind.problem(path)
    if problem:
        raise OutputExistsError(f"{path}: exists and is not a {kind.name} ({problem}); --overwrite replaces only "
                                "the artefact this command writes: choose another output or remove it yourself")


def write_artefact(path, write, check=None, kind=None, overwrite=False):
    """Writes an artefact under a temporary name, checks it, then puts it at `path`.

    Args:
        path: the target file or folder.
        write: callable(tmp) writing the artefact at the temporary path `tmp`
            (same folder and name ending as `path`; absent beforehand).
        check: optional callable(tmp) that raises if the artefact is bad; it
            runs before anything at `path` is touched.
        kind: ArtefactKind of the artefact (required: it decides what
            `overwrite` may replace).
        overwrite: replace an existing artefact of the same kind.

    Returns:
        whatever `check` returned (None without a check).

    Raises:
        OutputExistsError: see `refuse_existing`.
        whatever `write` or `check` raise; the temporary artefact is removed
        and an existing one at `path` is left as it was.
    """
    if kind is None:
        raise TypeError("write_artefact needs the ArtefactKind of what it writes")
    path = os.fspath(path)
    refuse_existing(path, overwrite, kind)
    with names_target(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        with names_target(path):
            write(tmp)
        result = check(tmp) if check is not None else None
        # Checked again: another process may have written `path` meanwhile.
        refuse_existing(path, overwrite, kind)
        with names_target(path):
            _publish(tmp, path)
        return result
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def _publish(tmp, path):
    """Moves `tmp` onto `path`; a folder already at `path` is kept until the new one is in place."""
    if not os.path.isdir(path) or os.path.islink(path):
        os.replace(tmp, path)
        return
    old = _temporary_sibling(path, tag="old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def ensure_writable_folder(folder):
    """Checks that `folder` is, or can be created as, a folder this process can write into.

    Nothing is created: the nearest existing ancestor must be a writable
    folder (or `folder` itself, when it exists).

    Raises:
        OutputError: one line naming `folder` and why it cannot be written.
    """
    folder = os.path.abspath(os.fspath(folder))
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"{folder}: cannot create the output folder ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder:
            raise OutputError(f"{folder}: output folder is not writable ({os.strerror(errno.EACCES)})")
        raise OutputError(f"{folder}: cannot create the output folder ({existing} is not writable: "
                          f"{os.strerror(errno.EACCES)})")


def tensorflow_os_error(error, path=None):
    """OSError for a TensorFlow file error (tf.errors.OpError: a full disk, no permission), naming `path`.

    TensorFlow reports a full disk as ResourceExhaustedError or a plain
    OpError whose message carries the C library's text; the CLI shows an
    OSError in one line, so the errno is recovered from that text.
    """
    message = getattr(error, "message", None) or str(error)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.ENOENT):
        if os.strerror(code) in message:
            return OSError(code, os.strerror(code), *([os.fspath(path)] if path is not None else []))
    first = message.splitlines()[0] if message else type(error).__name__
    return OSError(errno.EIO, first, *([os.fspath(path)] if path is not None else []))


@contextlib.contextmanager
def tensorflow_file_errors():
    """Re-raises TensorFlow's file errors from the block (a full disk, no permission) as OSError.

    Only errors about files: ResourceExhaustedError and PermissionDeniedError,
    or an OpError whose message carries a C library file error; any other
    TensorFlow error (a bug, an unsupported op) keeps its type. Used inside
    `names_target` / `write_artefact`, which name the target.
    """
    import tensorflow as tf

    file_errors = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)
    try:
        yield
    except tf.errors.OpError as error:
        about_files = isinstance(error, (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError)) or \
            any(os.strerror(code) in (error.message or "") for code in file_errors)
        if not about_files:
            raise
        raise tensorflow_os_error(error) from None


# ------------------------------------------------------------------ claims


# The folders this process holds a claim on ({real path: depth}): a command that
# claims a folder may call library code that claims it again.
_HELD = {}
_HELD_LOCK = threading.Lock()


def folder_entries(folder):
    """The names in `folder` other than its claim file, sorted: what a writer finds there."""
    return sorted(set(os.listdir(folder)) - {CLAIM_FILE})


@contextlib.contextmanager
def claim_folder(folder, command):
    """Makes this process the one writer of `folder` for the block; a second writer is refused.

    The folder is created when absent (and removed again on exit when the
    block left it empty). Its claim is an exclusive
    `fcntl.flock` on the hidden file CLAIM_FILE, which records this
    process's pid, host and `command`; the kernel drops the lock when the
    process ends, kill -9 included, so a dead writer never blocks the next
    one. The claim file is removed on exit. Claims nest within one process.
    Once claimed, temporary files (`.tmp-<pid>-...`) that writers killed
    before their rename left in the folder, or beside it for the folder
    itself, are removed when their process is gone.

        >>> with claim_folder("out", "predict"):
        ...     write_the_outputs("out")

    Raises:
        OutputExistsError: another process holds the claim (one line naming
            the folder and the holder's command and pid), or `folder` is
            not a folder.
        OutputError: it cannot be created or written.
    """
    folder = os.fspath(folder)
    key = os.path.realpath(folder)
    with _HELD_LOCK:
        nested = key in _HELD
        if nested:
            _HELD[key] += 1
    if nested:
        try:
            yield
        finally:
            with _HELD_LOCK:
                _HELD[key] -= 1
        return
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OutputExistsError(f"{folder}: exists and is not a folder")
    created = not os.path.lexists(folder)
    ensure_writable_folder(folder)
    descriptor = _lock(folder, command)
    key = os.path.realpath(folder)  # the folder exists now
    with _HELD_LOCK:
        _HELD[key] = 1
    try:
        remove_stale_temporaries(folder)
        parent, name = os.path.split(os.path.abspath(folder))
        remove_stale_temporaries(parent, name)
        yield
    finally:
        with _HELD_LOCK:
            _HELD.pop(key, None)
        _unlock(folder, descriptor)
        if created:  # a command refused before it wrote anything leaves no folder behind
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty


def _lock(folder, command, attempts=5):
    """The descriptor of `folder`'s claim file, flock-ed by this process; OutputExistsError if held."""
    path = os.path.join(folder, CLAIM_FILE)
    for _ in range(attempts):
        with names_target(folder):
            os.makedirs(folder, exist_ok=True)
            try:
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder went away meanwhile: create it again
                continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise OutputExistsError(f"{folder}: in use by {holder}; wait for it to finish or choose another "
                                    "output folder") from None
        # A holder removes the file as it releases it: a lock on a removed file claims nothing.
        if _is_current(descriptor, path):
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(record).encode(), 0)
            return descriptor
        os.close(descriptor)
    raise OutputError(f"{folder}: its claim file {CLAIM_FILE} kept changing; try again")


def _unlock(folder, descriptor):
    """Removes the claim file (still ours) and drops the lock."""
    path = os.path.join(folder, CLAIM_FILE)
    try:
        if _is_current(descriptor, path):
            os.remove(path)
    except OSError:
        pass  # a folder that became unwritable keeps a claim file; the lock still ends below
    finally:
        os.close(descriptor)


def _is_current(descriptor, path):
    """True when `path` is still the file open as `descriptor`."""
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _holder(descriptor):
    """'bratskeras predict (pid 123 on host)' from a claim file, or a general phrase while it is being written."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode())
        return f"bratskeras {record['command']} (pid {record['pid']} on {record['host']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another bratskeras command"


def _process_gone(pid):
    """True when no process `pid` runs on this machine."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def remove_stale_temporaries(folder, name=None):
    """Removes `folder`'s `.tmp-<pid>-...` files and folders whose process is gone; returns their paths.

    Only names `_temporary_sibling` makes (and, with `name`, only those of a
    target called `name`), and only while this process claims the writing
    (`claim_folder`): a temporary whose writer still runs is never touched.
    """
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY_RE.match(entry)
        if match is None or (name is not None and match["name"] != name) or not _process_gone(int(match["pid"])):
            continue
        path = os.path.join(folder, entry)
        try:
            _remove(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def staging_folder(folder):
    """A new empty hidden folder beside `folder` in which to build its replacement (`publish_folder`)."""
    staging = _temporary_sibling(folder)
    with names_target(folder):
        os.makedirs(staging)
    return staging


def publish_folder(staging, folder, last=None):
    """Puts the complete folder `staging` at `folder`, replacing what `folder` held.

    The caller claims `folder` (`claim_folder`). An empty `folder` keeps
    its identity (a working folder, a mount point): the staged entries are
    renamed into it one by one, `last` (a marker saying the content is
    complete) last. A `folder` with content is swapped whole in two renames:
    the claim file moves into the new folder first, so the claim holds
    throughout; until the second rename the old folder is whole, and if it
    fails the old folder is put back.
    """
    if os.path.isdir(folder) and not folder_entries(folder):
        names = sorted(set(os.listdir(staging)) - {CLAIM_FILE}, key=lambda name: name == last)
        for name in names:
            with names_target(os.path.join(folder, name)):
                os.rename(os.path.join(staging, name), os.path.join(folder, name))
        os.rmdir(staging)
        return
    claim = os.path.join(folder, CLAIM_FILE)
    with names_target(folder):
        if os.path.lexists(claim):
            os.rename(claim, os.path.join(staging, CLAIM_FILE))
        if not os.path.lexists(folder):
            os.rename(staging, folder)
            return
        old = _temporary_sibling(folder, tag="old")
        os.rename(folder, old)
        try:
            os.rename(staging, folder)
        except OSError:
            os.rename(old, folder)
            if os.path.lexists(os.path.join(staging, CLAIM_FILE)):
                os.rename(os.path.join(staging, CLAIM_FILE), claim)
            raise
    shutil.rmtree(old, ignore_errors=True)
