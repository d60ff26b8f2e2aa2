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
"""

import contextlib
import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Callable

from bratskeras.errors import OutputError, OutputExistsError


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
    """What a command writes at a path, so `overwrite` can tell it from anything else.

    Attributes:
        name: shown in messages ("LiteRT model", "SavedModel folder").
        is_folder: the artefact is a folder (SavedModel) rather than a file.
        recognise: callable(path) -> True when an existing path holds this kind.
    """

    name: str
    is_folder: bool
    recognise: Callable


def _has_magic(offset, magic):
    def recognise(path):
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as stream:
            return stream.read(offset + len(magic))[offset:] == magic
    return recognise


def _is_keras_archive(path):
    import zipfile

    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "config.json" in archive.namelist()


KINDS = {
    "saved_model": ArtefactKind("SavedModel folder", True,
                                lambda p: os.path.isfile(os.path.join(p, "saved_model.pb"))),
    # A LiteRT flatbuffer carries the identifier "TFL3" at byte 4.
    "tflite": ArtefactKind("LiteRT model", False, _has_magic(4, b"TFL3")),
    # ONNX is a bare protobuf without a magic number: the suffix is all there is.
    "onnx": ArtefactKind("ONNX model", False, lambda p: os.path.isfile(p) and p.endswith(".onnx")),
    "keras": ArtefactKind(".keras model", False, _is_keras_archive),
}


def refuse_existing(path, overwrite, kind=None):
    """Raises unless `path` may be written: absent, or `overwrite` and of `kind`.

    Args:
        path: the target.
        overwrite: the user asked to replace an existing artefact.
        kind: ArtefactKind; None means any regular file may be replaced
            (never a folder).

    Raises:
        OutputExistsError: `path` exists and `overwrite` is False, or it holds
            something other than the artefact the command writes.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")
    recognised = kind.recognise(path) if kind is not None else os.path.isfile(path)
    if not recognised or os.path.islink(path):
        what = kind.name if kind is not None else "file"
        raise OutputExistsError(f"{path}: exists and is not a {what} (--overwrite replaces only the "
                                "artefact this command writes); choose another output or remove it yourself")


def write_artefact(path, write, check=None, kind=None, overwrite=False):
    """Writes an artefact under a temporary name, checks it, then puts it at `path`.

    Args:
        path: the target file or folder.
        write: callable(tmp) writing the artefact at the temporary path `tmp`
            (same folder and name ending as `path`; absent beforehand).
        check: optional callable(tmp) that raises if the artefact is bad; it
            runs before anything at `path` is touched.
        kind: ArtefactKind of the artefact (None: a plain file).
        overwrite: replace an existing artefact of the same kind.

    Returns:
        whatever `check` returned (None without a check).

    Raises:
        OutputExistsError: see `refuse_existing`.
        whatever `write` or `check` raise; the temporary artefact is removed
        and an existing one at `path` is left as it was.
    """
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
