"""Importing TensorFlow without its start-up noise on the terminal, for the CLI and the Python API.

TensorFlow 2.21 prints absl/oneDNN/CUDA-stub lines to stderr while it is
imported, before any logging setting applies (TF_CPP_MIN_LOG_LEVEL does not
silence them), and its first device listing prints a "failed call to
cuInit" error line on machines without a GPU. `import_tensorflow_quietly`
imports it, and lists the devices once, with the process's stderr pointed
at /dev/null for that moment (TensorFlow remembers the listing, so later
calls print nothing); an import that fails still raises, and everything
after it is shown as usual.

Who calls it: every CLI command that uses TensorFlow (bratskeras.cli.quiet),
and the Python API on its first use of Keras (`bratskeras.build_model`,
`bratskeras.load_model`, `import bratskeras.models`). `import bratskeras`
alone imports no TensorFlow.

The one setting it makes: TF_CPP_MIN_LOG_LEVEL=1 when the variable is not
set (a value the user set, 0 included, is left as it is), read once when
TensorFlow loads: it hides the INFO lines of TensorFlow's C++ runtime (the
XLA service starting, three lines in every `fit`); warnings and errors still
show. It is not set when TensorFlow was imported before bratskeras touched
it: TensorFlow has read its settings then, and they are the caller's.
"""

import contextlib
import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def import_tensorflow_quietly():
    """Imports tensorflow and keras, and lists the GPUs once, with file descriptor 2 muted."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(LOG_LEVEL_VARIABLE, "1")  # read once, when TensorFlow loads
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


@contextlib.contextmanager
def filtered_stderr(noise):
    """Runs the block with file descriptor 2 captured, then shows every captured line not matching `noise`.

    For C++ libraries (the LiteRT converter and interpreter) that print known,
    harmless lines straight to stderr, where no Python or TF_CPP setting
    reaches them once TensorFlow has loaded. Only lines matching one of the
    `noise` regexes are dropped: anything else they print, a real error
    included, is shown once the block ends (raising or not).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not any(re.search(pattern, line) for pattern in noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
