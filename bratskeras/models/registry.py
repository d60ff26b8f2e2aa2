"""Model registry: names -> builder and preset arguments (the data: bratskeras.core.model_presets).

    >>> import bratskeras
    >>> model = bratskeras.build_model("lightweight-unet", input_shape=(64, 64, 64, 4))
    >>> bratskeras.list_models()[:2]
    ['flair-unet', 'lightweight-unet']
"""

from dataclasses import dataclass

from bratskeras.core.errors import ModelError
from bratskeras.core.model_presets import ALL_MODALITIES, MODEL_PRESETS, list_models  # noqa: F401  (re-exported)
from bratskeras.models.flair_unet import FLAIR_UNET_FILTERS, build_flair_unet
from bratskeras.models.unet3d import build_unet3d


@dataclass(frozen=True)
class Builder:
    """A model family: its build function and what follows from its arguments.

    Attributes:
        build: callable(name=..., **args) -> keras.Model.
        poolings: callable(args dict) -> number of 2x poolings (sizes must be
            multiples of 2**poolings to need no padding).
        output: "logits" (the caller appends the target's activation) or
            "probabilities" (the network ends in its own sigmoid).
        classes_arg: the argument that sets the output channels, or None
            when the family has a fixed output (flair-unet: 1 sigmoid).
    """

    build: object
    poolings: object
    output: str
    classes_arg: str | None


BUILDERS = {
    "flair_unet": Builder(build_flair_unet, lambda args: len(FLAIR_UNET_FILTERS) - 1, "probabilities", None),
    "unet3d": Builder(build_unet3d, lambda args: args["levels"] - 1, "logits", "num_classes"),
}


# The presets themselves (arguments, modalities, targets, parameter counts) are plain data in
# bratskeras.core.model_presets, readable without TensorFlow.


@dataclass(frozen=True)
class ModelFacts:
    """What callers need to know about a registered model, without testing its builder's name.

    Attributes:
        name: registry name.
        modalities: the input modalities it is made for, in channel order.
        targets: training targets its output can stand for (bratskeras.core.targets).
        output: "logits" or "probabilities" (Builder.output).
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
    """The preset of `name`: {"builder": str, "args": dict}. Raises ModelError."""
    if name not in MODEL_PRESETS:
        raise ModelError(f"unknown model {name!r}; expected one of: {', '.join(MODEL_PRESETS)}")
    spec = MODEL_PRESETS[name]
    return {"builder": spec["builder"], "args": dict(spec["args"])}


def model_facts(name, **overrides):
    """The ModelFacts of model `name` with builder `overrides` applied (e.g. levels=4). Raises ModelError."""
    spec = model_spec(name)
    builder = BUILDERS[spec["builder"]]
    args = {**spec["args"], **overrides}
    entry = MODEL_PRESETS[name]
    return ModelFacts(name=name, modalities=entry["modalities"], targets=entry["targets"], output=builder.output,
                      pooling_multiple=2 ** builder.poolings(args), classes_arg=builder.classes_arg)


def pooling_multiple(name, **overrides):
    """2**poolings for model `name`: spatial sizes that need no padding."""
    return model_facts(name, **overrides).pooling_multiple


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
    builder = BUILDERS[spec["builder"]].build
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
