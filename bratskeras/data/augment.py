"""Data augmentation: random transforms applied alike to an image patch and its label.

Two named sets (AUGMENTATION_SETS, `fit --augment`):

- "paper": the lightweight 2020 paper's set: mirroring along each axis,
  90-degree axial rotations, per-channel intensity scale and shift, gamma.
- "nnunet": nnU-Net's set (Isensee et al. 2021, batchgenerators' defaults):
  rotation (+-30 degrees about each axis), scaling (0.7-1.4) and elastic
  deformation, each with probability 0.2, resampled together in one pass
  (trilinear for the image, nearest neighbour for the label); Gaussian noise
  (p 0.1, variance up to 0.1), Gaussian blur (p 0.2, sigma 0.5-1), brightness
  (p 0.15, x0.75-1.25), contrast (p 0.15, x0.75-1.25, range kept),
  low-resolution simulation (p 0.25, down to 0.5-1 of the size and back),
  gamma (p 0.3, 0.7-1.5) and mirroring.

Everything is TensorFlow with stateless randomness seeded per patch, so the
same function runs in the tf.data map on the CPU (`augment_patch`) and inside
a train step on the device (`augment_batch`) and draws the same transforms.
The "paper" set draws exactly as before the nnU-Net transforms existed (they
take their seeds from a split the paper set does not use).

Shapes: image float32 (D, H, W, C); label (D, H, W, K), any dtype.
"""

import math
from dataclasses import dataclass

from bratskeras.data import resampling


@dataclass(frozen=True)
class AugmentConfig:
    """Distribution of the random transforms (applied identically to x and y).

    Attributes:
        flip_probability: per spatial axis.
        rot90: random multiple of 90 degrees in the axial (D, H) plane; only
            applied when the patch's D and H sizes are equal. Drawn as a D/H
            transpose with probability 0.5 combined with the flips; with
            flip_probability 0.5 that is uniform over the 8 axial symmetries,
            i.e. a uniform rotation k * 90 degrees and a uniform flip.
        rotation_degrees: max small-angle axial rotation (uniform in +-); 0 = off
            (it resamples the whole patch, so it costs about as much as the rest).
        scale: per-channel multiplicative factor uniform in [1 - scale, 1 + scale].
        shift: per-channel additive offset uniform in [-shift, shift] (z-score units).
        gamma_probability: chance per patch of a gamma transform.
        gamma_range: per-channel gamma, uniform in this range.
        rotation_3d_probability, rotation_3d_degrees: chance per patch of a
            rotation about each of the 3 axes, uniform in +-degrees.
        zoom_probability, zoom_range: chance of an isotropic scaling by a
            factor in the range (> 1 enlarges the content).
        elastic_probability, elastic_voxels, elastic_wavelength: chance of a
            smooth displacement of up to `elastic_voxels` per axis, made of
            3 plane waves per axis with wavelengths in the range (voxels);
            a cheap stand-in for batchgenerators' smoothed random field.
        noise_probability, noise_variance: additive Gaussian noise, variance
            uniform in the range (z-score units).
        blur_probability, blur_sigma: Gaussian blur, sigma in voxels.
        brightness_probability, brightness_range: per-channel multiplier.
        contrast_probability, contrast_range: per-channel stretch about the
            channel mean, clipped to the channel's original range.
        lowres_probability, lowres_zoom: resize down (nearest) by a factor in
            the range and back up (linear).
    """

    flip_probability: float = 0.5
    rot90: bool = True
    rotation_degrees: float = 0.0
    scale: float = 0.1
    shift: float = 0.1
    gamma_probability: float = 0.3
    gamma_range: tuple = (0.7, 1.5)
    rotation_3d_probability: float = 0.0
    rotation_3d_degrees: float = 30.0
    zoom_probability: float = 0.0
    zoom_range: tuple = (0.7, 1.4)
    elastic_probability: float = 0.0
    elastic_voxels: float = 4.0
    elastic_wavelength: tuple = (24.0, 64.0)
    noise_probability: float = 0.0
    noise_variance: tuple = (0.0, 0.1)
    blur_probability: float = 0.0
    blur_sigma: tuple = (0.5, 1.0)
    brightness_probability: float = 0.0
    brightness_range: tuple = (0.75, 1.25)
    contrast_probability: float = 0.0
    contrast_range: tuple = (0.75, 1.25)
    lowres_probability: float = 0.0
    lowres_zoom: tuple = (0.5, 1.0)

    @property
    def spatial(self):
        """Whether any 3-D resampling transform (rotation, zoom, elastic) can be drawn."""
        return max(self.rotation_3d_probability, self.zoom_probability, self.elastic_probability) > 0

    @property
    def extra_intensity(self):
        """Whether any of nnU-Net's noise, blur, brightness, contrast or low-resolution can be drawn."""
        return max(self.noise_probability, self.blur_probability, self.brightness_probability,
                   self.contrast_probability, self.lowres_probability) > 0


