"""What a training target means, in one table: `TARGETS`.

A target is what the tf.data pipeline yields as y and what the model's output
stands for. Each row says how many output channels it has, which activation
turns the model's logits into probabilities, how class indices become the
target (`Target.encode`) and how a target or a model output becomes class
indices again (`Target.decode_target`, `Target.decode_output`).

    name          y (from classes)                 output channels       activation
    "classes"     uint8 class indices (..., 1)     the scheme's classes  softmax
    "regions"     float32 binary (..., 3): WT, TC, ET   3                sigmoid
    "whole_tumor" float32 binary (..., 1): WT           1                sigmoid

Back to classes: "classes" is the argmax; "regions" are thresholded and
composed as nnU-Net and BraTS do (ED where WT, NCR where TC, ET where ET,
each overwriting the previous, so a TC or ET voxel outside WT still counts as
tumor); a whole-tumor voxel is written as WHOLE_TUMOR_CLASS (edema, label 2):
only WT is defined for that target, and any tumor class would score the same.

Everything is written once, against the `keras.ops` names, so the tf.data
pipeline (graph tensors), the Keras metrics (batches) and numpy callers
(`classes_to_target`, `output_to_classes`, `regions_to_classes`: numpy in,
numpy out) share one definition. Tensors run it with keras.ops; numpy arrays
run the same code with numpy's functions of the same names (`_NumpyOps`),
because a round trip through TensorFlow made predict's per-case argmax ~2.5x
slower (0.46 s against 0.18 s on a 240 x 240 x 155 x 4 volume, measured
under load). keras is imported only for tensors: label and layout code that
imports this module stays free of TensorFlow.
"""

from dataclasses import dataclass

import numpy as np

from bratskeras.labels import CLASS_NAMES, REGION_CLASSES, REGIONS, get_scheme

# The class a whole-tumor voxel is written as: edema (label 2 in every classic scheme).
WHOLE_TUMOR_CLASS = CLASS_NAMES.index("ED")


def _region_composition():
    """(channel, class) pairs that compose region masks into classes, outermost region first.

    Each region adds the one class it has that the next (inner) region lacks:
    WT -> ED, TC -> NCR, ET -> ET (derived from labels.REGION_CLASSES).
    """
    pairs = []
    for channel, region in enumerate(REGIONS):
        inner = set(REGION_CLASSES[REGIONS[channel + 1]]) if channel + 1 < len(REGIONS) else set()
        (own,) = set(REGION_CLASSES[region]) - inner
        pairs.append((channel, own))
    return tuple(pairs)


REGION_COMPOSITION = _region_composition()


class _NumpyOps:
    """The few keras.ops this module uses, as numpy functions: numpy in, numpy out, no TensorFlow."""

    argmax = staticmethod(np.argmax)
    equal = staticmethod(np.equal)
    logical_or = staticmethod(np.logical_or)
    stack = staticmethod(np.stack)
    where = staticmethod(np.where)
    round = staticmethod(np.round)
    convert_to_tensor = staticmethod(np.asarray)

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x).astype(dtype, copy=False)

    @staticmethod
    def zeros_like(x, dtype=None):
        return np.zeros_like(x, dtype=dtype)


