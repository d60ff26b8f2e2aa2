"""What a training target means, in one table: `TARGETS`.

A target is what the tf.data pipeline yields as y and what the model's output
stands for. Each row says how many output channels it has, which activation
turns the model's logits into probabilities, how class indices become the
target (`Target.encode`) and how a target or a model output becomes class
indices again (`Target.decode_target`, `Target.decode_output`).

    name          y (from classes)                       output channels       activation
    "classes"     uint8 class indices (..., 1)           the scheme's classes  softmax
    "regions"     float32 binary (..., R): WT, TC, ET    the scheme's regions  sigmoid
    "whole_tumor" float32 binary (..., 1): WT            1                     sigmoid

The scheme is the run's task (labels.SCHEMES) or the classic classes: 4
classes, 3 regions (WT, TC, ET); gli and mets have 5 classes and 4 regions
(WT, TC, ET, RC), ped 5 and 4 (WT, TC, ET, CC), MEN-RT 2 and 1 (GTV).

Back to classes: "classes" is the argmax; "regions" are thresholded and
composed as nnU-Net and BraTS do (ED where WT, NCR where TC, ET where ET,
each overwriting the previous, so a TC or ET voxel outside WT still counts as
tumor; a task's regions likewise, labels.LabelScheme.region_composition);
a whole-tumor voxel is written as WHOLE_TUMOR_CLASS (edema, label 2):
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

from bratskeras.core.labels import CLASS_NAMES, scheme_or_classic

# The class a whole-tumor voxel is written as: edema (label 2 in every classic scheme).
WHOLE_TUMOR_CLASS = CLASS_NAMES.index("ED")
# Region channels back to classes for the classic WT, TC, ET (labels.LabelScheme.region_composition).
REGION_COMPOSITION = scheme_or_classic(None).region_composition()


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


def compose_regions(on, scheme=None):
    """Binary region masks (..., R) in the scheme's region order -> int32 class indices (...).

    R = 3 (WT, TC, ET) for the classic classes (scheme None); a task's own
    regions otherwise (gli: WT, TC, ET, RC). Write order and classes:
    labels.LabelScheme.region_composition.
    """
    ops = _ops_for(on)
    on = ops.cast(on, "bool")
    classes = ops.zeros_like(on[..., 0], dtype="int32")
    for channel, class_index in scheme_or_classic(scheme).region_composition():
        classes = ops.where(on[..., channel], class_index, classes)
    return ops.cast(classes, "int32")


def split_regions(classes, scheme=None):
    """int class indices (...) -> bool region masks (..., R) in the scheme's region order (classic: WT, TC, ET)."""
    ops = _ops_for(classes)
    classes = ops.cast(classes, "int32")
    return ops.stack([_any_of(classes, members) for _, members in scheme_or_classic(scheme).regions], axis=-1)


@dataclass(frozen=True)
class Target:
    """One row of TARGETS; each kind of target is a subclass carrying its own encoding and decoding.

    Every method takes the run's task `scheme` (TrainConfig.task, a
    labels.TASKS name) or None for the classic classes: a task's classes
    target has one output per class of its scheme, its regions target one
    per region of its scheme (gli: WT, TC, ET, RC; MEN-RT: GTV).

    Attributes:
        name: "classes", "regions" or "whole_tumor".
        activation: the activation that turns the model's logits into
            probabilities ("softmax" or "sigmoid").
        structures: the metrics structures (bratskeras.models.metrics) it defines.
        y_dtype: dtype of the pipeline's y.
    """

    name: str
    activation: str
    structures: tuple
    y_dtype: str

    @property
    def binary(self):
        """True when every output channel is a binary mask (sigmoid targets)."""
        return self.activation == "sigmoid"

    @property
    def is_mask(self):
        """True for a one-channel mask target (postprocessing reads it as a bool mask)."""
        return False

    @property
    def outputs_regions(self):
        """True when each output channel is one of the scheme's regions (scored as predicted, by channel)."""
        return False

    def channels(self, scheme=None):
        """Model output channels for `scheme` (None: the classic classes)."""
        raise NotImplementedError

    def y_channels(self, scheme=None):
        """Channels of the pipeline's y: one per output unless the target says otherwise."""
        return self.channels(scheme)

    def encode(self, classes, scheme=None):
        """Class indices (..., 1) or (...) -> y (..., y_channels) of dtype y_dtype (numpy in, numpy out)."""
        ops = _ops_for(classes)
        return self._encode(ops, _squeeze_channel(ops.convert_to_tensor(classes)), scheme)

    def decode_target(self, y, scheme=None):
        """A pipeline y (`encode`'s output) -> int32 class indices (...)."""
        ops = _ops_for(y)
        y = ops.cast(ops.round(ops.cast(y, "float32")), "int32")
        return self._binary_to_classes(y > 0, scheme)

    def decode_output(self, y, from_logits=False, scheme=None):
        """A model output (..., channels) -> int32 class indices (...).

        The sigmoid targets: thresholded at probability 0.5 (logit 0), then
        composed into classes (ClassesTarget: argmax).
        """
        threshold = 0.0 if from_logits else 0.5
        return self._binary_to_classes(_ops_for(y).cast(y, "float32") > threshold, scheme)


