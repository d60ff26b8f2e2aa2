"""The package's shape: stage folders in one order, imports only downwards, no module over 450 lines.

docs/architecture.md draws the same picture; these checks keep it true as code moves.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "bratskeras"

# The stages from the bottom up: a module may import its own stage and those below it, never above.
# Stages on one line do not import each other.
STAGES = (
    ("core",),                       # the vocabulary: label schemes, targets, errors, the model table, run files
    ("platform", "pretrained"),      # the machine and the files; the shipped models' catalogue
    ("data",),                       # BraTS folders -> preprocessed arrays -> tf.data; a model's input contract
    ("config",),                     # a run's configuration (TrainConfig, presets, config.json)
    ("models", "synth"),             # networks and the Keras objects they carry; generated heads
    ("predict", "evaluate"),         # a trained model on new cases; scores against references
    ("training",),                   # fit: data + models, held-out scored with predict and evaluate
    ("export", "bench"),             # deployable files; speed measurements
    ("cli",),                        # the commands
)
LEVEL = {stage: level for level, names in enumerate(STAGES) for stage in names}
MAX_LINES = 450


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.relative_to(PACKAGE).parts


def _stage(parts):
    """The stage of a module path inside bratskeras (None for bratskeras/__init__.py)."""
    return parts[0] if len(parts) > 1 else None


def _imported_stages(path):
    """(line, stage) of every bratskeras import in a file, at module level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bratskeras"):
            names = [node.module] if node.module != "bratskeras" else [f"bratskeras.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("bratskeras")]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) > 1 and parts[1] in LEVEL:
                yield node.lineno, parts[1]


def test_every_folder_is_a_known_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LEVEL)


@pytest.mark.parametrize("path,parts", list(_modules()), ids=lambda x: "/".join(x) if isinstance(x, tuple) else "")
def test_imports_run_only_down_the_stages(path, parts):
    stage = _stage(parts)
    if stage is None:
        return
    upward = [f"{'/'.join(parts)}:{line} imports {other}" for line, other in _imported_stages(path)
              if other != stage and LEVEL[other] >= LEVEL[stage]]
    assert not upward


def test_no_module_is_longer_than_the_limit():
    long = [f"{'/'.join(parts)}: {len(path.read_text().splitlines())}" for path, parts in _modules()
            if len(path.read_text().splitlines()) > MAX_LINES]
    assert not long