AUGMENTATION_SETS = {
    "paper": AugmentConfig(),
    "nnunet": AugmentConfig(
        flip_probability=0.5, rot90=False, scale=0.0, shift=0.0, gamma_probability=0.3, gamma_range=(0.7, 1.5),
        rotation_3d_probability=0.2, rotation_3d_degrees=30.0, zoom_probability=0.2, zoom_range=(0.7, 1.4),
        elastic_probability=0.2, noise_probability=0.1, blur_probability=0.2, brightness_probability=0.15,
        contrast_probability=0.15, lowres_probability=0.25),
}


def get_augmentation(name):
    """The AugmentConfig of a named set (AUGMENTATION_SETS).

    Raises:
        ValueError: unknown name.
    """
    if name not in AUGMENTATION_SETS:
        raise ValueError(f"unknown augmentation set {name!r}; expected one of {', '.join(AUGMENTATION_SETS)}")
    return AUGMENTATION_SETS[name]


def augment_patch(image, label, seed, config=AugmentConfig()):
    """Random transforms of one patch, identical on image and label.

    Args:
        image: float32 (D, H, W, C).
        label: (D, H, W, K) of any dtype (classes or a float target).
        seed: int32/int64 tensor of shape (2,) (stateless randomness).
        config: AugmentConfig.

    Returns:
        (image, label) with the same shapes and dtypes (D and H swap places
        under rot90 only when they are equal, so shapes never change).
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 8)
    # nnU-Net's transforms draw from seeds[7], which the paper set never uses.
    extra_seeds = tf.random.experimental.stateless_split(seeds[7], 8)
    if config.spatial:
        image, label = _spatial(image, label, extra_seeds[0], config)
    if config.extra_intensity:
        image = _extra_intensity(image, extra_seeds[1:7], config)
    # Flips and 90-degree axial rotations compose into one optional D/H transpose
    # followed by one reverse: each output voxel is copied once, not once per transform.
    transpose = tf.constant(False)
    if config.rot90 and image.shape[0] is not None and image.shape[0] == image.shape[1]:
        transpose = tf.random.stateless_uniform([], seeds[3]) < 0.5
    flips = tf.random.stateless_uniform([3], seeds[0]) < config.flip_probability
    code = tf.cast(transpose, tf.int32) + tf.reduce_sum(tf.cast(flips, tf.int32) * [2, 4, 8])
    label = _flip(label, code)
    scale, shift, apply_gamma, gamma = _intensity_parameters(image, seeds[5], seeds[6], config)
    if config.rotation_degrees > 0:
        angle = tf.random.stateless_uniform([], seeds[4], -1.0, 1.0) * (config.rotation_degrees * math.pi / 180)
        image = _rotate_axial(_flip(image, code), angle, "BILINEAR")
        label = _rotate_axial(label, angle, "NEAREST")
        return _intensity(image, scale, shift, apply_gamma, gamma), label
    # Intensity transforms are per voxel, so they commute with flips: without
    # gamma the flip and the multiply-add are one pass.
    image = tf.cond(apply_gamma,
                    lambda: _intensity(_flip(image, code), scale, shift, True, gamma),
                    lambda: _flip_scale_shift(image, code, scale, shift))
    return image, label


def _flip_variants(volume, code, scale=None, shift=None):
    """Branch `code` (bit 0: D/H transpose, bits 1-3: reverse D, H, W) of 16, then x * scale + shift."""
    import tensorflow as tf

    def variant(k):
        def branch():
            out = tf.transpose(volume, [1, 0, 2, 3]) if k & 1 else volume
            axes = [axis for axis in range(3) if k >> (axis + 1) & 1]
            out = tf.reverse(out, axes) if axes else out
            return out if scale is None else out * scale + shift
        return branch

    return tf.switch_case(code, [variant(k) for k in range(16)])


def _jit(fn):
    import tensorflow as tf

    # XLA fuses the transpose, reverse and multiply-add of a branch into one
    # pass over the patch (faster than TF's separate kernels on CPU; figure in
    # docs/benchmarks.md, "Figures behind code choices"). Only
    # these element-wise kernels are compiled; XLA is not used for convolutions.
    return tf.function(fn, jit_compile=True, reduce_retracing=True)


# The compiled (XLA) element-wise kernels by name, created on first use. Owned
# by this module alone: only its functions read or fill it, and the kernels
# hold no model state, so sharing them across pipelines is safe.
_compiled = {}


def _flip(volume, code):
    """`volume` (D, H, W, C) flipped/transposed as `code` says (see `_flip_variants`)."""
    if "flip" not in _compiled:
        _compiled["flip"] = _jit(lambda volume, code: _flip_variants(volume, code))
    return _compiled["flip"](volume, code)


def _flip_scale_shift(volume, code, scale, shift):
    if "flip_scale_shift" not in _compiled:
        _compiled["flip_scale_shift"] = _jit(_flip_variants)
    return _compiled["flip_scale_shift"](volume, code, scale, shift)


def _rotate_axial(volume, angle, interpolation):
    """Rotates (D, H, W, C) about the patch centre in the (D, H) plane, zero fill."""
    import tensorflow as tf

    shape = tf.shape(volume)
    # View W and C as channels of one 2-D image so one op resamples the whole patch.
    flat = tf.reshape(volume, [1, shape[0], shape[1], shape[2] * shape[3]])
    cy, cx = (tf.cast(shape[0], tf.float32) - 1) / 2, (tf.cast(shape[1], tf.float32) - 1) / 2
    cos, sin = tf.cos(angle), tf.sin(angle)
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                          sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])[None]
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=flat, transforms=transform, output_shape=shape[:2], fill_value=0.0,
        interpolation=interpolation, fill_mode="CONSTANT")
    return tf.reshape(rotated, shape)


def _intensity_parameters(image, seed_affine, seed_gamma, config):
    """Per-channel scale, shift, whether to apply gamma, and gamma; image (D, H, W, C)."""
    import tensorflow as tf

    channels = tf.shape(image)[-1:]
    affine_seeds = tf.random.experimental.stateless_split(seed_affine, 2)
    scale = tf.random.stateless_uniform(channels, affine_seeds[0], 1 - config.scale, 1 + config.scale)
    shift = tf.random.stateless_uniform(channels, affine_seeds[1], -config.shift, config.shift)
    gamma_seeds = tf.random.experimental.stateless_split(seed_gamma, 2)
    apply_gamma = tf.random.stateless_uniform([], gamma_seeds[0]) < config.gamma_probability
    gamma = tf.random.stateless_uniform(channels, gamma_seeds[1], *config.gamma_range)
    return scale, shift, apply_gamma, gamma


def _intensity(image, scale, shift, apply_gamma, gamma):
    """Per-channel gamma (if apply_gamma) then scale and shift; image (D, H, W, C) float32.

    y = ((x - low) / span) ** gamma * span + low, then y * scale + shift.
    """
    import tensorflow as tf

    def with_gamma():
        # Gamma needs non-negative input: map each channel's range to [0, 1] and
        # back, folding the way back and the scale/shift into one multiply-add.
        # exp(g * log(u)) rather than pow(u, g): TF's float pow is scalar code,
        # far slower on CPU than the vectorised exp and log (docs/benchmarks.md,
        # "Figures behind code choices"); log(0) = -inf gives exp(-inf) = 0 =
        # 0**g as pow does.
        low = tf.reduce_min(image, axis=[0, 1, 2])
        span = tf.reduce_max(image, axis=[0, 1, 2]) - low + 1e-7
        unit = (image - low) * (1.0 / span)
        return tf.exp(gamma * tf.math.log(unit)) * (span * scale) + (low * scale + shift)

    if isinstance(apply_gamma, bool):
        return with_gamma() if apply_gamma else image * scale + shift
    return tf.cond(apply_gamma, with_gamma, lambda: image * scale + shift)


def augment_batch(images, labels_batch, seed, config=AugmentConfig()):
    """`augment_patch` on each sample of a batch; pure TF, usable inside a train step.

    Args:
        images: float32 (B, D, H, W, C).
        labels_batch: (B, D, H, W, K), any dtype.
        seed: int tensor (2,), e.g. (seed, step); sample b uses a split of it.
        config: AugmentConfig (the one the pipeline would have used on the CPU).

    Returns:
        (images, labels) of the same shapes and dtypes.
    """
    import tensorflow as tf

    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), batch)
    return tf.map_fn(lambda args: augment_patch(args[0], args[1], args[2], config),
                     (images, labels_batch, seeds),
                     fn_output_signature=(images.dtype, labels_batch.dtype))


# --------------------------------------------------------------------------- nnU-Net's transforms


def _chance(seed, probability):
    """Scalar bool tensor: True with `probability` (stateless)."""
    import tensorflow as tf

    return tf.random.stateless_uniform([], seed) < probability


def _spatial(image, label, seed, config):
    """Rotation, zoom and elastic deformation drawn together, resampled once (none drawn: unchanged).

    The output voxel p (relative to the patch centre c) reads the input at
    R (p / zoom) + c + displacement(p): trilinear for the image, nearest
    neighbour for the label, zero outside the patch.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 6)
    rotate = _chance(seeds[0], config.rotation_3d_probability)
    zoom = _chance(seeds[1], config.zoom_probability)
    elastic = _chance(seeds[2], config.elastic_probability)
    limit = config.rotation_3d_degrees * math.pi / 180
    angles = tf.random.stateless_uniform([3], seeds[3], -limit, limit) * tf.cast(rotate, tf.float32)
    factor = tf.where(zoom, tf.random.stateless_uniform([], seeds[4], *config.zoom_range), 1.0)
    amplitude = tf.where(elastic, tf.constant(config.elastic_voxels, tf.float32), 0.0)

    def resample():
        coords = resampling.sampling_coordinates(tf.shape(image)[:3], angles, factor, amplitude, seeds[5],
                                                 config.elastic_wavelength)
        return _compiled_resampler("trilinear", resampling.trilinear)(image, coords), \
            _compiled_resampler("nearest", resampling.nearest)(label, coords)

    return tf.cond(rotate | zoom | elastic, resample, lambda: (image, label))


