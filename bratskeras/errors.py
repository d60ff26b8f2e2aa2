"""Exceptions that the CLI turns into one-line messages.

Library code raises these (or ValueError for bad arguments); `bratskeras.cli`
prints `error: <message>` and exits non-zero instead of showing a traceback.
Every message names the file, case or argument that was wrong.
"""


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
