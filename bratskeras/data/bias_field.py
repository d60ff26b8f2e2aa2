"""A scan's smooth intensity bias, measured and divided out: the input side of predict's `bias_refit` step.

Receive-coil sensitivity makes the same tissue brighter at one end of a
scan than at the other. BraTS 2018's preprocessing (co-registration, 1 mm
resampling, skull-stripping) leaves it in, and on several public BraTS
2018 CBICA scans the healthy brain's FLAIR is 20-30 % brighter in the
lowest slabs than its median: as bright as oedema, so a network marks the
lower brain as tumour. The field is modelled as a plane in log intensity,
log I = a + b*d + c*h + e*w, one per modality: too low an order to bend
around anatomy (grey and white matter, ventricles, cerebellum). A quadratic
can, and on the 46 public real scans the step was chosen on it gave a lower
mean Dice and made more scans worse (README, "Pretrained models").
T1c is not corrected (LEFT_AS_IS): its contrast-lit vessels and dura tilt
its plane, and correcting it turned a low-grade glioma's core into ET.

The fit is a trimmed least squares over the brain with the tumour left
out (`exclude`: predict passes the tumour it found first, with a margin):
each round keeps the voxels whose residual lies between TRIM's percentiles
of the previous round's, so CSF, vessels and what is left of the lesion
weigh nothing. Its limit: a brain of two tissues far apart in brightness
can tilt the trimmed window toward one tissue at one end and the other at
the other (measured on a stylised head of two tissues 25 % apart, 60/40:
a slope off by 0.0015 per voxel; at 10 % apart, by under 0.0003). White
and grey matter on T1 can be that far apart.
"""

import numpy as np

from bratskeras.data.preprocessing import channel_foreground

# Residual percentiles kept in each round of the trimmed fit, and the rounds.
TRIM = (20.0, 80.0)
ROUNDS = 4
# The fit reads every SUBSAMPLE-th voxel along each axis (a 240 x 240 x 155
# BraTS volume: ~60,000 brain voxels instead of 1.5 million).
SUBSAMPLE = 3
# Fewer sampled voxels than this to fit a plane to: the channel is left as it is.
MIN_SAMPLES = 100
# Modalities left as they are. T1c: the contrast agent lights vessels, dura, venous sinuses
# and choroid plexus unevenly across the head, and T1c's plane leans toward them. On a public
# low-grade glioma (BraTS 2018 TCIA10_637) it spanned 0.73-1.27 across the brain against
# pre-contrast T1's 0.9-1.1, and the corrected T1c turned 18,854 voxels into ET instead of
# 4,400 (reference: 1,585). Left as it is: 4,288, and a higher mean Dice over 46 public scans
# than correcting it with its own plane or with T1's (README, "Pretrained models").
LEFT_AS_IS = frozenset({"t1ce"})


def linear_log_field(channel, exclude=None):
    """The multiplicative bias of one volume: exp of the plane fitted to its log intensity over the brain.

    Args:
        channel: (D, H, W) intensities of one modality, any scale; its
            background (0, or the constant preprocessing.background_value
            finds) is left out.
        exclude: optional bool (D, H, W): voxels left out of the fit (the tumour).

    Returns:
        (coefficients float64 (4,): a, b, c, e of log I = a + b*d + c*h + e*w,
        shifted so that the field's mean log over the fitted voxels is 0), or
        None where fewer than MIN_SAMPLES brain voxels are left to fit.
    """
    channel = np.asarray(channel)
    return _fit(channel, channel_foreground(channel), exclude)


def _fit(channel, brain, exclude):
    """`linear_log_field` of `channel` given its brain mask (bool (D, H, W)), computed once by the caller."""
    fitted = brain & (channel > 0)  # a log needs positive intensities
    if exclude is not None:
        fitted &= ~np.asarray(exclude, dtype=bool)
    sampled = fitted[::SUBSAMPLE, ::SUBSAMPLE, ::SUBSAMPLE]
    if int(sampled.sum()) < MIN_SAMPLES:
        return None
    coordinates = np.argwhere(sampled).astype(np.float64) * SUBSAMPLE
    values = np.log(channel[::SUBSAMPLE, ::SUBSAMPLE, ::SUBSAMPLE][sampled].astype(np.float64))
    centre = coordinates.mean(axis=0)  # centred coordinates keep the least squares well conditioned
    design = np.column_stack([np.ones(len(values)), coordinates - centre])
    kept = np.ones(len(values), dtype=bool)
    for _ in range(ROUNDS):
        coefficients = np.linalg.lstsq(design[kept], values[kept], rcond=None)[0]
        residuals = values - design @ coefficients
        low, high = np.percentile(residuals[kept], TRIM)
        kept = (residuals >= low) & (residuals <= high)
    slope = coefficients[1:]
    # Back to voxel indices, and the mean log over every fitted voxel (not only the sampled ones) to 0.
    offset = -float(np.mean(np.argwhere(fitted) @ slope))
    return np.concatenate([[offset], slope])


def divide_linear_field(image, exclude=None, modalities=None):
    """`image` with each channel's `linear_log_field` divided out of its brain voxels.

    Args:
        image: (D, H, W, C) intensities, channels last.
        exclude: optional bool (D, H, W) left out of every channel's fit.
        modalities: optional C modality names of the channels: those in
            LEFT_AS_IS (T1c) are not corrected. None: every channel is.

    Returns:
        float32 (D, H, W, C): the brain's voxels divided by the field, the
        background unchanged; a channel with too little brain to fit, or left
        as it is by name, is returned as it is.
    """
    image = np.asarray(image)
    names = list(modalities) if modalities is not None else [None] * image.shape[-1]
    result = image.astype(np.float32, copy=True)
    for c, name in enumerate(names):
        if name in LEFT_AS_IS:
            continue
        channel = image[..., c]
        brain = channel_foreground(channel)
        coefficients = _fit(channel, brain, exclude)
        if coefficients is not None:
            result[..., c][brain] /= _field(coefficients, channel.shape)[brain]
    return result


def _field(coefficients, shape):
    """float32 (D, H, W) exp(a + b*d + c*h + e*w): the product of one exponential per axis (no index grids)."""
    offset, *slopes = coefficients
    axes = [np.exp(slope * np.arange(size, dtype=np.float64)) for slope, size in zip(slopes, shape)]
    return (np.exp(offset) * axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]).astype(
        np.float32)
