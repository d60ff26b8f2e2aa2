"""A patch under augmentation: its image and label plus the transforms drawn but not yet applied.

Transforms run in their set's order (bratskeras.data.augment), but three
kinds are held back and applied together, so each output voxel is written
once rather than once per transform:

- a warp (3-D rotation, zoom, elastic displacement): one resampling,
  trilinear for the image, nearest neighbour for the label;
- an axial symmetry, `code` 0..15: bit 0 a D/H transpose, then bits 1-3
  reverse D, H and W (90-degree rotations and mirroring compose into one);
- a per-channel affine of the image, x * scale + shift.

They apply in that order. A transform that must see the voxels asks for
them (`resolved`, `map_image`, `map_both`), which applies what is held
back first; one that commutes with the symmetries (per-voxel maps with
per-channel statistics, a symmetric blur) may leave the symmetry held.

Shapes: image float32 (D, H, W, C); label (D, H, W, K), any dtype.
"""

from dataclasses import dataclass, replace

from bratskeras.data import resampling


@dataclass(frozen=True)
class Warp:
    """A resampling drawn but not applied: output voxel p (from the centre c) reads the input at
    R(angles) (p / factor) + c + displacement(p) (resampling.sampling_coordinates).

    Attributes:
        drawn: bool scalar tensor, whether any part was drawn (none: the patch stays as it is).
        angles: (3,) float32 radians about D, H and W, or None (no rotation).
        factor: float32 scalar zoom, or None (1).
        elastic: (amplitude scalar, seed (2,), wavelength (min, max)) of
            resampling.displacement, or None (no displacement).
    """

    drawn: object = False
    angles: object = None
    factor: object = None
    elastic: tuple | None = None

    def apply(self, image, label):
        """(image, label) resampled through the warp when it was drawn."""
        import tensorflow as tf

        def resample():
            shape = tf.shape(image)[:3]
            angles = tf.zeros([3]) if self.angles is None else self.angles
            factor = 1.0 if self.factor is None else self.factor
            offsets = None if self.elastic is None else resampling.displacement(shape, *self.elastic)
            coords = resampling.sampling_coordinates(shape, angles, factor, offsets)
            return (xla_kernel("trilinear", resampling.trilinear)(image, coords),
                    xla_kernel("nearest", resampling.nearest)(label, coords))

        return tf.cond(self.drawn, resample, lambda: (image, label))


def compose_symmetries(first, then):
    """The code (int32 scalar) of symmetry `then` applied after symmetry `first` (codes as above).

    then . first = reverse(f2) . transpose^t2 . reverse(f1) . transpose^t1
                 = reverse(f2 xor swap^t2(f1)) . transpose^(t1 xor t2),
    where swap exchanges the D and H reversal bits (a transpose moves D's reversal to H).
    """
    import tensorflow as tf

    first, then = tf.cast(first, tf.int32), tf.cast(then, tf.int32)
    bits = tf.bitwise

    def bit(code, position):
        return bits.bitwise_and(bits.right_shift(code, position), 1)

    swapped = bits.bitwise_or(bits.bitwise_and(first, 9),
                              bits.bitwise_or(bits.left_shift(bit(first, 1), 2), bits.left_shift(bit(first, 2), 1)))
    return bits.bitwise_xor(tf.where(bit(then, 0) == 1, swapped, first), then)


@dataclass(frozen=True)
class Patch:
    """One patch and what is held back (see the module docstring).

    Attributes:
        image: float32 (D, H, W, C); label: (D, H, W, K).
        warp: Warp or None.
        code: int32 scalar tensor of the held symmetry, or None.
        scale, shift: float32 (C,) of the held affine, or None.
    """

    image: object
    label: object
    warp: Warp | None = None
    code: object = None
    scale: object = None
    shift: object = None

    def warped(self, drawn, **parts):
        """Adds a part (angles=, factor= or elastic=) to the warp; `drawn` bool scalar tensor."""
        # The warp applies first: a symmetry or affine held from earlier transforms must apply before it.
        base = self if self.code is None and self.scale is None else self.resolved()
        warp = base.warp or Warp()
        return replace(base, warp=replace(warp, drawn=drawn if warp.drawn is False else warp.drawn | drawn, **parts))

    def symmetry(self, code):
        """Adds the symmetry `code` (int32 scalar tensor) after the one held."""
        return replace(self, code=code if self.code is None else compose_symmetries(self.code, code))

    def affine(self, scale, shift):
        """Adds x * scale + shift ((C,) each) after the affine held."""
        if self.scale is None:
            return replace(self, scale=scale, shift=shift)
        return replace(self, scale=self.scale * scale, shift=self.shift * scale + shift)

    def resolved(self, keep_symmetry=False):
        """The patch with the held warp, symmetry (unless keep_symmetry) and affine applied."""
        image, label = self.image, self.label
        if self.warp is not None:
            image, label = self.warp.apply(image, label)
        if self.code is not None and not keep_symmetry:
            label = _flip(label, self.code)
            image = _flip(image, self.code) if self.scale is None else \
                _flip_scale_shift(image, self.code, self.scale, self.shift)
        elif self.scale is not None:
            image = image * self.scale + self.shift
        return Patch(image, label, code=self.code if keep_symmetry else None)

    def map_image(self, function, keep_symmetry=False):
        """image -> function(image) ((D, H, W, C) -> same), after what is held back.

        keep_symmetry: `function` commutes with the axial symmetries, so the held one may stay held.
        """
        patch = self.resolved(keep_symmetry)
        return replace(patch, image=function(patch.image))

    def map_both(self, function):
        """(image, label) -> function(image, label), after everything held back."""
        patch = self.resolved()
        image, label = function(patch.image, patch.label)
        return Patch(image, label)


# --------------------------------------------------------------------------- XLA-compiled kernels


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


# The compiled (XLA) element-wise kernels by name, created on first use. Owned
# by this module alone: only its functions read or fill it, and the kernels
# hold no model state, so sharing them across pipelines is safe.
_compiled = {}


def xla_kernel(name, function):
    """`function` compiled with XLA, once per process and `name`.

    XLA fuses the transpose, reverse and multiply-add of a symmetry branch into
    one pass over the patch, the 8 gathers and weights of trilinear
    interpolation (10x faster than TF's kernels on CPU) and the blur's shifts
    (figures in docs/benchmarks.md, "Figures behind code choices"). Only these
    element-wise kernels are compiled: not convolutions, and not the warp's
    coordinates (XLA made their resize and meshgrid slower).
    """
    import tensorflow as tf

    if name not in _compiled:
        _compiled[name] = tf.function(function, jit_compile=True, reduce_retracing=True)
    return _compiled[name]


def _flip(volume, code):
    """`volume` (D, H, W, C) transposed/reversed as `code` says."""
    return xla_kernel("flip", lambda volume, code: _flip_variants(volume, code))(volume, code)


def _flip_scale_shift(volume, code, scale, shift):
    """`_flip` then x * scale + shift ((C,) each), one fused pass."""
    return xla_kernel("flip_scale_shift", _flip_variants)(volume, code, scale, shift)
