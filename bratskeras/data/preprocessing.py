"""Intensity normalisation, cropping and resampling, numpy/scipy, each with its inverse.

Arrays: images (D, H, W, C) float32, labels (D, H, W); D, H, W are the NIfTI
axes i, j, k. A crop is described by a geometry dict

    {"original_shape": (D, H, W), "start": (d0, h0, w0), "size": (d, h, w)}

where `start` may be negative and `start + size` may exceed the original
shape: those parts of the crop are zero padding. `uncrop` puts a prediction
made on the crop back onto the original grid.

With a target voxel size (`PreprocessSettings.spacing`, nnU-Net's target
spacing) the crop is then resampled to it, and the geometry gains
"resampled_size" (d', h', w'); `restore_grid` resamples a prediction back to
the crop's size before `uncrop`. Order: normalise (whole brain), crop,
resample, as nnU-Net does.

The brain (`foreground_mask`) is every voxel that is not background, and the
background is 0 unless a volume says otherwise (`background_value`): some
preprocessing tools fill the outside of the brain with a constant (the
image's minimum, a negative value, a small positive one). Such a volume is
normalised and cropped as if that constant were 0, bit for bit.
"""

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from bratskeras.core.model_presets import FLAIR_PAPER_CROP

CROPS = ("bbox", "center", "none")  # each one's box: _CROP_BOXES
# The intensity normalisation `preprocess` applies (`zscore`: over the brain,
# the voxels that are not background, 0 or a constant), by the name a model's
# input contract (bratskeras.data.contract) records; the only one so far.
NORMALISATION = "zscore-nonzero"
NORMALISATIONS = (NORMALISATION,)
# A constant is a volume's background when it holds more than this share of
# the voxels on the volume's six faces (BraTS: all of them; the brain never
# reaches the edge of the field of view) ...
BACKGROUND_BORDER_SHARE = 0.5
# ... and at least this share of the whole volume (BraTS: ~85 %; a volume
# cropped to the brain's box still ~45 %), so a frame of padding around a
# volume that is otherwise all tissue is not taken for it.
BACKGROUND_VOLUME_SHARE = 0.2
# Magnitudes outside 2**-40 .. 2**40 are brought near 1 by an exact power of
# two before the z-score: float32 sums of squares over a 240 x 240 x 155
# volume overflow above ~2**52 and lose precision to underflow below ~2**-60.
_SAFE_EXPONENT = 40


@dataclass(frozen=True)
class PreprocessSettings:
    """How a case is turned into network input; part of the cache key.

    Attributes:
        crop: "bbox" (brain bounding box plus `margin`), "center" (fixed
            `crop_size` centre crop, zero-padded where the volume is smaller;
            the FLAIR paper uses 192 x 192 x 154) or "none".
        crop_size: (d, h, w) for crop="center".
        margin: voxels added on each side of the brain box for crop="bbox".
        dtype: "float32" or "float16" for the cached image.
        spacing: (d, h, w) voxel size in mm the network works at, or None
            for the source grid (BraTS: 1 mm). A coarser one (2, 2, 2) trains
            and predicts on 8x fewer voxels, so a patch sees more of the
            brain; `predict` resamples its probabilities back.
    """

    crop: str = "bbox"
    crop_size: tuple = FLAIR_PAPER_CROP
    margin: int = 0
    dtype: str = "float32"
    spacing: tuple | None = None

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {self.dtype!r}")
        if len(self.crop_size) != 3 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be three positive sizes, got {self.crop_size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        object.__setattr__(self, "crop_size", tuple(int(s) for s in self.crop_size))
        if self.spacing is not None:
            if len(self.spacing) != 3 or not all(float(s) > 0 for s in self.spacing):
                raise ValueError(f"spacing must be three positive voxel sizes in mm, got {self.spacing}")
            object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))

    def to_dict(self):
        """JSON-ready dict (cache keys and run configs)."""
        values = {**asdict(self), "crop_size": list(self.crop_size)}
        if self.spacing is None:
            del values["spacing"]  # caches written before the field existed keep their keys
        else:
            values["spacing"] = list(self.spacing)
        return values


def border_values(channel):
    """The voxels on the six faces of a (D, H, W) volume, as one flat array (edges repeated)."""
    channel = np.asarray(channel)
    faces = [channel[index] for axis in range(3) for index in
             ((slice(None),) * axis + (0,), (slice(None),) * axis + (-1,))]
    return np.concatenate([face.ravel() for face in faces])


