"""The command line as a user's terminal sees it."""

import os
import subprocess
import sys

import pytest
from side_by_side import finish_all


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    return {**env, **changes}


XLA_CODE = ("from bratskeras.cli.quiet import import_tensorflow_quietly\n"
            "import_tensorflow_quietly()\n"
            "import tensorflow as tf\n"
            "print(float(tf.function(lambda x: x * 2.0, jit_compile=True)(tf.constant(1.0))))\n")
TERMINALS = {  # name: (command, environment); the user's TF_CPP_MIN_LOG_LEVEL unset unless given
    "models": ([sys.executable, "-m", "bratskeras.cli", "models"], _env()),
    "summary of an unknown model": ([sys.executable, "-m", "bratskeras.cli", "summary", "unet-9000"], _env()),
    "xla quiet": ([sys.executable, "-c", XLA_CODE], _env()),
    "xla asked": ([sys.executable, "-c", XLA_CODE], _env(TF_CPP_MIN_LOG_LEVEL="0")),
}


@pytest.fixture(scope="module")
def terminals():
    """{name: CompletedProcess} of every TERMINALS command, all started at once.

    Each is mostly a TensorFlow import (~7 s of one core), so side by side
    they take about half as long on 2 cores as one after the other.
    """
    started = {name: subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, (command, env) in TERMINALS.items()}
    return finish_all(started)


def test_tensorflow_start_up_banner_is_not_printed(terminals):
    result = terminals["models"]
    assert result.returncode == 0
    assert "340,596" in result.stdout
    assert "oneDNN custom operations" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr


def test_errors_still_reach_stderr_after_the_quiet_import(terminals):
    result = terminals["summary of an unknown model"]
    assert result.returncode == 1
    assert "Error: unknown model 'unet-9000'" in result.stderr


def test_help_does_not_import_tensorflow():
    code = ("import sys; from bratskeras.cli import cli; "
            "assert 'tensorflow' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.stdout.strip() == "ok", result.stderr


def test_listing_the_pretrained_models_does_not_import_tensorflow():
    code = ("import sys; from bratskeras.cli import cli; cli.main(['pretrained'], standalone_mode=False); "
            "cli.main(['pretrained', '--json'], standalone_mode=False); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "ok", result.stderr


def test_tensorflow_info_lines_after_start_up_are_hidden_unless_asked_for(terminals):
    """XLA's service start (first compiled augmentation in every fit) printed 3 INFO lines."""
    quiet = terminals["xla quiet"]
    assert quiet.stdout.strip() == "2.0" and "XLA service" not in quiet.stderr, quiet.stderr
    asked = terminals["xla asked"]
    assert "XLA service" in asked.stderr  # the user's own level is kept
