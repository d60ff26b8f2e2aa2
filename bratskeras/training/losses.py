"""Segmentation losses of both papers, plus BraTS region losses.

Shapes (channels last, D, H, W = NIfTI axes i, j, k):
    y_pred: (batch, D, H, W, C) logits or probabilities (`from_logits` says which).
    y_true for the softmax losses: class indices (batch, D, H, W, 1) or
        (batch, D, H, W), values 0..C-1, any integer or float dtype
        (target "classes" of `bratskeras.core.targets`).
    y_true for the sigmoid losses: binary masks (batch, D, H, W, C), one per
        output channel (targets "regions" and "whole_tumor").

Every loss computes in float32 whatever the input dtype (mixed precision) and
returns a scalar. Dice-type losses sum over the whole batch and all voxels per
channel/class (the lightweight paper's eq. 1 "per class over the whole batch"),
then average over channels/classes.

Smoothing: `smooth` (default 1.0, one voxel) is added to numerator and
denominator of every ratio, so a ratio is never 0/0, its gradient is bounded by
2/smooth per voxel, and an empty target with an empty prediction has Dice
exactly 1 (loss 0, or -1 in the FLAIR paper's negative form). An empty target
with predicted volume P has Dice smooth / (P + smooth), which still pushes P
down. One voxel is negligible next to tumor volumes of 10^3-10^5 voxels.
`keras.losses.Dice` puts its epsilon in the denominator only, so an empty
class scores Dice ~0 (loss ~1) whatever is predicted; these losses do not.
"""

import keras
from keras import ops

from bratskeras.core.defaults import DICE_CE_WEIGHTS

DICE_FORMS = ("negative", "one_minus")


def _check_smooth(smooth):
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0, received {smooth!r}")


def _check_form(form):
    if form not in DICE_FORMS:
        raise ValueError(f"form must be one of {DICE_FORMS}, received {form!r}")


def _spatial_axes(x):
    # Every axis except channels: batch and voxels are pooled.
    return tuple(range(len(x.shape) - 1))


def _class_probabilities(y_pred, from_logits):
    y_pred = ops.cast(y_pred, "float32")
    return ops.softmax(y_pred, axis=-1) if from_logits else y_pred


def _sigmoid_probabilities(y_pred, from_logits):
    y_pred = ops.cast(y_pred, "float32")
    return ops.sigmoid(y_pred) if from_logits else y_pred


def class_indices(y_true, y_pred):
    """Integer class indices (batch, D, H, W) from y_true of rank 4 or 5.

    Raises:
        ValueError: y_true is neither (batch, D, H, W) nor (batch, D, H, W, 1)
            relative to y_pred (batch, D, H, W, C).
    """
    pred_rank, true_rank = len(y_pred.shape), len(y_true.shape)
    if true_rank == pred_rank:
        if y_true.shape[-1] not in (1, None):
            raise ValueError(
                "y_true must hold class indices with shape (batch, D, H, W, 1) or "
                f"(batch, D, H, W); received shape {tuple(y_true.shape)} "
                "(one-hot targets are not accepted)"
            )
        y_true = ops.squeeze(y_true, axis=-1)
    elif true_rank != pred_rank - 1:
        raise ValueError(
            f"y_true of shape {tuple(y_true.shape)} does not match y_pred of shape "
            f"{tuple(y_pred.shape)}; expected class indices of rank {pred_rank - 1} "
            f"or {pred_rank}"
        )
    # Round before casting: float targets such as 2.9999999 must not become 2.
    return ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")


def _check_binary_shapes(y_true, y_pred):
    if len(y_true.shape) != len(y_pred.shape) or y_true.shape[-1] != y_pred.shape[-1]:
        raise ValueError(
            f"y_true must be binary masks with the shape of y_pred {tuple(y_pred.shape)}; "
            f"received shape {tuple(y_true.shape)}"
        )


def _dice_per_channel(target, probs, smooth):
    """Soft Dice (2*sum(p*g) + s) / (sum(p) + sum(g) + s) per channel, float32 (C,)."""
    axes = _spatial_axes(probs)
    intersection = ops.sum(probs * target, axis=axes)
    volumes = ops.sum(probs, axis=axes) + ops.sum(target, axis=axes)
    return (2.0 * intersection + smooth) / (volumes + smooth)