def _ops_for(x):
    """numpy's functions for numpy input, keras.ops for anything else (tensors, symbolic tensors)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return _NumpyOps
    from keras import ops

    return ops


def _squeeze_channel(classes):
    """(..., 1) -> (...); a class map without a trailing size-1 axis is returned as is."""
    return classes[..., 0] if len(classes.shape) and classes.shape[-1] == 1 else classes


def _any_of(classes, members):
    """bool (...): classes is one of `members` (an int32 tensor (...))."""
    ops = _ops_for(classes)
    mask = ops.zeros_like(classes, dtype="bool")
    for member in members:
        mask = ops.logical_or(mask, ops.equal(classes, member))
    return mask


def compose_regions(on):
    """Binary region masks (..., 3) in REGIONS order -> int32 class indices (...) (REGION_COMPOSITION)."""
    ops = _ops_for(on)
    on = ops.cast(on, "bool")
    classes = ops.zeros_like(on[..., 0], dtype="int32")
    for channel, class_index in REGION_COMPOSITION:
        classes = ops.where(on[..., channel], class_index, classes)
    return ops.cast(classes, "int32")


def split_regions(classes):
    """int class indices (...) -> bool region masks (..., 3) in REGIONS order."""
    ops = _ops_for(classes)
    classes = ops.cast(classes, "int32")
    return ops.stack([_any_of(classes, REGION_CLASSES[r]) for r in REGIONS], axis=-1)


@dataclass(frozen=True)
class Target:
    """One row of TARGETS.

    Attributes:
        name: "classes", "regions" or "whole_tumor".
        activation: the activation that turns the model's logits into
            probabilities ("softmax" or "sigmoid").
        structures: the metrics structures (bratskeras.metrics) it defines.
        fixed_channels: output channels, or None when the label scheme decides
            (the classes target: one per class of the scheme).
        y_dtype: dtype of the pipeline's y.
    """

    name: str
    activation: str
    structures: tuple
    fixed_channels: int | None
    y_dtype: str

    @property
    def binary(self):
        """True when every output channel is a binary mask (sigmoid targets)."""
        return self.activation == "sigmoid"

    @property
    def is_mask(self):
        """True for the one-channel whole-tumor mask (postprocessing reads it as a bool mask)."""
        return self.fixed_channels == 1

    def channels(self, scheme=None):
        """Model output channels; `scheme` (a task's) sets the classes target's count (default: 4)."""
        if self.fixed_channels is not None:
            return self.fixed_channels
        return len(get_scheme(scheme).labels) if scheme is not None else len(CLASS_NAMES)

    def y_channels(self, scheme=None):
        """Channels of the pipeline's y: 1 class index for "classes", else one per output."""
        return 1 if self.name == "classes" else self.channels(scheme)

    def encode(self, classes):
        """Class indices (..., 1) or (...) -> y (..., y_channels) of dtype y_dtype (numpy in, numpy out)."""
        ops = _ops_for(classes)
        classes = _squeeze_channel(ops.convert_to_tensor(classes))
        if self.name == "classes":
            return ops.cast(classes, "uint8")[..., None]
        classes = ops.cast(classes, "int32")
        if self.name == "regions":
            return ops.cast(split_regions(classes), "float32")
        return ops.cast(classes > 0, "float32")[..., None]

    def decode_target(self, y):
        """A pipeline y (`encode`'s output) -> int32 class indices (...)."""
        ops = _ops_for(y)
        y = ops.cast(ops.round(ops.cast(y, "float32")), "int32")
        if self.name == "classes":
            return _squeeze_channel(y)
        return self._binary_to_classes(y > 0)

    def decode_output(self, y, from_logits=False):
        """A model output (..., channels) -> int32 class indices (...).

        "classes": argmax (logits and probabilities alike); the sigmoid
        targets: thresholded at probability 0.5 (logit 0), then composed.
        """
        ops = _ops_for(y)
        if self.name == "classes":
            return ops.cast(ops.argmax(y, axis=-1), "int32")
        threshold = 0.0 if from_logits else 0.5
        return self._binary_to_classes(ops.cast(y, "float32") > threshold)

    def _binary_to_classes(self, on):
        if self.name == "regions":
            return compose_regions(on)
        return _ops_for(on).cast(on[..., 0], "int32") * WHOLE_TUMOR_CLASS


TARGETS = {target.name: target for target in (
    Target("classes", "softmax", ("wt", "tc", "et", "ncr", "ed"), None, "uint8"),
    Target("regions", "sigmoid", ("wt", "tc", "et", "ncr", "ed"), len(REGIONS), "float32"),
    Target("whole_tumor", "sigmoid", ("wt",), 1, "float32"),
)}
NAMES = tuple(TARGETS)


def get_target(name):
    """The Target called `name` (a key of TARGETS); ValueError naming the choices otherwise."""
    if isinstance(name, Target):
        return name
    if name not in TARGETS:
        raise ValueError(f"target must be one of {NAMES}, received {name!r}")
    return TARGETS[name]


def target_for_channels(channels):
    """The target a model with `channels` outputs of the classic classes was trained on, or None."""
    matches = [t.name for t in TARGETS.values() if t.channels() == int(channels)]
    return matches[0] if matches else None


# ----------------------------------------------------------------- numpy in, numpy out


def classes_to_target(classes, target):
    """numpy class indices (..., 1) or (...) -> numpy y of `target` (Target.encode)."""
    return get_target(target).encode(np.asarray(classes))


def output_to_classes(output, target, from_logits=False):
    """numpy model output (..., channels) -> uint8 class indices (...) (Target.decode_output)."""
    return get_target(target).decode_output(np.asarray(output), from_logits).astype(np.uint8)


def classes_to_regions(classes):
    """numpy class indices (...) -> bool region masks (..., 3) in REGIONS order."""
    return split_regions(np.asarray(classes))


def regions_to_classes(regions):
    """numpy binary region masks (..., 3) in REGIONS order -> uint8 class indices (...).

    Inverse of `classes_to_regions` for nested masks (REGION_COMPOSITION).
    """
    regions = np.asarray(regions, dtype=bool)
    if regions.shape[-1:] != (len(REGIONS),):
        raise ValueError(f"regions must have {len(REGIONS)} channels last, received shape {regions.shape}")
    return compose_regions(regions).astype(np.uint8)
