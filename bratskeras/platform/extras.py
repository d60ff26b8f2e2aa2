"""The optional extras (setup.cfg's [options.extras_require]) and the one check that names them.

Each extra is listed with the modules it installs and what in bratskeras
needs each; every command checks the extras it needs before any work (before
a model loads or a file is written), so a missing one is one line naming
the pip command instead of a ModuleNotFoundError traceback minutes in.

    >>> require_extra("onnx", "export as onnx")  # doctest: +SKIP
    ConfigError: export as onnx needs the 'onnx' extra (tf2onnx is not installed): pip install "bratskeras[onnx]"

Modules are found with importlib.util.find_spec, without importing them
(tf2onnx imports TensorFlow; nilearn could download), so a check costs
nothing. A module set to None in sys.modules (how tests hide one) counts as
missing, as it would for `import`.
"""

import importlib.util

from bratskeras.core.errors import ConfigError

# extra -> {importable module: what needs it}. The pip names are in setup.cfg.
EXTRAS = {
    "anatomy": {"nilearn": "anatomy phantoms (the MNI152 template inside nilearn's wheel): synth --kind anatomy, "
                           "the fit demo"},
    "onnx": {"tf2onnx": "export --format onnx (the conversion)",
             "onnx": "export --format onnx (input/output names, the input contract)",
             "onnxruntime": "predict on a .onnx model, export --format onnx (its check)"},
    "litert": {"ai_edge_litert": "predict on a .tflite model, export --format tflite (its check)"},
}


def install_command(name):
    """The pip command that installs extra `name`, e.g. pip install "bratskeras[onnx]"."""
    return f'pip install "bratskeras[{name}]"'


def missing_modules(name, modules=None):
    """The modules of extra `name` (all, or those in `modules`) that are not installed, in table order."""
    table = EXTRAS[name]
    wanted = table if modules is None else modules
    unknown = [module for module in wanted if module not in table]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not in the {name!r} extra ({', '.join(table)})")
    return [module for module in table if module in wanted and _find(module) is None]


def require_extra(name, what, modules=None):
    """Refuses `what` in one line when extra `name` (or the listed `modules` of it) is not installed.

    Args:
        name: a key of EXTRAS.
        what: what needs it, as the start of the message ("export as onnx",
            "runs/x/best.onnx: an ONNX model").
        modules: the modules of the extra that `what` needs; default all
            (predict on a .onnx needs onnxruntime only).

    Raises:
        ConfigError: `<what> needs the '<name>' extra (<module> is not
            installed): pip install "bratskeras[<name>]"`.
    """
    missing = missing_modules(name, modules)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"{what} needs the '{name}' extra ({', '.join(missing)} {verb} not installed): "
                          f"{install_command(name)}")


def _find(module):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent that fails to import, or a module without a spec
        return None