@dataclass(frozen=True)
class ClassesTarget(Target):
    """Mutually exclusive classes (softmax): one output per class of the scheme; y is the class index."""

    def channels(self, scheme=None):
        return len(scheme_or_classic(scheme).labels)

    def y_channels(self, scheme=None):
        return 1

    def _encode(self, ops, classes, scheme):
        return ops.cast(classes, "uint8")[..., None]

    def decode_target(self, y, scheme=None):
        ops = _ops_for(y)
        return _squeeze_channel(ops.cast(ops.round(ops.cast(y, "float32")), "int32"))

    def decode_output(self, y, from_logits=False, scheme=None):
        """argmax, for logits and probabilities alike."""
        ops = _ops_for(y)
        return ops.cast(ops.argmax(y, axis=-1), "int32")


@dataclass(frozen=True)
class RegionsTarget(Target):
    """Nested regions (sigmoids): one output per region of the scheme, composed back into classes."""

    @property
    def outputs_regions(self):
        return True

    def channels(self, scheme=None):
        return len(scheme_or_classic(scheme).regions)

    def _encode(self, ops, classes, scheme):
        return ops.cast(split_regions(ops.cast(classes, "int32"), scheme), "float32")

    def _binary_to_classes(self, on, scheme):
        return compose_regions(on, scheme)


@dataclass(frozen=True)
class WholeTumorTarget(Target):
    """One sigmoid channel, the whole tumour, written back as WHOLE_TUMOR_CLASS."""

    @property
    def is_mask(self):
        return True

    def channels(self, scheme=None):
        return 1

    def _encode(self, ops, classes, scheme):
        return ops.cast(ops.cast(classes, "int32") > 0, "float32")[..., None]

    def _binary_to_classes(self, on, scheme):
        return _ops_for(on).cast(on[..., 0], "int32") * WHOLE_TUMOR_CLASS


TARGETS = {target.name: target for target in (
    ClassesTarget("classes", "softmax", ("wt", "tc", "et", "ncr", "ed"), "uint8"),
    RegionsTarget("regions", "sigmoid", ("wt", "tc", "et", "ncr", "ed"), "float32"),
    WholeTumorTarget("whole_tumor", "sigmoid", ("wt",), "float32"),
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


def classes_to_target(classes, target, scheme=None):
    """numpy class indices (..., 1) or (...) -> numpy y of `target` (Target.encode)."""
    return get_target(target).encode(np.asarray(classes), scheme)


def output_to_classes(output, target, from_logits=False, scheme=None):
    """numpy model output (..., channels) -> uint8 class indices (...) (Target.decode_output)."""
    return get_target(target).decode_output(np.asarray(output), from_logits, scheme).astype(np.uint8)


def classes_to_regions(classes, scheme=None):
    """numpy class indices (...) -> bool region masks (..., R) in the scheme's region order (classic: WT, TC, ET)."""
    return split_regions(np.asarray(classes), scheme)


def regions_to_classes(regions, scheme=None):
    """numpy binary region masks (..., R) in the scheme's region order -> uint8 class indices (...).

    Inverse of `classes_to_regions` for nested masks (labels.LabelScheme.region_composition).
    """
    regions = np.asarray(regions, dtype=bool)
    count = len(scheme_or_classic(scheme).regions)
    if regions.shape[-1:] != (count,):
        raise ValueError(f"regions must have {count} channels last, received shape {regions.shape}")
    return compose_regions(regions, scheme).astype(np.uint8)
