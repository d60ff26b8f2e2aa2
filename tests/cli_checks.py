"""What several test files share: running the CLI, one-line errors, folder snapshots, recorded batches, a run folder."""

import os

from click.testing import CliRunner


def invoke(*args):
    """click's result of `bratskeras ARGS` run in this process (arguments made strings)."""
    from bratskeras.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def subprocess_env(log_level="3", **extra):
    """os.environ for a child Python: this checkout first on PYTHONPATH, TensorFlow's log level, `extra`."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": log_level,
            "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]), **extra}


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


def tree(folder, files_only=False):
    """{relative path: bytes, or None for a folder} of everything under `folder` (only files: `files_only`)."""
    found = {}
    for parent, folders, files in os.walk(folder):
        for name in () if files_only else folders:
            found[os.path.relpath(os.path.join(parent, name), folder)] = None
        for name in files:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, folder)] = open(path, "rb").read()
    return found


def record_batches(monkeypatch):
    """A list that receives the (B, d, h, w, C) shape of every batch any predictor's network is run on."""
    from bratskeras.predict import tiling

    seen = []
    forward = tiling._network_function

    def recording(model):
        function = forward(model)
        return lambda batch: (seen.append(tuple(batch.shape)), function(batch))[1]

    monkeypatch.setattr(tiling, "_network_function", recording)
    return seen


def write_run_folder(run, spacing=(3, 3, 3), seed=2):
    """A run folder as fit leaves it (config.json and best.keras by fit's own writers): a 4-filter
    lightweight-unet, 16^3 patches, `spacing` mm."""
    import keras

    from bratskeras.config.train_config import resolve_config
    from bratskeras.models import build_model
    from bratskeras.models.saving import inference_model
    from bratskeras.training import run_dir
    from bratskeras.training.fit import run_contract

    os.makedirs(run)
    config = resolve_config("lightweight2020", {"spacing": spacing, "patch_size": (16, 16, 16),
                                                "model_overrides": {"base_filters": 4}})
    (run / "config.json").write_text(config.to_json())
    keras.utils.set_random_seed(seed)
    network = build_model("lightweight-unet", base_filters=4)
    run_dir.atomic_save_model(inference_model(network), str(run / "best.keras"), run_contract(config, network))
    return run


def deny_writes(monkeypatch, folder):
    """os.access answers "not writable" for `folder` (as for a read-only folder; root could write anywhere)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if os.path.abspath(path) == str(folder)
                        and mode & os.W_OK else real_access(path, mode, **kw))
