"""Reading the volumes of a discovered case (NIfTI, Kaggle H5) and writing label maps back.

Arrays are (D, H, W) = NIfTI voxel axes (i, j, k) exactly as nibabel returns
them (240 x 240 x 155 for BraTS); images gain a trailing channel axis.
Finding the cases is bratskeras.data.layouts' job; `read_case` and
`read_labels` take its Case and hand it to the case's file format
(bratskeras.data.formats: NIfTI files, Kaggle H5 slices), which reads it
with this module's loaders and checks.
"""

import math
import os
import zlib

import numpy as np

from bratskeras.core import labels
from bratskeras.core.errors import DataError

# The most voxels one file (or one H5 slice) may claim: 512^3 is over 3000 times a BraTS volume
# (240 x 240 x 155) and 512 MiB as float32, yet a damaged 71-byte header claiming 32767^3 voxels
# is refused before anything is allocated for it.
MAX_VOXELS = 512 ** 3
# Assumption (unverified upstream, see docs/reference.md section 3): the Kaggle H5 `image`
# channels are [T1, T1ce, T2, FLAIR] and the `mask` channels [NCR, ED, ET].
H5_CHANNEL_ORDER = ("t1", "t1ce", "t2", "flair")
H5_MASK_CLASSES = (1, 2, 3)


def load_nifti(path):
    """Loads one NIfTI file fully.

    Any stored dtype (uint8, int16, uint16, float32, float64, ...) and any
    scl_slope / scl_inter come back as float32: 7 significant digits, more
    than an MRI intensity carries, at any intensity scale up to float32's
    range (3.4e38); a volume with larger values is refused rather than read
    as Inf.

    Returns:
        (array, image): the voxel data as float32 (D, H, W) with nibabel's
        scaling applied, and the nibabel image (affine, header).

    Raises:
        DataError: missing, truncated or corrupt file, a header claiming more
            than MAX_VOXELS voxels or more bytes than the file holds, not 3-D,
            or values beyond float32's range.
    """
    import nibabel as nib

    try:
        image = nib.load(path)
        check_header_size(path, image)
        # Values beyond float32's range become Inf here; _refuse_overflow names them.
        with np.errstate(over="ignore"):
            array = np.asarray(image.dataobj, dtype=np.float32)
        if _may_overflow(image):
            _refuse_overflow(path, array, image)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot read NIfTI ({reason})") from None
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    return array, image


def check_header_size(path, image):
    """Refuses a NIfTI whose header claims more than MAX_VOXELS voxels, or more data than the file holds.

    Runs after nib.load (which reads the header only) and before the data
    is read, so a damaged header costs no allocation. The data size is
    checked against an uncompressed file's size; a .nii.gz's size is known
    only by decompressing it, which reading it does (and then fails by name).

    Raises:
        DataError: naming the file, the claimed shape and the limit or the sizes.
    """
    shape = tuple(int(s) for s in image.shape)
    voxels = math.prod(shape)
    claimed = "x".join(map(str, shape))
    if voxels > MAX_VOXELS:
        raise DataError(f"{path}: header claims {claimed} voxels, more than the {MAX_VOXELS} (512^3) "
                        "a volume may have here; damaged header?")
    offset = getattr(image.dataobj, "offset", None)
    if offset is None or os.fspath(path).endswith(".gz"):
        return
    needed = int(offset) + voxels * image.get_data_dtype().itemsize
    size = os.path.getsize(path)
    if size < needed:
        raise DataError(f"{path}: holds {size} bytes, its header ({claimed} voxels of "
                        f"{image.get_data_dtype()}) needs {needed}; truncated file?")


def _may_overflow(image):
    """True when a NIfTI's stored values or scaling can exceed float32 (float64, 64-bit integers, a slope)."""
    # nibabel moves scl_slope / scl_inter from the loaded header into the data proxy.
    slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
    return slope != 1.0 or inter != 0.0 or image.get_data_dtype().itemsize > 4


