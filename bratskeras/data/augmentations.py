"""The random transforms of augmentation, one class each: its options, their checks, what it does.

A transform is a frozen dataclass; its fields are its options (the
defaults: the paper's or nnU-Net's values) and a bad value raises a
one-line ValueError when it is made. `name` names its random stream
(bratskeras.data.augment.stream) and its options in
`Augmentation.with_options`; `active` is False when its options make it a
no-op (probability 0), so it draws nothing and costs nothing.
`apply(patch, seed)` takes a bratskeras.data.patch.Patch (image float32
(D, H, W, C), label (D, H, W, K) of any dtype) and its stream's seed, int64
(2,), and returns the patch with the transform applied or held back to be
applied with others in one pass. Shapes never change. Image and label move
alike: spatial transforms resample both (the label by nearest neighbour),
intensity transforms change the image only.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from bratskeras.core import checks
from bratskeras.data import resampling
from bratskeras.data.patch import xla_kernel

# The symmetry codes (bratskeras.data.patch) of rotations by k * 90 degrees in the (D, H)
# plane, k = 0..3, as np.rot90(volume, k, axes=(0, 1)): none, transpose + reverse D,
# reverse D and H, transpose + reverse H.
ROTATIONS_90 = (0, 3, 6, 5)


class Transform:
    """Base of the transforms: checks on construction, `active`, one-line errors naming the transform."""

    name: ClassVar[str] = ""

    def __post_init__(self):
        self.check()

    def check(self):
        """ValueError (one line) for a bad option; the default checks `probability`."""
        self._check_interval("probability", self.probability, 0.0, 1.0)

    @property
    def active(self):
        return self.probability > 0

    def apply(self, patch, seed):
        raise NotImplementedError

    def _check_interval(self, option, value, low, high):
        if not checks.is_real(value) or not low <= value <= high:
            raise ValueError(f"augmentation {self.name!r}: {option} must be in [{low}, {high}], got {value!r}")

    def _check_range(self, option, bounds, low, high=math.inf):
        """A (min, max) option within [low, high]; stored as a tuple so the transform stays hashable."""
        check, what = checks.pair_within(low, high)
        if not check(bounds):
            raise ValueError(f"augmentation {self.name!r}: {option} must be {what}, got {bounds!r}")
        object.__setattr__(self, option, tuple(float(b) for b in bounds))


def _split(seed, count):
    """`count` independent seeds (2,) from one (a list: graph tensors cannot be unpacked)."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, count)
    return [seeds[i] for i in range(count)]


def _chance(seed, probability):
    """Scalar bool tensor: True with `probability` (stateless)."""
    import tensorflow as tf

    return tf.random.stateless_uniform([], seed) < probability


def _with_probability(patch, seed, probability, function, keep_symmetry):
    """patch.map_image(function(image, values_seed)) with `probability`, else the image as it is."""
    import tensorflow as tf

    chance_seed, values_seed = _split(seed, 2)
    return patch.map_image(lambda image: tf.cond(_chance(chance_seed, probability),
                                                 lambda: function(image, values_seed), lambda: image),
                           keep_symmetry=keep_symmetry)


# --------------------------------------------------------------------------- symmetries and axial rotation


@dataclass(frozen=True)
class Mirror(Transform):
    """Reverses each spatial axis (D, H, W) independently with `probability`."""

    name: ClassVar[str] = "mirror"
    probability: float = 0.5

    def apply(self, patch, seed):
        import tensorflow as tf

        flips = tf.cast(tf.random.stateless_uniform([3], seed) < self.probability, tf.int32)
        return patch.symmetry(tf.reduce_sum(flips * [2, 4, 8]))


@dataclass(frozen=True)
class Rot90(Transform):
    """Rotation by a uniform multiple of 90 degrees in the axial (D, H) plane.

    Applied only when the patch's D and H sizes are equal (statically), so
    shapes never change. With Mirror's 0.5 it makes the 8 axial symmetries
    (and W's mirroring) uniform.
    """

    name: ClassVar[str] = "rot90"

    def check(self):
        pass

    @property
    def active(self):
        return True

    def apply(self, patch, seed):
        import tensorflow as tf

        shape = patch.image.shape
        if shape[0] is None or shape[0] != shape[1]:
            return patch
        k = tf.random.stateless_uniform([], seed, 0, 4, dtype=tf.int32)
        return patch.symmetry(tf.gather(ROTATIONS_90, k))


