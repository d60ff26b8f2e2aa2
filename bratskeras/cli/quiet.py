"""Importing TensorFlow without its start-up noise on the terminal.

TensorFlow 2.21 prints absl/oneDNN/CUDA-stub lines to stderr while it is
imported, before any logging setting applies (TF_CPP_MIN_LOG_LEVEL does not
silence them), and its first device listing prints a "failed call to
cuInit" error line on machines without a GPU. Commands that use TensorFlow
import it here first, and list the devices once, with the process's stderr
pointed at /dev/null (TensorFlow remembers the listing, so later calls print
nothing); an import that fails still raises, and everything after it is
shown as usual. Later INFO lines of TensorFlow's C++ runtime (the XLA
service starting when augmentation is first compiled, three lines in every
`fit`) are hidden by TF_CPP_MIN_LOG_LEVEL=1 unless the user set a level:
the CLI owns its process, and warnings and errors still show.
"""

import functools
import os


def import_tensorflow_quietly():
    """Imports tensorflow and keras, and lists the GPUs once, with file descriptor 2 muted."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # read once, when TensorFlow loads
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow

        # Listing physical devices does not start the runtime, so logical
        # devices (tests, tf.distribute) can still be configured afterwards.
        tensorflow.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def needs_tensorflow(command):
    """Decorator for a click callback that uses TensorFlow."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        import_tensorflow_quietly()
        return command(*args, **kwargs)

    return wrapper