def _compiled_resampler(name, function):
    """`function` compiled with XLA (once per process and `name`). It fuses the 8 gathers and
    weights of trilinear interpolation (10x faster than TF's kernels on CPU) and the blur's shifts;
    not the coordinates: XLA made their resize and meshgrid slower."""
    if name not in _compiled:
        _compiled[name] = _jit(function)
    return _compiled[name]


def _extra_intensity(image, seeds, config):
    """nnU-Net's noise, blur, brightness, contrast and low-resolution, each with its probability."""
    import tensorflow as tf

    transforms = [
        (config.noise_probability, _noise),
        (config.blur_probability, _blur),
        (config.brightness_probability, _brightness),
        (config.contrast_probability, _contrast),
        (config.lowres_probability, _low_resolution),
    ]
    for position, (probability, transform) in enumerate(transforms):
        if probability <= 0:
            continue
        draws = tf.random.experimental.stateless_split(seeds[position], 2)
        image = tf.cond(_chance(draws[0], probability),
                        lambda t=transform, s=draws[1]: t(image, s, config), lambda: image)
    return image


def _noise(image, seed, config):
    import tensorflow as tf

    draws = tf.random.experimental.stateless_split(seed, 2)
    variance = tf.random.stateless_uniform([], draws[0], *config.noise_variance)
    return image + tf.random.stateless_normal(tf.shape(image), draws[1]) * tf.sqrt(variance)


