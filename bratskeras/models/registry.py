"""Model registry: builds a preset row (bratskeras.core.model_presets) with its family's build function.

    >>> import bratskeras
    >>> model = bratskeras.build_model("lightweight-unet", input_shape=(64, 64, 64, 4))
    >>> bratskeras.list_models()[:2]
    ['flair-unet', 'lightweight-unet']
"""

from dataclasses import dataclass

from bratskeras.core.errors import ModelError
from bratskeras.core.model_presets import FAMILIES, get_preset, list_models  # noqa: F401  (list_models re-exported)
from bratskeras.models.flair_unet import build_flair_unet
from bratskeras.models.unet3d import build_unet3d

# Each family's build function: callable(name=..., **args) -> keras.Model. What follows from a
# family's arguments (output kind, poolings) is TensorFlow-free data in bratskeras.core.model_presets.FAMILIES.
BUILDERS = {
    "flair_unet": build_flair_unet,
    "unet3d": build_unet3d,
}


@dataclass(frozen=True)
class ModelFacts:
    """What callers need to know about a registered model with builder overrides applied.

    Attributes:
        name: registry name.
        modalities: the input modalities it is made for, in channel order.
        targets: training targets its output can stand for (bratskeras.core.targets).
        output: "logits" or "probabilities" (model_presets.Family.output).
        pooling_multiple: 2**poolings with the given overrides.
        classes_arg: the builder argument setting the output channels, or None.
    """

    name: str
    modalities: tuple
    targets: tuple
    output: str
    pooling_multiple: int
    classes_arg: str | None

    @property
    def outputs_logits(self):
        return self.output == "logits"


def model_spec(name):
    """The preset of `name` as {"builder": family name, "args": a fresh dict}. Raises ModelError."""
    preset = get_preset(name)
    return {"builder": preset.family, "args": dict(preset.args)}


def model_facts(name, **overrides):
    """The ModelFacts of model `name` with builder `overrides` applied (e.g. levels=4). Raises ModelError."""
    preset = get_preset(name)
    family = FAMILIES[preset.family]
    return ModelFacts(name=name, modalities=preset.modalities, targets=preset.targets, output=family.output,
                      pooling_multiple=family.pooling_multiple({**preset.args, **overrides}),
                      classes_arg=family.classes_arg)


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
