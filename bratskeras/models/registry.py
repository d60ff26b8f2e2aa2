"""Model registry: names -> builder and preset arguments (plain data).

    >>> import bratskeras
    >>> model = bratskeras.build_model("lightweight-unet", input_shape=(64, 64, 64, 4))
    >>> bratskeras.list_models()[:2]
    ['flair-unet', 'lightweight-unet']
"""

from bratskeras.errors import ModelError
from bratskeras.models.flair_unet import FLAIR_UNET_FILTERS, build_flair_unet
from bratskeras.models.unet3d import build_unet3d

BUILDERS = {"flair_unet": build_flair_unet, "unet3d": build_unet3d}

MODEL_PRESETS = {
    "flair-unet": {
        "builder": "flair_unet",
        "args": {"input_shape": (192, 192, 154, 1), "dropout": 0.2},
    },
    "lightweight-unet": {
        "builder": "unet3d",
        "args": {"input_shape": (None, None, None, 4), "levels": 3, "base_filters": 16,
                 "convs_per_block": 2, "dropout": 0.3, "num_classes": 4},
    },
    "medium-unet-16": {
        "builder": "unet3d",
        "args": {"input_shape": (None, None, None, 4), "levels": 4, "base_filters": 16,
                 "convs_per_block": 4, "dropout": 0.3, "num_classes": 4},
    },
    "medium-unet-32": {
        "builder": "unet3d",
        "args": {"input_shape": (None, None, None, 4), "levels": 4, "base_filters": 32,
                 "convs_per_block": 4, "dropout": 0.3, "num_classes": 4},
    },
    "deep-unet-16": {
        "builder": "unet3d",
        "args": {"input_shape": (None, None, None, 4), "levels": 5, "base_filters": 16,
                 "convs_per_block": 4, "dropout": 0.3, "num_classes": 4},
    },
    "deep-unet-32": {
        "builder": "unet3d",
        "args": {"input_shape": (None, None, None, 4), "levels": 5, "base_filters": 32,
                 "convs_per_block": 4, "dropout": 0.3, "num_classes": 4},
    },
}


def list_models():
    """Names accepted by `build_model`, in registry order."""
    return list(MODEL_PRESETS)


def model_spec(name):
    """The preset of `name`: {"builder": str, "args": dict}. Raises ModelError."""
    if name not in MODEL_PRESETS:
        raise ModelError(f"unknown model {name!r}; expected one of: {', '.join(MODEL_PRESETS)}")
    spec = MODEL_PRESETS[name]
    return {"builder": spec["builder"], "args": dict(spec["args"])}


def pooling_multiple(name, **overrides):
    """2**poolings for model `name`: spatial sizes that need no padding."""
    spec = model_spec(name)
    if spec["builder"] == "flair_unet":
        return 2 ** (len(FLAIR_UNET_FILTERS) - 1)
    return 2 ** (overrides.get("levels", spec["args"]["levels"]) - 1)


def _check_input_shape(name, input_shape):
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ModelError(
            f"{name}: input_shape must be (D, H, W, channels), got {shape} ({len(shape)} dims)"
        )
    if shape[3] is None or int(shape[3]) < 1:
        raise ModelError(f"{name}: the channel count must be a positive integer, got {shape[3]}")
    for size in shape[:3]:
        if size is not None and int(size) < 1:
            raise ModelError(f"{name}: spatial sizes must be positive, got {shape}")
    return tuple(None if s is None else int(s) for s in shape)


def build_model(name, input_shape=None, **overrides):
    """Builds registered model `name` as a functional `keras.Model`.

    Args:
        name: one of `list_models()`.
        input_shape: (D, H, W, C) overriding the preset's; sizes may be None.
        **overrides: builder arguments replacing preset values (e.g.
            `base_filters=4` for tiny test models, `num_classes=1`).

    Returns:
        keras.Model mapping (batch, D, H, W, C) to (batch, D, H, W, classes),
        same spatial shape as the input.

    Raises:
        ModelError: unknown name, unknown override, or impossible input shape.
    """
    spec = model_spec(name)
    builder = BUILDERS[spec["builder"]]
    args = spec["args"]
    unknown = set(overrides) - set(args)
    if unknown:
        raise ModelError(
            f"{name}: unknown argument(s) {sorted(unknown)}; allowed: {sorted(args)}"
        )
    args.update(overrides)
    if input_shape is not None:
        args["input_shape"] = input_shape
    args["input_shape"] = _check_input_shape(name, args["input_shape"])
    return builder(name=name.replace("-", "_"), **args)