def background_value(channel):
    """The intensity of a (D, H, W) volume's background: 0, or the constant a tool filled it with.

    A value that fills more than BACKGROUND_BORDER_SHARE of the volume's
    border and at least BACKGROUND_VOLUME_SHARE of the volume is background;
    otherwise 0 is (every BraTS release), also when the brain has no
    background around it at all. A background must be exactly constant: one
    with noise (a scan that is not skull-stripped) is not recognised.

        >>> volume = np.full((8, 8, 8), -3.5, np.float32); volume[2:6, 2:6, 2:6] = 7
        >>> float(background_value(volume))
        -3.5
    """
    border = border_values(channel)
    # Fast path, and the rule itself for a zero background: zeros fill the border.
    if 2 * np.count_nonzero(border == 0) > border.size:
        return channel.dtype.type(0)
    values, counts = np.unique(border, return_counts=True)
    value = values[np.argmax(counts)]
    fills_border = 2 * counts.max() > border.size
    if fills_border and np.count_nonzero(channel == value) >= BACKGROUND_VOLUME_SHARE * channel.size:
        return value
    return channel.dtype.type(0)


def channel_foreground(channel):
    """bool (D, H, W): the voxels of one volume that are not its background (`background_value`)."""
    channel = np.asarray(channel)
    return channel != background_value(channel)


def foreground_mask(image):
    """bool (D, H, W): the brain, voxels that are foreground in any channel of image (D, H, W, C).

    The one definition of the brain: the z-score's statistics, the brain box
    crop and inspection's skull-stripping check all use it.
    """
    image = np.asarray(image)
    mask = channel_foreground(image[..., 0])
    for c in range(1, image.shape[-1]):
        mask |= channel_foreground(image[..., c])
    return mask


def _exact_scale(channel):
    """channel (D, H, W) float32 times a power of two that brings its largest magnitude near 1.

    Only when that magnitude lies outside 2**-40 .. 2**40 (see _SAFE_EXPONENT);
    multiplying by a power of two is exact, so the z-score does not change.
    """
    peak = max(abs(float(channel.max())), abs(float(channel.min()))) if channel.size else 0.0
    if peak == 0.0:
        return channel
    _, exponent = np.frexp(peak)
    if abs(int(exponent)) <= _SAFE_EXPONENT:
        return channel
    return np.ldexp(channel, -int(exponent))


def zscore(image):
    """Per-channel z-score over that channel's brain voxels (`channel_foreground`).

    Args:
        image: (D, H, W, C) array of any real dtype and intensity scale.

    Returns:
        float32 (D, H, W, C): inside each channel's mask mean 0 and std 1,
        background exactly 0. A channel whose brain is constant gets 0 std
        treated as 1 so it stays finite. A constant background other than 0
        gives the same result, bit for bit, as a background of 0.
    """
    image = np.asarray(image, dtype=np.float32)
    # Channel-planar work: a channel of a (D, H, W, C) array is a strided view,
    # and numpy on strided data ran 3-5x slower than on contiguous planes.
    planes = np.empty(image.shape[-1:] + image.shape[:-1], np.float32)
    for c in range(image.shape[-1]):
        channel = np.ascontiguousarray(image[..., c])
        background = background_value(channel)
        mask = channel != background
        if background != 0:
            # From here on the same arithmetic as for a background of 0.
            channel = np.where(mask, channel, np.float32(0))
        channel = _exact_scale(channel)
        count = np.count_nonzero(mask)
        out = planes[c]
        if not count:
            out[...] = 0
            continue
        # Background voxels are 0, so the sum over the channel is the brain's sum.
        mean = np.sum(channel, dtype=np.float64) / count
        np.subtract(channel, np.float32(mean), out=out)
        out[~mask] = 0
        # Two-pass variance over the centred brain voxels (BLAS dot).
        std = float(np.sqrt(np.dot(out.ravel(), out.ravel()) / count))
        out *= np.float32(1.0 / std) if std > 0 else np.float32(1.0)
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1))


def brain_bbox(image):
    """(start, stop) of the box around the brain (`foreground_mask`) of image (D, H, W, C)."""
    mask = foreground_mask(image)
    if not mask.any():
        return (0, 0, 0), tuple(mask.shape)
    start, stop = [], []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        start.append(int(present[0]))
        stop.append(int(present[-1]) + 1)
    return tuple(start), tuple(stop)


def _whole_volume(image, shape, settings):
    return (0, 0, 0), shape