def flair_dice_loss(y_true, y_pred, form="negative", smooth=1.0, from_logits=False):
    """The FLAIR paper's probability Dice loss for sigmoid outputs.

    negative:  -(2*sum(X*Y) + s) / (sum(X) + |Y| + s)   in [-1, 0] (the paper's)
    one_minus: 1 - (2*sum(X*Y) + s) / (sum(X) + |Y| + s) in [0, 1]
    X = predicted probabilities (not thresholded), Y = binary target, sums over
    the batch and all voxels, per channel, then averaged over channels.

    Args:
        y_true: binary masks (batch, D, H, W, C), usually C = 1 (whole tumor).
        y_pred: probabilities (or logits if `from_logits`), same shape.
        form: "negative" or "one_minus".
        smooth: > 0, added to numerator and denominator.
        from_logits: apply a sigmoid to y_pred first.

    Returns:
        float32 scalar. Empty target and empty prediction: -1 (negative) / 0.

    Example: X = [0.5, 1, 0, 0], Y = [1, 1, 0, 0], smooth = 1:
        (2*1.5 + 1) / (1.5 + 2 + 1) = 4/4.5 -> negative -0.888889, one_minus 0.111111.
    """
    _check_form(form)
    _check_smooth(smooth)
    _check_binary_shapes(y_true, y_pred)
    probs = _sigmoid_probabilities(y_pred, from_logits)
    dice = ops.mean(_dice_per_channel(ops.cast(y_true, "float32"), probs, smooth))
    return -dice if form == "negative" else 1.0 - dice


def soft_dice_loss(y_true, y_pred, from_logits=True, include_background=True, smooth=1.0):
    """The lightweight paper's soft multiclass Dice loss (its eq. 1).

    L = 1 - (1/C) * sum_c (2*sum_i p_ci*g_ci + s) / (sum_i p_ci + sum_i g_ci + s)
    p = softmax probabilities, g = one-hot target, i runs over the whole batch.

    Args:
        y_true: class indices (batch, D, H, W, 1) or (batch, D, H, W).
        y_pred: (batch, D, H, W, C) logits (`from_logits=True`) or probabilities.
        from_logits: apply a softmax over channels first.
        include_background: average over all C classes (paper) or classes 1..C-1.
        smooth: > 0, added to numerator and denominator.

    Returns:
        float32 scalar in [0, 1].

    Example: two voxels, C = 2, probabilities [[1, 0], [0.5, 0.5]], classes
        [0, 1], smooth = 1: class 0 (2*1 + 1)/(1.5 + 1 + 1) = 6/7, class 1
        (2*0.5 + 1)/(0.5 + 1 + 1) = 4/5; loss 1 - (6/7 + 4/5)/2 = 0.171429.
    """
    _check_smooth(smooth)
    num_classes = y_pred.shape[-1]
    if not include_background and num_classes < 2:
        raise ValueError(
            f"include_background=False needs at least 2 classes, y_pred has {num_classes}"
        )
    probs = _class_probabilities(y_pred, from_logits)
    target = ops.one_hot(class_indices(y_true, y_pred), num_classes, dtype="float32")
    dice = _dice_per_channel(target, probs, smooth)
    if not include_background:
        dice = dice[1:]
    return 1.0 - ops.mean(dice)


def cross_entropy_loss(y_true, y_pred, from_logits=True):
    """Mean voxel-wise categorical cross-entropy, -mean_i log p_{g_i, i}.

    Args:
        y_true: class indices (batch, D, H, W, 1) or (batch, D, H, W).
        y_pred: (batch, D, H, W, C) logits or probabilities (clipped by Keras'
            epsilon, so a zero probability gives a large finite loss).

    Returns:
        float32 scalar. Example: probabilities [[0.5, 0.5]], class [1] -> log 2 = 0.693147.
    """
    probs_or_logits = ops.cast(y_pred, "float32")
    per_voxel = ops.sparse_categorical_crossentropy(
        class_indices(y_true, y_pred), probs_or_logits, from_logits=from_logits
    )
    return ops.mean(per_voxel)


