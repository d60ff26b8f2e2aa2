"""Waiting for subprocesses that tests start together (each is mostly a TensorFlow import, ~1 core)."""

import subprocess


def finish_all(started, timeout=300):
    """{name: CompletedProcess} of `started` ({name: Popen} with text pipes); any still running at an error is killed."""
    finished = {}
    try:
        for name, process in started.items():
            stdout, stderr = process.communicate(timeout=timeout)
            finished[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return finished
