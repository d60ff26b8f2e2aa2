"""Resampling a patch through a coordinate field: the spatial half of nnU-Net's augmentation.

`sampling_coordinates` gives, for every output voxel of a (D, H, W) patch,
the input coordinates a rotation about the patch centre, a zoom and a smooth
elastic `displacement` send it to; `trilinear` (images) and `nearest` (labels)
read a volume there, zero outside. `resize_3d` resizes with two 2-D resizes;
`rotate_axial` rotates in the (D, H) plane.
All TensorFlow, graph-safe, stateless (randomness only from the seeds given).
The transforms of bratskeras.data.augmentations draw the parameters;
bratskeras.data.patch resamples once for all of them and compiles the reads with XLA.
"""

import math


def rotation_matrix(angles):
    """3x3 rotation from angles (3,) about the D, H and W axes, composed in that order."""
    import tensorflow as tf

    cos, sin = tf.cos(angles), tf.sin(angles)
    one, zero = tf.ones([]), tf.zeros([])
    about_d = tf.stack([[one, zero, zero], [zero, cos[0], -sin[0]], [zero, sin[0], cos[0]]])
    about_h = tf.stack([[cos[1], zero, sin[1]], [zero, one, zero], [-sin[1], zero, cos[1]]])
    about_w = tf.stack([[cos[2], -sin[2], zero], [sin[2], cos[2], zero], [zero, zero, one]])
    return about_d @ about_h @ about_w


def sampling_coordinates(shape, angles, factor, offsets=None):
    """(D, H, W, 3) float32 input coordinates of each output voxel.

    Output voxel p (relative to the patch centre c) reads the input at
    R(angles) (p / factor) + c + offsets(p).

    Args:
        shape: (3,) int tensor, the patch's (D, H, W).
        angles: (3,) float32 radians about D, H and W.
        factor: scalar float32 zoom (> 1 enlarges the content).
        offsets: (D, H, W, 3) float32 displacement (see `displacement`), or None.
    """
    import tensorflow as tf

    centre = (tf.cast(shape, tf.float32) - 1.0) / 2.0
    axes = [tf.range(tf.cast(shape[a], tf.float32)) - centre[a] for a in range(3)]
    points = tf.stack(tf.meshgrid(*axes, indexing="ij"), axis=-1)  # (D, H, W, 3)
    coords = tf.tensordot(points / factor, tf.transpose(rotation_matrix(angles)), axes=1) + centre
    return coords if offsets is None else coords + offsets


def displacement(shape, amplitude, seed, wavelength_range):
    """Smooth random displacement (D, H, W, 3): per axis 3 plane waves of random direction,
    wavelength and phase, averaged and scaled by `amplitude`.

    Drawn on a grid 4x coarser per axis and resized up (linear): the waves are
    at least `wavelength_range[0]` voxels long, so nothing is lost, and it
    costs a 64th of the sines.
    """
    import tensorflow as tf

    coarse_shape = (shape + 3) // 4
    axes = [tf.range(tf.cast(coarse_shape[a], tf.float32)) * 4.0 for a in range(3)]
    points = tf.stack(tf.meshgrid(*axes, indexing="ij"), axis=-1)  # (d, h, w, 3) in fine voxels
    wave_seeds = tf.random.experimental.stateless_split(seed, 3)
    waves_per_axis = []
    for axis in range(3):
        draws = tf.random.experimental.stateless_split(wave_seeds[axis], 3)
        directions = tf.math.l2_normalize(tf.random.stateless_normal([3, 3], draws[0]), axis=1)
        wavelengths = tf.random.stateless_uniform([3], draws[1], *wavelength_range)
        phases = tf.random.stateless_uniform([3], draws[2], 0.0, 2 * math.pi)
        projection = tf.tensordot(points, tf.transpose(directions), axes=1)  # (d, h, w, 3 waves)
        waves = tf.sin(projection * (2 * math.pi / wavelengths) + phases)
        waves_per_axis.append(tf.reduce_mean(waves, axis=-1) * amplitude)
    return resize_3d(tf.stack(waves_per_axis, axis=-1), shape, "bilinear")


