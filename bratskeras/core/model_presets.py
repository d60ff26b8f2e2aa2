"""The registered models as plain data: builder, arguments and facts, free of TensorFlow.

`bratskeras.models.registry` builds them; this table alone answers what a
model is without importing Keras (`bratskeras models` prints it in a
fraction of a second). Each entry:

    builder     the family (registry.BUILDERS key)
    args        its arguments (input_shape (D, H, W, C), sizes may be None)
    modalities  the input modalities it is made for, in channel order
    targets     the training targets its output can stand for (bratskeras.core.targets)
    params      its parameter count as built with these arguments, stored so
                that listing models needs no build; tests/test_models.py checks
                it against the built model, so it cannot drift

as keras-hub presets carry their metadata.
"""

ALL_MODALITIES = ("flair", "t1", "t1ce", "t2")


def _unet3d(levels, base_filters, convs_per_block, params):
    return {
        "builder": "unet3d",
        "args": {"input_shape": (None, None, None, 4), "levels": levels, "base_filters": base_filters,
                 "convs_per_block": convs_per_block, "dropout": 0.3, "num_classes": 4},
        "modalities": ALL_MODALITIES,
        "targets": ("classes", "regions", "whole_tumor"),
        "params": params,
    }


MODEL_PRESETS = {
    "flair-unet": {
        "builder": "flair_unet",
        "args": {"input_shape": (192, 192, 154, 1), "dropout": 0.2},
        "modalities": ("flair",),
        "targets": ("whole_tumor",),
        "params": 13_522_721,
    },
    "lightweight-unet": _unet3d(levels=3, base_filters=16, convs_per_block=2, params=340_596),
    "medium-unet-16": _unet3d(levels=4, base_filters=16, convs_per_block=4, params=2_867_956),
    "medium-unet-32": _unet3d(levels=4, base_filters=32, convs_per_block=4, params=11_465_188),
    "deep-unet-16": _unet3d(levels=5, base_filters=16, convs_per_block=4, params=11_536_756),
    "deep-unet-32": _unet3d(levels=5, base_filters=32, convs_per_block=4, params=46_137_060),
}


def list_models():
    """Names accepted by `bratskeras.build_model`, in registry order."""
    return list(MODEL_PRESETS)


def parameter_count(name):
    """The stored parameter count of registered model `name` (its preset's arguments)."""
    return MODEL_PRESETS[name]["params"]