@dataclass(frozen=True)
class AxialRotation(Transform):
    """Small-angle rotation in the axial (D, H) plane, uniform in +-`degrees`; 0 = off.

    It resamples the whole patch (bilinear image, nearest label, zero fill),
    so it costs about as much as the rest of the paper's set.
    """

    name: ClassVar[str] = "axial_rotation"
    degrees: float = 0.0

    def check(self):
        self._check_interval("degrees", self.degrees, 0.0, 180.0)

    @property
    def active(self):
        return self.degrees > 0

    def apply(self, patch, seed):
        import tensorflow as tf

        angle = tf.random.stateless_uniform([], seed, -1.0, 1.0) * (self.degrees * math.pi / 180)
        return patch.map_both(lambda image, label: (resampling.rotate_axial(image, angle, "BILINEAR"),
                                                    resampling.rotate_axial(label, angle, "NEAREST")))


# --------------------------------------------------------------------------- nnU-Net's spatial transforms


@dataclass(frozen=True)
class Rotation3D(Transform):
    """With `probability`, a rotation about each of the 3 axes, uniform in +-`degrees` (one resampling
    with Zoom and Elastic)."""

    name: ClassVar[str] = "rotation_3d"
    probability: float = 0.2
    degrees: float = 30.0

    def check(self):
        super().check()
        self._check_interval("degrees", self.degrees, 0.0, 180.0)

    def apply(self, patch, seed):
        import tensorflow as tf

        chance_seed, values_seed = _split(seed, 2)
        drawn = _chance(chance_seed, self.probability)
        limit = self.degrees * math.pi / 180
        angles = tf.random.stateless_uniform([3], values_seed, -limit, limit) * tf.cast(drawn, tf.float32)
        return patch.warped(drawn, angles=angles)


@dataclass(frozen=True)
class Zoom(Transform):
    """With `probability`, isotropic scaling by a factor uniform in `range` (> 1 enlarges the content)."""

    name: ClassVar[str] = "zoom"
    probability: float = 0.2
    range: tuple = (0.7, 1.4)

    def check(self):
        super().check()
        self._check_range("range", self.range, 1e-3)

    def apply(self, patch, seed):
        import tensorflow as tf

        chance_seed, values_seed = _split(seed, 2)
        drawn = _chance(chance_seed, self.probability)
        factor = tf.where(drawn, tf.random.stateless_uniform([], values_seed, *self.range), 1.0)
        return patch.warped(drawn, factor=factor)


@dataclass(frozen=True)
class Elastic(Transform):
    """With `probability`, a smooth displacement of up to `voxels` per axis: 3 plane waves per axis
    with wavelengths uniform in `wavelength` (voxels); a cheap stand-in for batchgenerators'
    smoothed random field (resampling.displacement)."""

    name: ClassVar[str] = "elastic"
    probability: float = 0.2
    voxels: float = 4.0
    wavelength: tuple = (24.0, 64.0)

    def check(self):
        super().check()
        self._check_interval("voxels", self.voxels, 0.0, math.inf)
        self._check_range("wavelength", self.wavelength, 1.0)

    def apply(self, patch, seed):
        import tensorflow as tf

        chance_seed, values_seed = _split(seed, 2)
        drawn = _chance(chance_seed, self.probability)
        amplitude = tf.where(drawn, tf.constant(self.voxels, tf.float32), 0.0)
        return patch.warped(drawn, elastic=(amplitude, values_seed, self.wavelength))


# --------------------------------------------------------------------------- intensity (image only)


@dataclass(frozen=True)
class Gamma(Transform):
    """With `probability`, a per-channel gamma uniform in `range`, on each channel's range mapped to [0, 1].

    y = ((x - low) / span) ** gamma * span + low per channel.
    """

    name: ClassVar[str] = "gamma"
    probability: float = 0.3
    range: tuple = (0.7, 1.5)

    def check(self):
        super().check()
        self._check_range("range", self.range, 1e-3)

    def apply(self, patch, seed):
        import tensorflow as tf

        def gamma(image, values_seed):
            # exp(g * log(u)) rather than pow(u, g): TF's float pow is scalar code,
            # far slower on CPU than the vectorised exp and log (docs/benchmarks.md,
            # "Figures behind code choices"); log(0) = -inf gives exp(-inf) = 0 = 0**g.
            power = tf.random.stateless_uniform(tf.shape(image)[-1:], values_seed, *self.range)
            low = tf.reduce_min(image, axis=[0, 1, 2])
            span = tf.reduce_max(image, axis=[0, 1, 2]) - low + 1e-7
            return tf.exp(power * tf.math.log((image - low) * (1.0 / span))) * span + low

        # Per voxel, with per-channel statistics: it commutes with the symmetries.
        return _with_probability(patch, seed, self.probability, gamma, keep_symmetry=True)