def dice_ce_loss(
    y_true,
    y_pred,
    from_logits=True,
    ce_weight=DICE_CE_WEIGHTS["ce_weight"],
    dice_weight=DICE_CE_WEIGHTS["dice_weight"],
    include_background=True,
    smooth=1.0,
):
    """The lightweight paper's combined loss (its eq. 2): ce_weight*CE + dice_weight*Dice.

    Defaults are the paper's 0.3 and 0.7. Arguments as `soft_dice_loss` and
    `cross_entropy_loss`. Example: the `soft_dice_loss` example gives
    0.3*0.346574 + 0.7*0.171429 = 0.223972 (CE = (0 + log 2)/2).
    """
    ce = cross_entropy_loss(y_true, y_pred, from_logits)
    dice = soft_dice_loss(y_true, y_pred, from_logits, include_background, smooth)
    return ce_weight * ce + dice_weight * dice


def region_dice_bce_loss(
    y_true, y_pred, from_logits=True, dice_weight=1.0, bce_weight=1.0, smooth=1.0
):
    """Dice + binary cross-entropy on independent sigmoid channels (BraTS regions).

    L = dice_weight * (1 - mean_c Dice_c) + bce_weight * mean BCE, with Dice_c
    the smoothed soft Dice of channel c over the whole batch. The region
    channels of target "regions" (WT, TC, ET, and e.g. RC in a task's scheme)
    overlap, which is why they are sigmoids, not a softmax.

    Args:
        y_true: float binary masks (batch, D, H, W, C); for "regions" C is
            the label scheme's region count (labels.LabelScheme.region_names:
            3 for the classic WT, TC, ET).
        y_pred: logits (`from_logits=True`) or probabilities, same shape.

    Returns:
        float32 scalar. Example: probabilities [0.5, 0.5], target [1, 0], one
        channel, smooth 1: Dice (1 + 1)/(1 + 1 + 1) = 2/3, BCE log 2, loss
        1/3 + 0.693147 = 1.026480.
    """
    _check_smooth(smooth)
    _check_binary_shapes(y_true, y_pred)
    target = ops.cast(y_true, "float32")
    probs = _sigmoid_probabilities(y_pred, from_logits)
    dice = 1.0 - ops.mean(_dice_per_channel(target, probs, smooth))
    bce = ops.mean(
        ops.binary_crossentropy(target, ops.cast(y_pred, "float32"), from_logits=from_logits)
    )
    return dice_weight * dice + bce_weight * bce


def sensitivity_specificity_loss(
    y_true, y_pred, sensitivity_weight=0.9, specificity_weight=0.1, smooth=1.0, from_logits=False
):
    """The FLAIR paper's sensitivity-specificity loss (sensitivity weighted ~9:1).

    L = -(w_sens * SENS + w_spec * SPEC), the paper's "negative sum", with
    SENS = (sum(p*g) + s) / (sum(g) + s), SPEC = (sum((1-p)(1-g)) + s) / (sum(1-g) + s)
    per channel over the batch, averaged over channels. Range [-(w_sens + w_spec), 0].

    Example: p = [0.5, 0.5], g = [1, 0], smooth 1: SENS = 1.5/2, SPEC = 1.5/2,
        loss -(0.9 + 0.1) * 0.75 = -0.75.
    """
    _check_smooth(smooth)
    _check_binary_shapes(y_true, y_pred)
    if sensitivity_weight < 0 or specificity_weight < 0:
        raise ValueError(
            "sensitivity_weight and specificity_weight must be >= 0, received "
            f"{sensitivity_weight!r} and {specificity_weight!r}"
        )
    target = ops.cast(y_true, "float32")
    probs = _sigmoid_probabilities(y_pred, from_logits)
    axes = _spatial_axes(probs)
    sensitivity = (ops.sum(probs * target, axis=axes) + smooth) / (
        ops.sum(target, axis=axes) + smooth
    )
    specificity = (ops.sum((1.0 - probs) * (1.0 - target), axis=axes) + smooth) / (
        ops.sum(1.0 - target, axis=axes) + smooth
    )
    return -ops.mean(sensitivity_weight * sensitivity + specificity_weight * specificity)


