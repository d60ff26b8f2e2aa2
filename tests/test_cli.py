"""The command line as a user's terminal sees it."""

import os
import subprocess
import sys


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "bratskeras.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_tensorflow_start_up_banner_is_not_printed():
    result = _run("models")
    assert result.returncode == 0
    assert "340,596" in result.stdout
    assert "oneDNN custom operations" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr


def test_errors_still_reach_stderr_after_the_quiet_import():
    result = _run("summary", "unet-9000")
    assert result.returncode == 1
    assert "Error: unknown model 'unet-9000'" in result.stderr


def test_help_does_not_import_tensorflow():
    code = ("import sys; from bratskeras.cli import cli; "
            "assert 'tensorflow' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.stdout.strip() == "ok", result.stderr


def test_tensorflow_info_lines_after_start_up_are_hidden_unless_asked_for():
    """XLA's service start (first compiled augmentation in every fit) printed 3 INFO lines."""
    code = ("from bratskeras.cli.quiet import import_tensorflow_quietly\n"
            "import_tensorflow_quietly()\n"
            "import tensorflow as tf\n"
            "print(float(tf.function(lambda x: x * 2.0, jit_compile=True)(tf.constant(1.0))))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert quiet.stdout.strip() == "2.0" and "XLA service" not in quiet.stderr, quiet.stderr
    asked = subprocess.run([sys.executable, "-c", code], env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"},
                           capture_output=True, text=True, timeout=120)
    assert "XLA service" in asked.stderr  # the user's own level is kept