def _blur(image, seed, config):
    """Separable Gaussian blur of every channel, one sigma per patch (7 taps, edges repeated)."""
    import tensorflow as tf

    sigma = tf.random.stateless_uniform([], seed, *config.blur_sigma)
    taps = tf.range(-3.0, 4.0)
    kernel = tf.exp(-(taps**2) / (2 * sigma**2))
    return _compiled_resampler("blur", _separable_blur)(image, kernel / tf.reduce_sum(kernel))


def _separable_blur(image, kernel):
    """image (D, H, W, C) convolved with the 7-tap `kernel` along D, H and W (XLA fuses the shifts)."""
    import tensorflow as tf

    for axis in range(3):
        padding = [[0, 0]] * 4
        padding[axis] = [3, 3]
        padded = tf.pad(image, padding, mode="SYMMETRIC")
        size = tf.shape(image)[axis]
        image = sum(kernel[k] * tf.gather(padded, tf.range(k, k + size), axis=axis) for k in range(7))
    return image


def _brightness(image, seed, config):
    import tensorflow as tf

    return image * tf.random.stateless_uniform(tf.shape(image)[-1:], seed, *config.brightness_range)


def _contrast(image, seed, config):
    import tensorflow as tf

    factor = tf.random.stateless_uniform(tf.shape(image)[-1:], seed, *config.contrast_range)
    mean = tf.reduce_mean(image, axis=[0, 1, 2])
    low, high = tf.reduce_min(image, axis=[0, 1, 2]), tf.reduce_max(image, axis=[0, 1, 2])
    return tf.clip_by_value((image - mean) * factor + mean, low, high)


def _low_resolution(image, seed, config):
    """Down to a factor of the size (nearest neighbour) and back up (linear), as a coarser scan."""
    import tensorflow as tf

    shape = tf.shape(image)
    factor = tf.random.stateless_uniform([], seed, *config.lowres_zoom)
    small = tf.maximum(tf.cast(tf.round(tf.cast(shape[:3], tf.float32) * factor), tf.int32), 1)
    coarse = resampling.resize_3d(image, small, "nearest")
    return resampling.resize_3d(coarse, shape[:3], "bilinear")