def _refuse_overflow(path, array, image):
    """DataError when float32 `array` holds Inf where the stored (scaled) values are finite."""
    infinite = np.isinf(array)
    if not infinite.any():
        return
    stored = np.asarray(image.dataobj)[infinite]
    finite = stored[np.isfinite(stored)]
    if finite.size:
        raise DataError(f"{path}: values up to {np.max(np.abs(finite)):.3g} exceed float32's range "
                        "(3.4e38); rescale the volume")


def load_label_map(path):
    """Loads a label map: (array, image) like load_nifti, but integers as stored.

    A label file of unscaled integers (uint8 on every BraTS release) comes
    back in its own dtype: 4x less memory than float32 and no float checks,
    which on a 240 x 240 x 155 map cost more than reading it. Anything else
    (scaled, float, unreadable) goes through load_nifti and its errors.
    """
    import nibabel as nib

    try:
        image = nib.load(path)
        check_header_size(path, image)
        slope, inter = image.header.get_slope_inter()
        if image.get_data_dtype().kind in "iu" and slope in (None, 1.0) and inter in (None, 0.0):
            array = np.asarray(image.dataobj)
            if array.ndim == 3 and array.dtype.kind in "iu":
                return array, image
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError):
        pass
    return load_nifti(path)


def volume_problems(path, array, is_label=False):
    """One-line problems of a loaded volume: non-finite voxels, all-zero image."""
    problems = []
    finite = np.isfinite(array)
    if not finite.all():
        problems.append(f"{path}: {int(array.size - finite.sum())} NaN/Inf voxels")
    elif not is_label and not array.any():
        problems.append(f"{path}: image is all zeros")
    return problems


def geometry_problem(path, image, reference_path, reference_image):
    """A one-line message if `image`'s shape or affine differs from the reference's, else None."""
    if image.shape[:3] != reference_image.shape[:3]:
        return f"{path}: shape {tuple(image.shape[:3])} differs from {os.path.basename(reference_path)} {tuple(reference_image.shape[:3])}"
    if not np.allclose(image.affine, reference_image.affine, atol=1e-3):
        return f"{path}: affine differs from {os.path.basename(reference_path)}"
    return None


def read_case(case, modalities=None, with_labels=True):
    """Reads a case's images and labels.

    Args:
        case: a layouts.Case from `layouts.discover`.
        modalities: canonical names, in the channel order wanted; None: the
            case's scheme's (all four, or MEN-RT's t1ce alone).
        with_labels: False never opens the label file (prediction needs none,
            so a bad label file cannot stop it); seg is then None.

    Returns:
        image: float32 (D, H, W, C), C = len(modalities), in that order.
        seg: uint8 class indices (D, H, W) of the case's scheme (0..3, the
            classic labels.CLASS_NAMES, for 2017-2023 glioma), or None when
            the case has no label file.
        properties: dict with "affine" (4x4), "header" (nibabel header or None),
            "shape" (D, H, W), "spacing" (mm per axis), "files" (source paths);
            `write_label_map` takes it to write a prediction on the source grid.

    Raises:
        DataError: naming the case and file: missing modality, unreadable file,
            shape/affine mismatch, NaN/Inf voxels, all-zero modality, or label
            values outside the case's scheme.
    """
    if modalities is None:
        modalities = labels.get_scheme(case.label_scheme).modalities
    missing = [m for m in modalities if m not in case.modalities]
    if missing:
        raise DataError(f"case {case.id}: missing modality {', '.join(missing)}")
    return case.reader.read(case, modalities, with_labels)


def read_labels(case):
    """A labelled case's class map alone (evaluate's reference), read by the case's file format.

    Returns:
        (class indices uint8 (D, H, W) of the case's scheme, the nibabel image
        or None where the format has no header, spacing (3,) in mm).
    """
    return case.reader.read_labels(case)


def raise_first(problems):
    """DataError of the first non-empty line of `problems`, if any."""
    problems = [p for p in problems if p]
    if problems:
        raise DataError(problems[0])


