"""Where outputs go: atomic writes, the `--overwrite` rule, and output errors that name the target.

The rules every writer in bratskeras follows through these helpers:

- A file or folder appears at its final path only complete: it is written
  under a temporary name beside the target and renamed onto it
  (`os.replace` and `os.rename` are atomic on POSIX), so a crash, a kill -9
  or a full disk never leaves a partial artefact at the target.
- `overwrite` replaces only an artefact of the kind the command writes
  (bratskeras.platform.artefacts.ArtefactKind), never a folder tree or file
  it did not create, and only after the new artefact has passed its check;
  a failed check leaves the old one in place.
- An output folder is checked for writability before any work starts.
- An OSError raised while writing names the target, not the temporary name.

An output folder is claimed by one writer at a time: bratskeras.platform.claims.
"""

import contextlib
import errno
import os
import re
import shutil
import uuid

from bratskeras.core.errors import OutputError, OutputExistsError

# `temporary_sibling`'s names: .tmp-<pid>-<8 hex>-<target name> (a folder's claimer removes a dead writer's).
TEMPORARY_RE = re.compile(r"^\.tmp-(?P<pid>[0-9]+)-[0-9a-f]{8}-(?P<name>.+)$")


def temporary_sibling(path, tag="tmp"):
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


def remove_path(path):
    """Removes a file, link or folder tree at `path`, if any."""
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
        tmp = temporary_sibling(path)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                remove_path(tmp)


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
    tmp = temporary_sibling(path)
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
            remove_path(tmp)


def _publish(tmp, path):
    """Moves `tmp` onto `path`; a folder already at `path` is kept until the new one is in place (`swap_folder`)."""
    if not os.path.isdir(path) or os.path.islink(path):
        os.replace(tmp, path)
        return
    swap_folder(tmp, path)


def swap_folder(new, folder, carried=()):
    """Puts the folder `new` at `folder`; what `folder` held stays whole until the new one is in place.

    Two renames: `folder` to a hidden `.old-` sibling, then `new` to
    `folder`; if the second fails, the old folder is put back. The entries
    named in `carried` (a claim file) are moved from `folder` into `new`
    first, so they stay inside whatever is at `folder` throughout, and go
    back with the old folder on failure. The old copy is removed last. An
    absent `folder` is a plain rename.
    """
    for name in carried:
        if os.path.lexists(os.path.join(folder, name)):
            os.rename(os.path.join(folder, name), os.path.join(new, name))
    if not os.path.lexists(folder):
        os.rename(new, folder)
        return
    old = temporary_sibling(folder, tag="old")
    os.rename(folder, old)
    try:
        os.rename(new, folder)
    except OSError:
        os.rename(old, folder)
        for name in carried:
            if os.path.lexists(os.path.join(new, name)):
                os.rename(os.path.join(new, name), os.path.join(folder, name))
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

