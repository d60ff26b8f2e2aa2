"""The package as a user gets it from `pip install .`, and the private Keras behaviour it leans on.

The rest of the suite imports bratskeras from the source tree, so it cannot
see a module or data file that the wheel leaves out. Here a wheel is built,
installed into a fresh virtual environment, and the CLI and every module are
run from it with no source tree on sys.path.
"""

import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest
from side_by_side import finish_all

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE_MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "bratskeras").rglob("*.py")
)
SOURCE_DATA = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "bratskeras" / "reference").glob("*.json"))
# Every shipped pretrained model's files, and a model folder added to the copy the wheel is built from,
# so the package-data patterns are checked whether or not a model is shipped yet.
SHIPPED_MODEL_FILES = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "bratskeras" / "pretrained").glob("*/*")
                             if path.parent.name != "__pycache__")
ADDED_MODEL = "packaging-test"

IMPORT_EVERYTHING = """
import importlib, sys
import bratskeras
assert bratskeras.__file__.startswith(sys.prefix), bratskeras.__file__
for name in sys.argv[1:]:
    if not name.endswith("__main__"):
        importlib.import_module(name)
print("imported", len(sys.argv) - 1)
"""
# Loads pretrained:<argv[1]> from the installed package: prints its folder and parameter count.
LOAD_PRETRAINED = """
import sys
import bratskeras
from bratskeras import pretrained
print(pretrained.resolve("pretrained:" + sys.argv[1]), bratskeras.load_model("pretrained:" + sys.argv[1]).count_params())
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip install .` would build, from a copy without setuptools' stale build/ folder."""
    from model_cards import write_untrained_model

    source = tmp_path_factory.mktemp("source") / "bratskeras"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", ".tox", ".venv"))
    write_untrained_model(source / "bratskeras" / "pretrained" / ADDED_MODEL)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(source)], check=True, capture_output=True, text=True)
    (path,) = out.glob("bratskeras-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """A fresh venv holding only the wheel; the dependencies come from this interpreter's site-packages.

    A .pth line adds those folders to sys.path without running their own .pth
    files, so an editable install of the source tree there stays invisible.
    """
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    dependencies = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    pathlib.Path(purelib, "dependencies.pth").write_text("\n".join(dict.fromkeys(dependencies)) + "\n")
    # pip's --python (pip >= 22.3) installs into the venv without a pip of its own there.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, text=True)
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return env_dir, environment


def _start(command, installed, cwd):
    env_dir, environment = installed
    environment = {**environment, "PATH": f"{env_dir / 'bin'}{os.pathsep}{environment.get('PATH', '')}"}
    return subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _results(processes):
    """CompletedProcess of each started process, in order."""
    return list(finish_all(dict(enumerate(processes)), timeout=600).values())


def test_wheel_holds_every_module_and_the_reference_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [m for m in SOURCE_MODULES if f"{m.replace('.', '/')}.py" not in names
               and f"{m.replace('.', '/')}/__init__.py" not in names]
    assert not missing, f"the wheel leaves out {missing}"
    assert "bratskeras/training/__init__.py" in names
    assert [d for d in SOURCE_DATA if d not in names] == []
    assert SOURCE_DATA, "no reference tables found in the source tree"
    assert [f for f in SHIPPED_MODEL_FILES if f not in names] == []
    added = [f"bratskeras/pretrained/{ADDED_MODEL}/{f}" for f in ("best.keras", "config.json", "card.json")]
    assert [f for f in added if f not in names] == []


def test_installed_wheel_runs_the_cli_and_imports_every_module(installed, tmp_path):
    env_dir = installed[0]
    # Three independent processes, started together: two of them import TensorFlow (~7 s of one
    # core each), so on 2 cores they run side by side.
    models, fit_help, imported, listed, loaded = _results([
        _start(["bratskeras", "models"], installed, tmp_path),
        _start(["bratskeras", "fit", "--help"], installed, tmp_path),
        _start([str(env_dir / "bin" / "python"), "-c", IMPORT_EVERYTHING, *SOURCE_MODULES], installed, tmp_path),
        _start(["bratskeras", "pretrained", "--json"], installed, tmp_path),
        _start([str(env_dir / "bin" / "python"), "-c", LOAD_PRETRAINED, ADDED_MODEL], installed, tmp_path),
    ])
    assert models.returncode == 0, models.stderr[-2000:]
    assert "lightweight-unet" in models.stdout and "340,596" in models.stdout
    assert fit_help.returncode == 0 and "--time-limit" in fit_help.stdout, fit_help.stderr[-2000:]
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert f"imported {len(SOURCE_MODULES)}" in imported.stdout
    # The shipped models are package data read from the installed package, not from a source tree.
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert ADDED_MODEL in [card["name"] for card in json.loads(listed.stdout)]
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[0].startswith(str(env_dir)) and int(loaded.stdout.split()[1]) > 0


# --------------------------------------------------------------------------- private Keras behaviour

def _private_api_problems():
    """What bratskeras uses beyond Keras' and LiteRT's public API, and whether it is still there."""
    import inspect

    import keras

    problems = []
    for name, user in (("_symbolic_build", "training/fit.py:_build_before_fit"),
                       ("_maybe_symbolic_build", "training/fit.py:_build_before_fit")):
        method = getattr(keras.Model, name, None)
        if method is None:
            problems.append(f"keras {keras.__version__} has no Model.{name}, which bratskeras/{user} works "
                            "around (multi-worker metric build); re-check the workaround and the keras "
                            "upper bound in setup.cfg")
        elif "data_batch" not in inspect.signature(method).parameters:
            problems.append(f"keras {keras.__version__}: Model.{name} no longer takes data_batch "
                            f"(used by bratskeras/{user})")
    import importlib

    from bratskeras.data.model_files import TFLITE_SCHEMA_MODULES

    if not hasattr(keras.export.ExportArchive(), "_tf_trackable"):
        problems.append(f"keras {keras.__version__}: ExportArchive has no _tf_trackable, the SavedModel root that "
                        "bratskeras/export/writers.py:save_graph attaches the input contract asset to")
    # TensorFlow's own copy, not only ai-edge-litert's fallback: TensorFlow is what setup.cfg pins.
    try:
        schema = importlib.import_module(TFLITE_SCHEMA_MODULES[0])
    except ImportError:
        schema = None
    missing = [name for name in ("Model", "ModelT", "BufferT", "MetadataT") if not hasattr(schema, name)]
    if missing:
        problems.append(f"{TFLITE_SCHEMA_MODULES[0]} is gone or lacks {missing}: bratskeras/data/contract.py writes and "
                        "reads the LiteRT input contract with it; re-check it and the tensorflow upper bound")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return problems
    if not hasattr(Interpreter, "_get_ops_details"):
        problems.append("ai_edge_litert's Interpreter has no _get_ops_details, which "
                        "bratskeras/export/litert.py:tflite_ops uses to list a model's operators")
    return problems


def test_private_keras_methods_bratskeras_works_around_still_exist():
    problems = _private_api_problems()
    assert not problems, "\n".join(problems)


def test_dependency_upper_bounds_cover_the_private_behaviour():
    """The versions that carry the workarounds are bounded above, so an upgrade is a decision."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requires = {line.split(">")[0].split("<")[0].strip(): line.strip()
                for line in config["options"]["install_requires"].strip().splitlines()}
    assert "<" in requires["keras"] and "<" in requires["tensorflow"], requires
