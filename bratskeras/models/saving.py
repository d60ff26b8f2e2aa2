"""Loading and saving bratskeras models, and clean inference copies for saving.

`.keras` files of bratskeras models use registered layers (PadToMultiple,
CropToReference, InstanceNormalization, NormalizedConv3D:
bratskeras.models.layers); importing this package registers them, so
`bratskeras.load_model(path)` works in a fresh process with `safe_mode=True`.
Every `.keras` bratskeras writes goes through `save_model`, which stores the
model's input contract inside it (bratskeras.data.model_files.write_keras).
"""

from pathlib import Path

import keras

from bratskeras import pretrained
from bratskeras.core.errors import ModelError
from bratskeras.core.run_folder import MODEL_FILE, RunFolder
from bratskeras.data.model_files import KERAS_ARCHIVE_CONFIG


def load_model(source):
    """Loads a bratskeras model from a `.keras` file, a run directory or a shipped model.

    Args:
        source: a `.keras` file, a run directory holding `best.keras`, or
            "pretrained:NAME" (a model shipped in bratskeras/pretrained/).

    Returns:
        keras.Model mapping (batch, D, H, W, C) to (batch, D, H, W, classes),
        uncompiled.

    Raises:
        ModelError: missing file, unknown pretrained name, not loadable with
            safe_mode=True, or not a 5-D segmentation model.
    """
    path = Path(pretrained.resolve(source))
    if path.is_dir():
        path = Path(RunFolder(path).best_model)
    if not path.is_file():
        raise ModelError(f"{source}: no such model file (expected a .keras file or a run "
                         f"directory with {MODEL_FILE})")
    # Losses and metrics are registered too, for files saved from compiled models.
    import bratskeras.models.losses  # noqa: F401
    import bratskeras.models.metrics  # noqa: F401

    _check_keras_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for foreign or corrupt files.
        # The whole first line: Keras' safe_mode refusals explain themselves in one long sentence.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path}: not a loadable bratskeras model ({first})") from None
    check_segmentation_model(model, path)
    return model


# The package name every bratskeras layer, loss and metric is registered under ("bratskeras>PadToMultiple").
CUSTOM_PACKAGE = "bratskeras"


def custom_objects():
    """{registered name: class} of every object bratskeras registers with Keras (package "bratskeras").

    For loading a bratskeras `.keras` file with plain Keras:
    `keras.saving.load_model(path, custom_objects=bratskeras.custom_objects())`
    (docs/python-api.md). Keras cannot import a package's classes by itself
    (only its own), so without `import bratskeras.models` (or this) it fails
    with "Could not locate class 'PadToMultiple'".
    """
    import bratskeras.models.layers  # noqa: F401
    import bratskeras.models.losses  # noqa: F401  (registers the losses and metrics of compiled models)
    import bratskeras.models.metrics  # noqa: F401

    return {name: obj for name, obj in keras.saving.get_custom_objects().items()
            if name.startswith(f"{CUSTOM_PACKAGE}>")}


def save_model(model, path, contract):
    """`model.save(path)` (a .keras file) with `contract` stored in it (bratskeras.data.model_files.write_keras).

    The file still loads with plain `keras.saving.load_model(path, safe_mode=True)`.
    Callers write through a temporary path (bratskeras.platform.outputs) so the final
    path only ever holds a complete file with its contract.

    Args:
        model: keras.Model.
        path: a .keras path.
        contract: bratskeras.data.contract.InputContract, or None for a model
            whose needs are unknown (nothing is stored).
    """
    from bratskeras.data.model_files import write_keras

    model.save(path)
    if contract is not None:
        write_keras(path, contract)


def _check_keras_archive(path):
    """A `.keras` file is a zip with config.json; Keras calls anything else "File not found"."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        reason = "not a zip archive" if isinstance(error, zipfile.BadZipFile) else error.strerror
        raise ModelError(f"{path}: not a .keras model file ({reason}; corrupt, truncated or another "
                         "format)") from None
    if KERAS_ARCHIVE_CONFIG not in names:
        raise ModelError(f"{path}: not a .keras model file (a zip archive without {KERAS_ARCHIVE_CONFIG})")


def check_segmentation_model(model, where):
    """Raises ModelError unless `model` maps one 5-D tensor to one 5-D tensor."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{where}: expected one input and one output, got "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    if len(model.inputs[0].shape) != 5 or len(model.outputs[0].shape) != 5:
        raise ModelError(f"{where}: not a 3-D segmentation model: input {model.inputs[0].shape}, "
                         f"output {model.outputs[0].shape}; expected (batch, D, H, W, C)")


def inference_model(model):
    """The same architecture and weights as a new, uncompiled float32 model.

    Saving it gives a clean inference `.keras`: no optimizer state, no loss,
    and float32 layers even when training ran under a mixed precision policy
    (the policy is a training choice; exporters and predict start from
    float32 and may choose their own). `keras.models.clone_model` would carry
    the compile configuration and the layers' policies along.
    """
    config = _float32_policies(model.get_config())
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _float32_policies(config):
    """A model config with every layer dtype policy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and "config" in config:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config