def load_h5_slice(path, with_mask=True):
    """Reads one Kaggle H5 slice: (image float32 (H, W, 4), mask (H, W, 3) or None).

    `with_mask` False never opens the `mask` dataset (prediction needs none,
    so an image-only slice set can be predicted).

    Raises:
        DataError: unreadable file, a missing dataset, or more than MAX_VOXELS
            values claimed (checked before reading).
    """
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            names = ("image", "mask") if with_mask else ("image",)
            for name in names:
                if math.prod(handle[name].shape) > MAX_VOXELS:
                    raise DataError(f"{path}: H5 dataset {name!r} claims shape {handle[name].shape}, more than "
                                    f"the {MAX_VOXELS} (512^3) values a volume may have here")
            image = np.asarray(handle["image"], dtype=np.float32)
            return image, (np.asarray(handle["mask"]) if with_mask else None)
    except (OSError, KeyError) as error:
        raise DataError(f"{path}: cannot read H5 slice ({error})") from None


def h5_slice_problems(case):
    """One-line problems with a kaggle-h5 case's slice numbering: gaps, missing trailing slices, repeats.

    A volume should have slices 0 .. n-1, n = case.expected_slices (the
    dataset's longest volume's count, from layouts.discover) or its own.
    """
    count = max(case.expected_slices, max(case.slice_indices) + 1)
    missing = sorted(set(range(count)) - set(case.slice_indices))
    if missing:
        shown = f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
        trailing = missing[-1] > max(case.slice_indices)
        return [f"case {case.id}: missing slices {shown}"
                + (f" ({len(missing)} of the {count} slices the dataset's volumes have)" if trailing else "")]
    if len(case.slice_indices) != count:
        return [f"case {case.id}: a slice number appears in several files (first file {case.slices[0]})"]
    return []


def h5_mask_to_classes(mask, source):
    """One-hot H5 mask (..., 3) in H5_MASK_CLASSES order -> uint8 class indices (...)."""
    mask = np.asarray(mask)
    if not np.isin(mask, (0, 1)).all():
        raise DataError(f"{source}: mask values must be 0/1 one-hot")
    if (mask.sum(axis=-1) > 1).any():
        raise DataError(f"{source}: mask has voxels in several classes")
    classes = np.zeros(mask.shape[:-1], dtype=np.uint8)
    for channel, class_index in enumerate(H5_MASK_CLASSES):
        classes[mask[..., channel] > 0] = class_index
    return classes


def brats_affine(shape, voxel_mm=1.0):
    """The affine BraTS NIfTI files carry: diag(-1, -1, 1) at 1 mm, origin so j runs 0..H-1 voxels.

    `voxel_mm` scales it for isotropic voxels of another size (synth's anatomy heads at 2 or 3 mm).
    """
    affine = np.diag([-voxel_mm, -voxel_mm, voxel_mm, 1.0])
    affine[1, 3] = (shape[1] - 1) * voxel_mm
    return affine


def write_label_map(label_map, properties, path):
    """Writes a (D, H, W) label map as a uint8 NIfTI on the source grid.

    Args:
        label_map: integer array (D, H, W) of on-disk label values (use
            labels.classes_to_labels to go from class indices to a release's labels).
        properties: the dict `read_case` returned (or one with at least "affine";
            "header" is reused when present).
        path: output .nii or .nii.gz path.
    """
    import nibabel as nib

    label_map = np.asarray(label_map)
    if tuple(label_map.shape) != tuple(properties["shape"]):
        raise ValueError(f"label map shape {label_map.shape} != source shape {tuple(properties['shape'])}")
    header = properties.get("header")
    image = nib.Nifti1Image(label_map.astype(np.uint8), np.asarray(properties["affine"]),
                            header=header.copy() if header is not None else None)
    image.set_data_dtype(np.uint8)
    # Source images may carry intensity scaling; a label map must not.
    image.header.set_slope_inter(1, 0)
    nib.save(image, os.fspath(path))
