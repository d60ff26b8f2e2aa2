"""The Keras Dice metric of training: `DiceScore`, streamed over an epoch for `fit`'s logs.

Structures (lower case in every metric name and dict key):
    regions wt = {NCR, ED, ET}, tc = {NCR, ET}, et = {ET}   (bratskeras.core.labels.REGIONS)
    classes ncr, ed, et                                     (ET is region and class: one key)

`DiceScore` (Keras, TensorFlow) accumulates intersections and
volumes over the epoch in float32 state variables and reports
2*sum(|A∩B|) / (sum|A| + sum|B|), the pooled Dice, not a mean of batch ratios.
An epoch where prediction and target are both empty reports 1.0.

The per-case metrics of evaluation (numpy/scipy, one case of shape (D, H, W):
dice, hd95, sensitivity, specificity, case_metrics) live in
bratskeras.evaluate.voxelwise, free of TensorFlow; import them from there.
"""

import keras
from keras import ops

from bratskeras.core import targets
from bratskeras.core.labels import STRUCTURE_CLASSES, get_scheme, scheme_or_classic

# Structures whose Dice a model trained on each target can report (the targets' table).
TARGET_STRUCTURES = {name: target.structures for name, target in targets.TARGETS.items()}


def _structure_mask_tf(classes, structure):
    mask = ops.zeros_like(classes, dtype="bool")
    for class_index in STRUCTURE_CLASSES[structure]:
        mask = ops.logical_or(mask, ops.equal(classes, class_index))
    return mask


def _region_channel(y, channel, threshold):
    return ops.cast(y[..., channel], "float32") > threshold


@keras.saving.register_keras_serializable(package="bratskeras")
class DiceScore(keras.metrics.Metric):
    """Hard Dice of one structure accumulated over an epoch (state: sums of |A∩B| and |A|+|B|).

    Args:
        structure: "wt", "tc", "et", "ncr" or "ed" ("wt" only for "whole_tumor").
        target: training target of the model, "classes" (y_true class indices
            (batch, D, H, W, 1), y_pred (batch, D, H, W, 4)), "regions" (y_true and
            y_pred (batch, D, H, W, 3) for WT, TC, ET) or "whole_tumor" (1 channel).
        from_logits: sigmoid outputs are logits (threshold 0) rather than
            probabilities (threshold 0.5); irrelevant for the argmax of "classes".
        name: defaults to "dice_<structure>".
        classic: legacy form of `scheme` (a task's LabelScheme.classic), as
            saved by models of earlier versions; `scheme` supersedes it.
        scheme: the run's task (labels.TASKS) or None: its K classes or R
            regions (y_pred (batch, D, H, W, K or R)) are scored as the
            classic structures they make up (LabelScheme.classic).

    Result: 2*I / V with I, V summed over every batch since the last reset;
    1.0 while V = 0. Two batches with (I, V) = (1, 2) and (0, 4) give 2/6 = 0.333,
    not the mean of batch ratios (1 + 0)/2.
    """

    def __init__(self, structure, target="classes", from_logits=True, name=None, classic=None, scheme=None,
                 **kwargs):
        targets.get_target(target)  # ValueError naming the targets
        if structure not in TARGET_STRUCTURES[target]:
            raise ValueError(
                f"structure for target {target!r} must be one of "
                f"{TARGET_STRUCTURES[target]}, received {structure!r}"
            )
        kwargs.pop("dtype", None)
        # float32 state and result even under a mixed-precision policy.
        super().__init__(name=name or f"dice_{structure}", dtype="float32", **kwargs)
        self.structure = structure
        self.target = target
        self.from_logits = from_logits
        self.scheme = scheme
        if scheme is not None:
            classic = get_scheme(scheme).classic
        self.classic = tuple(classic) if classic is not None else None
        # A region the model outputs as a channel of its own is scored on that channel.
        region_names = scheme_or_classic(scheme).region_names
        self.channel = region_names.index(structure.upper()) if structure.upper() in region_names else None
        # aggregation="sum" adds the replicas' partial sums under tf.distribute.
        self.intersection = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", aggregation="sum", name="intersection"
        )
        self.volume = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", aggregation="sum", name="volume"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        if targets.get_target(self.target).outputs_regions and self.channel is not None:
            # Region channels are scored as predicted, before composition into
            # classes (a TC voxel outside the WT channel still counts for TC).
            pred = _region_channel(y_pred, self.channel, 0.0 if self.from_logits else 0.5)
            true = _region_channel(y_true, self.channel, 0.5)
        else:
            target = targets.get_target(self.target)
            pred_classes = target.decode_output(y_pred, self.from_logits, self.scheme)
            true_classes = target.decode_target(y_true, self.scheme)
            if self.classic is not None:
                table = ops.convert_to_tensor(self.classic, dtype="int32")
                pred_classes, true_classes = ops.take(table, pred_classes), ops.take(table, true_classes)
            pred = _structure_mask_tf(pred_classes, self.structure)
            true = _structure_mask_tf(true_classes, self.structure)
        pred = ops.cast(pred, "float32")
        true = ops.cast(true, "float32")
        if sample_weight is not None:
            # Per-sample weights (batch,) scale each sample's voxels.
            weight = ops.cast(sample_weight, "float32")
            weight = ops.reshape(weight, (-1,) + (1,) * (len(pred.shape) - 1))
            pred, true = pred * weight, true * weight
        self.intersection.assign_add(ops.sum(pred * true))
        self.volume.assign_add(ops.sum(pred) + ops.sum(true))

    def result(self):
        safe_volume = ops.maximum(self.volume, 1.0)
        return ops.where(self.volume > 0, 2.0 * self.intersection / safe_volume, 1.0)

    def reset_state(self):
        self.intersection.assign(0.0)
        self.volume.assign(0.0)

    def get_config(self):
        return {
            "name": self.name,
            "structure": self.structure,
            "target": self.target,
            "from_logits": self.from_logits,
            "classic": list(self.classic) if self.classic is not None and self.scheme is None else None,
            "scheme": self.scheme,
        }


def dice_metrics(target, from_logits=True, scheme=None):
    """The epoch Dice metrics for a model trained on `target`.

    "classes" and "regions": dice_wt, dice_tc, dice_et, dice_ncr, dice_ed;
    "whole_tumor": dice_wt. Pass them to `model.compile(metrics=...)`. With a
    task `scheme` (TrainConfig.task), its classes or regions count as the
    classic ones (labels.LabelScheme.classic: gli's RC is not tumor, MEN-RT's
    GTV is core).
    """
    targets.get_target(target)  # ValueError naming the targets
    return [DiceScore(s, target=target, from_logits=from_logits, scheme=scheme) for s in TARGET_STRUCTURES[target]]