def _flat_index(corner, shape):
    """(index into the flattened volume, inside mask) of integer coordinates (D, H, W, 3)."""
    import tensorflow as tf

    inside = tf.reduce_all((corner >= 0) & (corner < shape), axis=-1)
    clipped = tf.clip_by_value(corner, 0, shape - 1)
    index = (clipped[..., 0] * shape[1] + clipped[..., 1]) * shape[2] + clipped[..., 2]
    return index, inside


def trilinear(volume, coords):
    """volume (D, H, W, C) float read at coords (D, H, W, 3) with linear interpolation, 0 outside."""
    import tensorflow as tf

    shape = tf.shape(volume)
    flat = tf.reshape(volume, [-1, shape[3]])
    low = tf.floor(coords)
    fraction = coords - low
    low = tf.cast(low, tf.int32)
    result = tf.zeros_like(volume)
    for corner in range(8):
        offset = tf.constant([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], tf.int32)
        index, inside = _flat_index(low + offset, shape[:3])
        weights = tf.where(offset == 1, fraction, 1.0 - fraction)
        weight = tf.reduce_prod(weights, axis=-1) * tf.cast(inside, volume.dtype)
        result += tf.gather(flat, index) * weight[..., None]
    return result


def nearest(volume, coords):
    """volume (D, H, W, K), any dtype, read at the nearest voxel of coords (D, H, W, 3), 0 outside."""
    import tensorflow as tf

    shape = tf.shape(volume)
    index, inside = _flat_index(tf.cast(tf.round(coords), tf.int32), shape[:3])
    values = tf.gather(tf.reshape(volume, [-1, shape[3]]), index)
    return tf.where(inside[..., None], values, tf.zeros_like(values))


def resize_3d(volume, size, method):
    """volume (D, H, W, C) resized to size (3,) with two 2-D resizes."""
    import tensorflow as tf

    # (D, H) first with W as the batch, then (H, W) with D as the batch.
    across = tf.image.resize(tf.transpose(volume, [2, 0, 1, 3]), size[:2], method=method)
    along = tf.image.resize(tf.transpose(across, [1, 2, 0, 3]), size[1:], method=method)
    return along


def coarsened(volume, small):
    """volume (D, H, W, C) sampled down to `small` (3,) voxels (nearest) and read back up (linear).

    What resize_3d(resize_3d(volume, small, "nearest"), (D, H, W), "bilinear")
    gives (tf.image.resize's half-pixel centres), axis by axis, without a
    tensor of the drawn small size: every shape stays the volume's, so XLA
    compiles it (a resize to a random size has no compile-time shape, which
    XLA refuses).
    """
    for axis in range(3):
        volume = _coarsened_axis(volume, axis, small[axis])
    return volume


def _coarsened_axis(volume, axis, small):
    import tensorflow as tf

    size = tf.shape(volume)[axis]
    n, m = tf.cast(size, tf.float32), tf.cast(small, tf.float32)
    # Linear read-back: output voxel i lies at u on the small grid (clamped at its first sample).
    position = tf.maximum((tf.range(n) + 0.5) * m / n - 0.5, 0.0)
    low = tf.floor(position)
    weight = position - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, small - 1)

    def source(sample):  # nearest read-down: small sample j is voxel floor((j + 0.5) n / m)
        return tf.minimum(tf.cast(tf.floor((tf.cast(sample, tf.float32) + 0.5) * n / m), tf.int32), size - 1)

    shape = [1, 1, 1, 1]
    shape[axis] = -1
    weight = tf.reshape(weight, shape)
    return tf.gather(volume, source(low), axis=axis) * (1 - weight) + tf.gather(volume, source(high), axis=axis) * weight


def rotate_axial(volume, angle, interpolation):
    """Rotates (D, H, W, C) by `angle` (radians) about the patch centre in the (D, H) plane, zero fill.

    interpolation: "BILINEAR" (images) or "NEAREST" (labels).
    """
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