def _centre_box(image, shape, settings):
    """crop_size centred on the volume (the FLAIR paper's 192 x 192 x 154)."""
    size = settings.crop_size
    return tuple((n - s) // 2 for n, s in zip(shape, size)), size


def _brain_box(image, shape, settings):
    """The brain's box with `margin` voxels around it, inside the volume."""
    box_start, box_stop = brain_bbox(image)
    start = tuple(max(0, b - settings.margin) for b in box_start)
    stop = tuple(min(n, b + settings.margin) for n, b in zip(shape, box_stop))
    return start, tuple(e - s for s, e in zip(start, stop))


# Each crop (PreprocessSettings.crop) and the box it takes: (image, shape, settings) -> (start, size).
_CROP_BOXES = {"bbox": _brain_box, "center": _centre_box, "none": _whole_volume}


def crop_geometry(image, settings):
    """The geometry dict that `settings` gives for image (D, H, W, C)."""
    shape = tuple(int(s) for s in image.shape[:3])
    start, size = _CROP_BOXES[settings.crop](image, shape, settings)
    return {"original_shape": shape, "start": tuple(int(s) for s in start), "size": tuple(int(s) for s in size)}


def _overlap(geometry):
    """Slices of the crop and of the original grid that overlap (both tuples of 3 slices)."""
    crop_slices, source_slices = [], []
    for n, start, size in zip(geometry["original_shape"], geometry["start"], geometry["size"]):
        lo, hi = max(start, 0), min(start + size, n)
        hi = max(hi, lo)
        source_slices.append(slice(lo, hi))
        crop_slices.append(slice(lo - start, hi - start))
    return tuple(crop_slices), tuple(source_slices)


def crop(array, geometry):
    """Crops (D, H, W, ...) to geometry["size"], zero-padding outside the source."""
    array = np.asarray(array)
    out = np.zeros(tuple(geometry["size"]) + array.shape[3:], dtype=array.dtype)
    crop_slices, source_slices = _overlap(geometry)
    out[crop_slices] = array[source_slices]
    return out


def uncrop(prediction, geometry, fill=0):
    """Inverse of `crop`: (d, h, w, ...) on the crop -> (D, H, W, ...) on the original grid.

    Voxels outside the crop get `fill` (background). For any array `a` that is
    `fill` outside the crop, uncrop(crop(a, g), g) == a exactly.
    """
    prediction = np.asarray(prediction)
    if tuple(prediction.shape[:3]) != tuple(geometry["size"]):
        raise ValueError(f"prediction shape {prediction.shape[:3]} != crop size {tuple(geometry['size'])}")
    out = np.full(tuple(geometry["original_shape"]) + prediction.shape[3:], fill, dtype=prediction.dtype)
    crop_slices, source_slices = _overlap(geometry)
    out[source_slices] = prediction[crop_slices]
    return out


def resampled_size(size, spacing, target_spacing):
    """Voxels per axis (3,) of a (d, h, w) grid of voxel size `spacing` at `target_spacing` (at least 1)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size, spacing, target_spacing))


def resample(array, size, order):
    """(d, h, w, ...) -> (size..., ...) by spline interpolation of `order` (1: trilinear, 0: nearest).

    Voxel centres, not corners, are aligned (grid_mode): a 2 mm voxel
    covers two 1 mm voxels, so downsampling and resampling back line up;
    edges repeat the nearest voxel. Channels (trailing axes) are resampled
    one by one.
    """
    array = np.asarray(array)
    size = tuple(int(n) for n in size)
    if tuple(array.shape[:3]) == size:
        return array
    zoom = [n / m for n, m in zip(size, array.shape[:3])]
    flat = array.reshape(array.shape[:3] + (-1,))
    out = np.empty(size + (flat.shape[-1],), dtype=array.dtype)
    for c in range(flat.shape[-1]):
        out[..., c] = ndimage.zoom(flat[..., c], zoom, order=order, mode="nearest", grid_mode=True)
    return out.reshape(size + array.shape[3:])


def restore_grid(prediction, geometry, order=1):
    """A prediction (d', h', w', ...) at the resampled size -> the crop's size (d, h, w, ...); as is without one."""
    if "resampled_size" not in geometry:
        return prediction
    return resample(prediction, geometry["size"], order)


def preprocess(image, seg, settings, spacing=None):
    """Normalises, crops and (with settings.spacing) resamples one case.

    Args:
        image: (D, H, W, C) raw intensities.
        seg: uint8 classes (D, H, W) or None.
        settings: PreprocessSettings.
        spacing: the source voxel size (3,) in mm; needed with settings.spacing.

    Returns:
        (image (d, h, w, C) in settings.dtype, seg uint8 (d, h, w) or None,
        geometry); with settings.spacing, (d, h, w) is geometry["resampled_size"]:
        the image resampled trilinearly, the labels by nearest voxel.
    """
    # Statistics come from the whole brain, before a centre crop may cut it.
    normalised = zscore(image)
    geometry = crop_geometry(image, settings)
    out_image = crop(normalised, geometry)
    out_seg = None if seg is None else crop(seg.astype(np.uint8, copy=False), geometry)
    if settings.spacing is not None:
        if spacing is None:
            raise ValueError("preprocess needs the source spacing to resample to settings.spacing")
        size = resampled_size(geometry["size"], spacing, settings.spacing)
        if size != tuple(geometry["size"]):
            geometry["resampled_size"] = size
            out_image = resample(out_image, size, order=1)
            out_seg = None if out_seg is None else resample(out_seg, size, order=0)
    return out_image.astype(settings.dtype, copy=False), out_seg, geometry