class _ConfiguredLoss(keras.losses.Loss):
    """A Loss that calls `_fn(y_true, y_pred, **config)`; subclasses name `_fn` and defaults.

    The loss is a statistic of the whole batch (a scalar), so per-sample
    `sample_weight` only rescales it; do not use sample weights with these losses.
    Computation is float32 regardless of the dtype policy.
    """

    _fn = None

    def __init__(self, name=None, reduction="sum_over_batch_size", **options):
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self._options = options
        # Validate eagerly so a bad option fails at construction, not in fit().
        if "smooth" in options:
            _check_smooth(options["smooth"])
        if "form" in options:
            _check_form(options["form"])

    def call(self, y_true, y_pred):
        return type(self)._fn(y_true, y_pred, **self._options)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, **self._options}


@keras.saving.register_keras_serializable(package="bratskeras")
class FlairDiceLoss(_ConfiguredLoss):
    """Keras wrapper of `flair_dice_loss`."""

    _fn = staticmethod(flair_dice_loss)

    def __init__(self, form="negative", smooth=1.0, from_logits=False, name="flair_dice", **kwargs):
        super().__init__(name=name, form=form, smooth=smooth, from_logits=from_logits, **kwargs)


@keras.saving.register_keras_serializable(package="bratskeras")
class SoftDiceLoss(_ConfiguredLoss):
    """Keras wrapper of `soft_dice_loss`."""

    _fn = staticmethod(soft_dice_loss)

    def __init__(
        self, from_logits=True, include_background=True, smooth=1.0, name="soft_dice", **kwargs
    ):
        super().__init__(
            name=name,
            from_logits=from_logits,
            include_background=include_background,
            smooth=smooth,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package="bratskeras")
class CrossEntropyLoss(_ConfiguredLoss):
    """Keras wrapper of `cross_entropy_loss`."""

    _fn = staticmethod(cross_entropy_loss)

    def __init__(self, from_logits=True, name="cross_entropy", **kwargs):
        super().__init__(name=name, from_logits=from_logits, **kwargs)


@keras.saving.register_keras_serializable(package="bratskeras")
class DiceCELoss(_ConfiguredLoss):
    """Keras wrapper of `dice_ce_loss` (default 0.3 * CE + 0.7 * Dice)."""

    _fn = staticmethod(dice_ce_loss)

    def __init__(
        self,
        from_logits=True,
        ce_weight=DICE_CE_WEIGHTS["ce_weight"],
        dice_weight=DICE_CE_WEIGHTS["dice_weight"],
        include_background=True,
        smooth=1.0,
        name="dice_ce",
        **kwargs,
    ):
        super().__init__(
            name=name,
            from_logits=from_logits,
            ce_weight=ce_weight,
            dice_weight=dice_weight,
            include_background=include_background,
            smooth=smooth,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package="bratskeras")
class RegionDiceBCELoss(_ConfiguredLoss):
    """Keras wrapper of `region_dice_bce_loss`."""

    _fn = staticmethod(region_dice_bce_loss)

    def __init__(
        self,
        from_logits=True,
        dice_weight=1.0,
        bce_weight=1.0,
        smooth=1.0,
        name="region_dice_bce",
        **kwargs,
    ):
        super().__init__(
            name=name,
            from_logits=from_logits,
            dice_weight=dice_weight,
            bce_weight=bce_weight,
            smooth=smooth,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package="bratskeras")
class SensitivitySpecificityLoss(_ConfiguredLoss):
    """Keras wrapper of `sensitivity_specificity_loss`."""

    _fn = staticmethod(sensitivity_specificity_loss)

    def __init__(
        self,
        sensitivity_weight=0.9,
        specificity_weight=0.1,
        smooth=1.0,
        from_logits=False,
        name="sensitivity_specificity",
        **kwargs,
    ):
        super().__init__(
            name=name,
            sensitivity_weight=sensitivity_weight,
            specificity_weight=specificity_weight,
            smooth=smooth,
            from_logits=from_logits,
            **kwargs,
        )


LOSSES = {
    "flair_dice": FlairDiceLoss,
    "soft_dice": SoftDiceLoss,
    "cross_entropy": CrossEntropyLoss,
    "dice_ce": DiceCELoss,
    "region_dice_bce": RegionDiceBCELoss,
    "sensitivity_specificity": SensitivitySpecificityLoss,
}


def get_loss(name, **kwargs):
    """A configured Keras loss by name, e.g. `get_loss("dice_ce", ce_weight=0.5)`.

    Names: flair_dice, soft_dice, cross_entropy, dice_ce, region_dice_bce,
    sensitivity_specificity. Keyword arguments go to the loss class.

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
