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
