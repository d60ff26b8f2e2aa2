"""Checks shared by the CLI fault tests: one-line errors and folder snapshots."""

import os


def error_lines(output):
    """The lines of `output` that start with "Error"."""
    return [line for line in output.splitlines() if line.startswith("Error")]


def one_line_error(result, *needles):
    """The one "Error" line of a refused click command (exit 1, no traceback), holding every needle."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1, result.output
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


def only_line(result):
    """The only non-empty output line of a refused click command (exit 1)."""
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def tree(folder):
    """{relative path: bytes, or None for a folder} of everything under `folder`."""
    found = {}
    for parent, folders, files in os.walk(folder):
        for name in folders:
            found[os.path.relpath(os.path.join(parent, name), folder)] = None
        for name in files:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, folder)] = open(path, "rb").read()
    return found
