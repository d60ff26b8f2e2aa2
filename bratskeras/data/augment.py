"""Data augmentation: named sets of random transforms applied alike to an image patch and its label.

An `Augmentation` is an ordered tuple of configured transforms
(bratskeras.data.augmentations: one class per transform, owning its
options and their checks). Two named sets (AUGMENTATION_SETS, `fit --augment`):

- "paper": the lightweight 2020 paper's set: 90-degree axial rotations,
  mirroring along each axis, gamma, per-channel intensity scale and shift
  (and an optional small axial rotation, off).
- "nnunet": nnU-Net's set (Isensee et al. 2021, batchgenerators' defaults):
  rotation (+-30 degrees about each axis), scaling (0.7-1.4) and elastic
  deformation, each with probability 0.2, resampled together in one pass
  (trilinear for the image, nearest neighbour for the label); Gaussian noise
  (p 0.1, variance up to 0.1), Gaussian blur (p 0.2, sigma 0.5-1), brightness
  (p 0.15, x0.75-1.25), contrast (p 0.15, x0.75-1.25, range kept),
  low-resolution simulation (p 0.25, down to 0.5-1 of the size and back),
  mirroring and gamma (p 0.3, 0.7-1.5).

Everything is TensorFlow with stateless randomness seeded per patch, so the
same function runs in the tf.data map on the CPU (`augment_patch`) and inside
a train step on the device (`augment_batch`) and draws the same transforms.
Each transform draws from its own stream, named after it (`stream`): leaving
out or inserting a transform does not change what the others draw.

Shapes: image float32 (D, H, W, C); label (D, H, W, K), any dtype.
"""

import zlib
from dataclasses import dataclass, replace

from bratskeras.data.augmentations import (
    AxialRotation,
    Blur,
    Brightness,
    Contrast,
    Elastic,
    Gamma,
    LowResolution,
    Mirror,
    Noise,
    Rot90,
    Rotation3D,
    ScaleShift,
    Transform,
    Zoom,
)
from bratskeras.data.patch import Patch


@dataclass(frozen=True)
class Augmentation:
    """An ordered set of configured transforms, applied in this order.

    Attributes:
        transforms: tuple of augmentations.Transform, each name at most once
            (a name is a random stream).
    """

    transforms: tuple = ()

    def __post_init__(self):
        transforms = tuple(self.transforms)
        strangers = [t for t in transforms if not isinstance(t, Transform)]
        if strangers:
            raise ValueError(f"an augmentation is a sequence of augmentations.Transform, got {strangers[0]!r}")
        names = [t.name for t in transforms]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"each transform may appear once (its name is its random stream); "
                             f"repeated: {', '.join(repeated)}")
        object.__setattr__(self, "transforms", transforms)

    def __iter__(self):
        return iter(self.transforms)

    @property
    def names(self):
        return tuple(t.name for t in self.transforms)

    def __getitem__(self, name):
        """The transform called `name`."""
        if name not in self.names:
            raise KeyError(f"no transform {name!r} in this augmentation ({', '.join(self.names)})")
        return self.transforms[self.names.index(name)]

    def with_options(self, **options):
        """A copy with some transforms' options changed, e.g. with_options(mirror={"probability": 0.2}).

        Raises:
            ValueError: a transform not in the set, an option it lacks, or a bad value.
        """
        for name in options:
            if name not in self.names:
                raise ValueError(f"no transform {name!r} in this augmentation ({', '.join(self.names)})")
        try:
            return Augmentation(tuple(replace(t, **options.get(t.name, {})) for t in self.transforms))
        except TypeError as error:  # dataclasses.replace: an option the transform does not have
            raise ValueError(f"bad transform option: {error}") from None

    def without(self, *names):
        """A copy without the transforms called `names`."""
        return Augmentation(tuple(t for t in self.transforms if t.name not in names))


# The transforms' defaults are these sets' values (the paper's, nnU-Net's), so the sets only name them.
AUGMENTATION_SETS = {
    "paper": Augmentation((Rot90(), Mirror(), AxialRotation(), Gamma(), ScaleShift())),
    "nnunet": Augmentation((Rotation3D(), Zoom(), Elastic(), Noise(), Blur(), Brightness(), Contrast(),
                            LowResolution(), Mirror(), Gamma())),
}


def get_augmentation(name):
    """The Augmentation of a named set (AUGMENTATION_SETS).

    Raises:
        ValueError: unknown name.
    """
    if name not in AUGMENTATION_SETS:
        raise ValueError(f"unknown augmentation set {name!r}; expected one of {', '.join(AUGMENTATION_SETS)}")
    return AUGMENTATION_SETS[name]


def stream(seed, name):
    """The seed, int64 (2,), of transform `name`'s random stream for a patch's `seed` (2,).

    The patch's seed with a stable hash of the name folded in (crc32, not
    Python's salted hash(); as bratskeras.synth.synthseg.stream names its
    streams), so a transform's draws depend only on the patch and its name.
    """
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64),
                                                    tf.constant(zlib.crc32(name.encode()), tf.int64))


def augment_patch(image, label, seed, augmentation=AUGMENTATION_SETS["paper"]):
    """Random transforms of one patch, identical on image and label.

    Args:
        image: float32 (D, H, W, C).
        label: (D, H, W, K) of any dtype (classes or a float target).
        seed: int32/int64 tensor of shape (2,) (stateless randomness).
        augmentation: an Augmentation (default: the paper's set).

    Returns:
        (image, label) with the same shapes and dtypes (D and H swap places
        under a 90-degree rotation only when they are equal, so shapes never change).
    """
    patch = Patch(image, label)
    for transform in augmentation:
        # An inactive transform (probability 0) draws nothing: it costs nothing.
        if transform.active:
            patch = transform.apply(patch, stream(seed, transform.name))
    patch = patch.resolved()
    return patch.image, patch.label


def augment_batch(images, labels_batch, seed, augmentation=AUGMENTATION_SETS["paper"]):
    """`augment_patch` on each sample of a batch; pure TF, usable inside a train step.

    Args:
        images: float32 (B, D, H, W, C).
        labels_batch: (B, D, H, W, K), any dtype.
        seed: int tensor (2,), e.g. (seed, step); sample b uses a split of it.
        augmentation: the Augmentation (the one the pipeline would have used on the CPU).

    Returns:
        (images, labels) of the same shapes and dtypes.
    """
    import tensorflow as tf

    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), batch)
    return tf.map_fn(lambda args: augment_patch(args[0], args[1], args[2], augmentation),
                     (images, labels_batch, seeds),
                     fn_output_signature=(images.dtype, labels_batch.dtype))