@dataclass(frozen=True)
class ScaleShift(Transform):
    """Per-channel x * s + t, s uniform in [1 - scale, 1 + scale], t in [-shift, shift] (z-score units)."""

    name: ClassVar[str] = "scale_shift"
    scale: float = 0.1
    shift: float = 0.1

    def check(self):
        self._check_interval("scale", self.scale, 0.0, 0.99)
        self._check_interval("shift", self.shift, 0.0, math.inf)

    @property
    def active(self):
        return self.scale > 0 or self.shift > 0

    def apply(self, patch, seed):
        import tensorflow as tf

        scale_seed, shift_seed = _split(seed, 2)
        channels = tf.shape(patch.image)[-1:]
        scale = tf.random.stateless_uniform(channels, scale_seed, 1 - self.scale, 1 + self.scale)
        shift = tf.random.stateless_uniform(channels, shift_seed, -self.shift, self.shift)
        # Held, to be fused with the symmetry's pass (bratskeras.data.patch).
        return patch.affine(scale, shift)


@dataclass(frozen=True)
class Noise(Transform):
    """With `probability`, additive Gaussian noise of variance uniform in `variance` (z-score units)."""

    name: ClassVar[str] = "noise"
    probability: float = 0.1
    variance: tuple = (0.0, 0.1)

    def check(self):
        super().check()
        self._check_range("variance", self.variance, 0.0)

    def apply(self, patch, seed):
        import tensorflow as tf

        def noise(image, values_seed):
            variance_seed, field_seed = _split(values_seed, 2)
            variance = tf.random.stateless_uniform([], variance_seed, *self.variance)
            return image + tf.random.stateless_normal(tf.shape(image), field_seed) * tf.sqrt(variance)

        return _with_probability(patch, seed, self.probability, noise, keep_symmetry=False)


@dataclass(frozen=True)
class Blur(Transform):
    """With `probability`, separable Gaussian blur of every channel, sigma (voxels) uniform in `sigma`
    (7 taps, edges mirrored)."""

    name: ClassVar[str] = "blur"
    probability: float = 0.2
    sigma: tuple = (0.5, 1.0)

    def check(self):
        super().check()
        self._check_range("sigma", self.sigma, 1e-3)

    def apply(self, patch, seed):
        import tensorflow as tf

        def blur(image, values_seed):
            sigma = tf.random.stateless_uniform([], values_seed, *self.sigma)
            kernel = tf.exp(-(tf.range(-3.0, 4.0) ** 2) / (2 * sigma**2))
            return xla_kernel("blur", _separable_blur)(image, kernel / tf.reduce_sum(kernel))

        # A symmetric kernel on every axis: it commutes with the symmetries.
        return _with_probability(patch, seed, self.probability, blur, keep_symmetry=True)


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


@dataclass(frozen=True)
class Brightness(Transform):
    """With `probability`, each channel times a factor uniform in `range`."""

    name: ClassVar[str] = "brightness"
    probability: float = 0.15
    range: tuple = (0.75, 1.25)

    def check(self):
        super().check()
        self._check_range("range", self.range, 0.0)

    def apply(self, patch, seed):
        import tensorflow as tf

        def brightness(image, values_seed):
            return image * tf.random.stateless_uniform(tf.shape(image)[-1:], values_seed, *self.range)

        return _with_probability(patch, seed, self.probability, brightness, keep_symmetry=True)


@dataclass(frozen=True)
class Contrast(Transform):
    """With `probability`, each channel stretched about its mean by a factor uniform in `range`,
    clipped to the channel's original range."""

    name: ClassVar[str] = "contrast"
    probability: float = 0.15
    range: tuple = (0.75, 1.25)

    def check(self):
        super().check()
        self._check_range("range", self.range, 0.0)

    def apply(self, patch, seed):
        import tensorflow as tf

        def contrast(image, values_seed):
            factor = tf.random.stateless_uniform(tf.shape(image)[-1:], values_seed, *self.range)
            mean = tf.reduce_mean(image, axis=[0, 1, 2])
            low, high = tf.reduce_min(image, axis=[0, 1, 2]), tf.reduce_max(image, axis=[0, 1, 2])
            return tf.clip_by_value((image - mean) * factor + mean, low, high)

        return _with_probability(patch, seed, self.probability, contrast, keep_symmetry=True)


@dataclass(frozen=True)
class LowResolution(Transform):
    """With `probability`, resized down (nearest neighbour) to a factor of the size uniform in `zoom`
    and back up (linear), as a coarser scan."""

    name: ClassVar[str] = "low_resolution"
    probability: float = 0.25
    zoom: tuple = (0.5, 1.0)

    def check(self):
        super().check()
        self._check_range("zoom", self.zoom, 0.01, 1.0)

    def apply(self, patch, seed):
        import tensorflow as tf

        def low_resolution(image, values_seed):
            shape = tf.shape(image)
            factor = tf.random.stateless_uniform([], values_seed, *self.zoom)
            small = tf.maximum(tf.cast(tf.round(tf.cast(shape[:3], tf.float32) * factor), tf.int32), 1)
            return resampling.coarsened(image, small)

        return _with_probability(patch, seed, self.probability, low_resolution, keep_symmetry=False)
