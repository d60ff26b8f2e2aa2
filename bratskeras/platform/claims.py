"""Claims on output folders: one writer per folder at a time, and a claimed folder replaced whole.

An output folder is claimed by one writer at a time (`claim_folder`): a
second bratskeras command writing into it is refused, and the claim ends
with its process, even after a kill -9. The claimer removes the hidden
temporary files (bratskeras.platform.outputs.temporary_sibling) that killed
writers left there. A claimed folder whose whole content is rebuilt (synth's
dataset) is built in a staging folder and published in its place
(`staging_folder`, `publish_folder`), its claim carried across.
"""

import contextlib
import fcntl
import json
import os
import socket
import threading

from bratskeras.core.errors import OutputError, OutputExistsError
from bratskeras.platform.outputs import (
    TEMPORARY_RE,
    ensure_writable_folder,
    names_target,
    remove_path,
    swap_folder,
    temporary_sibling,
)

# Held (flock) by the one process writing into a folder; it says which one.
CLAIM_FILE = ".bratskeras-claim"

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

    Only names `temporary_sibling` makes (and, with `name`, only those of a
    target called `name`), and only while this process claims the writing
    (`claim_folder`): a temporary whose writer still runs is never touched.
    """
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = TEMPORARY_RE.match(entry)
        if match is None or (name is not None and match["name"] != name) or not _process_gone(int(match["pid"])):
            continue
        path = os.path.join(folder, entry)
        try:
            remove_path(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def staging_folder(folder):
    """A new empty hidden folder beside `folder` in which to build its replacement (`publish_folder`)."""
    staging = temporary_sibling(folder)
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
    with names_target(folder):
        swap_folder(staging, folder, carried=(CLAIM_FILE,))
