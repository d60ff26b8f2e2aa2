"""Exceptions that the CLI turns into one-line messages.

Library code raises these (or ValueError for bad arguments); `bratskeras.cli`
prints `error: <message>` and exits non-zero instead of showing a traceback.
Every message names the file, case or argument that was wrong.
"""

import os


class BratsKerasError(Exception):
    """Base class for errors a user can fix (bad data, bad flags, bad files)."""


class DataError(BratsKerasError):
    """A dataset, case or file on disk is missing, corrupt or inconsistent."""


class ModelError(BratsKerasError):
    """An unknown model name, an impossible input shape or a foreign model file."""


class ConfigError(BratsKerasError):
    """A configuration or flag combination that cannot be honoured."""


class OutputExistsError(BratsKerasError):
    """An output path exists and overwriting it was not requested."""


class ExportError(BratsKerasError):
    """An exported artefact disagrees with its Keras model beyond tolerance."""


class OutputError(BratsKerasError):
    """An output location that cannot be created or written."""


def user_message(error):
    """The one line a user sees for `error`: an OSError names its file, others give their first line.

        >>> user_message(PermissionError(13, "Permission denied", "out/a.nii.gz"))
        'out/a.nii.gz: Permission denied'
    """
    if isinstance(error, OSError) and error.filename is not None:
        target = os.fspath(error.filename)
        if error.filename2 is not None:
            target += f" -> {os.fspath(error.filename2)}"
        return f"{target}: {error.strerror or type(error).__name__}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
