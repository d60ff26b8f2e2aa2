"""Commands that use TensorFlow import it first, without its start-up noise (bratskeras.platform.quiet).

The CLI owns its process, so it also takes bratskeras.platform.quiet's one setting
(TF_CPP_MIN_LOG_LEVEL=1 unless the user set a level).
"""

import functools

from bratskeras.platform.quiet import import_tensorflow_quietly


def needs_tensorflow(command):
    """Decorator for a click callback that uses TensorFlow."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        import_tensorflow_quietly()
        return command(*args, **kwargs)

    return wrapper
