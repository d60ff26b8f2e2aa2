"""Find BraTS cases on disk, read them, and write label maps back.

Layouts (REFERENCE.md section 3), detected from the case folder names:

    brats2017   2017-2019: HGG/ and LGG/ of Brats17_<id>/, BraTS19_<id>/, ...,
                files <case>_{flair,t1,t1ce,t2,seg}.nii.gz, labels 0,1,2,4
    brats2020   Kaggle copy: .../BraTS20_Training_NNN/ and BraTS20_Validation_NNN/
                with uncompressed .nii; case 355's label is W39_1998.09.19_Segm.nii;
                csv files beside the cases are ignored; labels 0,1,2,4
    brats2021   BraTS2021_NNNNN/ with <case>_{flair,t1,t1ce,t2,seg}.nii.gz
    brats2023   2023-2025 tasks: BraTS-<TASK>-NNNNN-NNN/ with <case>-{t2f,t1n,t1c,t2w,seg}.nii.gz
                for TASK = GLI, SSA, MEN, MET, PED, BraTS-GoAT-NNNNN/, and MEN-RT's
                BraTS-MEN-RT-NNNN-N/ with <case>_t1c.nii.gz and the label <case>_gtv.nii.gz;
                the label scheme comes from TASK (labels.SCHEMES' prefixes) or from
                `task` (2023 GLI folders and 2024 post-treatment GLI folders look alike)
    kaggle-h5   flat folder of volume_<v>_slice_<s>.h5 (datasets `image` (H, W, 4)
                and `mask` (H, W, 3)), stacked along the last axis into volumes

The root passed to `discover` may be any ancestor of the case folders.
Modalities always carry the canonical names "flair", "t1", "t1ce", "t2".

Arrays are (D, H, W) = NIfTI voxel axes (i, j, k) exactly as nibabel returns
them (240 x 240 x 155 for BraTS); images gain a trailing channel axis.
"""

import os
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from bratskeras import labels
from bratskeras.errors import DataError

MODALITIES = ("flair", "t1", "t1ce", "t2")
LAYOUTS = ("brats2017", "brats2020", "brats2021", "brats2023", "kaggle-h5")
# Assumption (unverified upstream, see REFERENCE.md): the Kaggle H5 `image`
# channels are [T1, T1ce, T2, FLAIR] and the `mask` channels [NCR, ED, ET].
H5_CHANNEL_ORDER = ("t1", "t1ce", "t2", "flair")
H5_MASK_CLASSES = (1, 2, 3)

_CASE_PATTERNS = {
    "brats2017": re.compile(r"^Brats1[78]_.+$|^BraTS19_.+$"),
    "brats2020": re.compile(r"^BraTS20_(Training|Validation)_\d+$"),
    "brats2021": re.compile(r"^BraTS2021_\d+$"),
    "brats2023": re.compile(r"^BraTS-(?P<prefix>[A-Za-z]+(?:-RT)?)-\d+(?:-\d+)?$"),
}
_SUFFIX_TO_MODALITY = {
    "flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2",
    "t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2",
}
_NIFTI_RE = re.compile(r"^(?P<stem>.+?)(?P<ext>\.nii(\.gz)?)$")
# The 2023+ releases separate the suffix with "-", older ones with "_".
_SUFFIX_RE = re.compile(r"[_-](?P<suffix>flair|t1ce|t1|t2|t2f|t1n|t1c|t2w|seg|gtv)$", re.IGNORECASE)
# MEN-RT names its label <case>_gtv.
# BraTS 2020 case 355 ships its label as W39_1998.09.19_Segm.nii.
_ODD_SEG_RE = re.compile(r"_Segm$", re.IGNORECASE)
_H5_RE = re.compile(r"^volume_(?P<volume>\d+)_slice_(?P<slice>\d+)\.h5$")


@dataclass
class Case:
    """One subject.

    Attributes:
        id: case folder name (or "volume_<v>" for kaggle-h5).
        layout: one of LAYOUTS.
        modalities: canonical modality name -> file path (for kaggle-h5 every
            modality maps to the case's first slice file; `slices` holds all).
        seg: label file path, or None.
        label_scheme: a key of labels.SCHEMES ("brats2020", "brats2023", "gli", ...).
        expects_seg: False for validation cases that ship without labels.
        extra_files: NIfTI files in the case folder that are not one modality
            or the label (a second label file, an unknown suffix).
        slices: kaggle-h5 only: slice files ordered by slice index.
        slice_indices: kaggle-h5 only: the slice index of each file in `slices`.
        channel_order: kaggle-h5 only: modality of each `image` channel.
    """

    id: str
    layout: str
    modalities: dict
    seg: str | None
    label_scheme: str
    expects_seg: bool = True
    extra_files: list = field(default_factory=list)
    slices: tuple = ()
    slice_indices: tuple = ()
    channel_order: tuple = H5_CHANNEL_ORDER

    def source_files(self):
        """Every file this case is read from (for cache keys and messages)."""
        if self.layout == "kaggle-h5":
            return list(self.slices)
        files = list(self.modalities.values())
        return files + ([self.seg] if self.seg else [])


@dataclass
class Dataset:
    """A discovered dataset: its root, layout, label scheme and cases (sorted by id).

    `skipped` has one line per folder that discovery had to leave out (it
    could not be read, or it was a second symlink to a folder already read):
    every command reports them, none drops a case in silence.
    """

    root: str
    layout: str
    label_scheme: str
    cases: list
    skipped: list = field(default_factory=list)

    def case(self, case_id):
        """The case called `case_id` (DataError if absent)."""
        for case in self.cases:
            if case.id == case_id:
                return case
        raise DataError(f"{self.root}: no case {case_id!r}")


def label_scheme_for(layout, case_id=None):
    """The labels.SCHEMES name of a layout's label files (2023+: from the case folder's task prefix)."""
    if layout != "brats2023":
        return "brats2020"
    match = _CASE_PATTERNS["brats2023"].match(case_id or "")
    return (match and labels.scheme_for_prefix(match.group("prefix"))) or "brats2023"


def discover(root, layout=None, channel_order=H5_CHANNEL_ORDER, task=None):
    """Finds every case under `root` (any ancestor of the case folders).

    Args:
        root: folder to search recursively.
        layout: one of LAYOUTS, or None to detect it from the folder names.
        channel_order: kaggle-h5 only: modality of each `image` channel.
        task: 2023+ layout only: the label scheme of every case (a name in
            labels.TASKS), for folders whose names do not tell (2024 GLI);
            a case whose folder names another task is an error.

    Returns:
        Dataset with cases sorted by id.

    Symlinked folders are followed (each real folder once); folders that
    cannot be read are listed in `Dataset.skipped`.

    Raises:
        DataError: root missing or not a folder, no BraTS case found, several
            layouts found while `layout` is None, cases of several tasks found
            while `task` is None, or a `task` for a layout older than 2023.
    """
    root = os.fspath(root)
    if layout is not None and layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder")
    nifti_dirs, h5_files, skipped = _scan(root)
    found = _nifti_cases(nifti_dirs)
    if h5_files:
        found["kaggle-h5"] = _h5_cases(h5_files, tuple(channel_order))
    found = {name: cases for name, cases in found.items() if cases}
    if not found and skipped:
        raise DataError(f"{root}: no BraTS cases found; {len(skipped)} folder(s) left out, first: {skipped[0]}")
    if not found:
        raise DataError(f"{root}: no BraTS cases found (empty or wrong folder; layouts: {', '.join(LAYOUTS)})")
    if layout is None:
        if len(found) > 1:
            raise DataError(f"{root}: cases of several layouts found ({', '.join(sorted(found))}); pass a layout")
        layout = next(iter(found))
    if layout not in found:
        raise DataError(f"{root}: no {layout} cases found (found: {', '.join(sorted(found))})")
    cases = sorted(found[layout], key=lambda c: c.id)
    _mark_expected_labels(cases)
    return Dataset(root=root, layout=layout, label_scheme=_dataset_scheme(root, layout, cases, task), cases=cases,
                   skipped=skipped)


def _dataset_scheme(root, layout, cases, task):
    """The one label scheme of `cases`: `task` (set on every case) or the one their folders name."""
    if task is not None:
        if task not in labels.TASKS:
            raise DataError(f"unknown task {task!r}; expected one of {', '.join(labels.TASKS)}")
        if layout != "brats2023":
            raise DataError(f"{root}: a task applies to 2023+ case folders (BraTS-<TASK>-...), not {layout}")
        for case in cases:
            if case.label_scheme != task and not labels.get_scheme(case.label_scheme).ambiguous:
                raise DataError(f"case {case.id}: its folder name says task {case.label_scheme}, not {task}")
            case.label_scheme = task
        return task
    schemes = sorted({case.label_scheme for case in cases})
    if len(schemes) > 1:
        raise DataError(f"{root}: cases of several tasks found ({', '.join(schemes)}); pass a task")
    return schemes[0]


def _scan(root):
    """Walks `root`, symlinked folders included: what it finds, and what it had to leave out.

    os.walk does not follow folder symlinks by default, which dropped
    symlinked case folders without a word; here they are followed, each real
    folder read once (a link back to an ancestor would loop forever).

    Returns:
        ({folder: [NIfTI file names]}, [H5 slice paths], [one line per
        folder left out: unreadable, or a second link to a folder already read]).
    """
    nifti_dirs, h5_files, skipped, seen = {}, [], [], {}

    def unreadable(error):
        skipped.append(f"{error.filename}: folder cannot be read ({error.strerror}); cases in it are left out")

    for folder, subfolders, files in os.walk(root, onerror=unreadable, followlinks=True):
        subfolders.sort()
        real = os.path.realpath(folder)
        if real in seen:
            skipped.append(f"{folder}: same folder as {seen[real]} (symlink), read once")
            subfolders[:] = []
            continue
        seen[real] = folder
        for name in files:
            if _NIFTI_RE.match(name):
                nifti_dirs.setdefault(folder, []).append(name)
            elif _H5_RE.match(name):
                h5_files.append(os.path.join(folder, name))
    return nifti_dirs, h5_files, skipped


def _layout_of(case_id):
    for name, pattern in _CASE_PATTERNS.items():
        if pattern.match(case_id):
            return name
    return None


def _nifti_cases(nifti_dirs):
    """{layout: [Case]} for every folder named like a BraTS case."""
    found = {}
    for folder, names in nifti_dirs.items():
        case_id = os.path.basename(folder)
        layout = _layout_of(case_id)
        if layout is None:
            continue
        found.setdefault(layout, []).append(_nifti_case(folder, case_id, layout, sorted(names)))
    return found


def _nifti_case(folder, case_id, layout, names):
    modalities, segs, extra = {}, [], []
    for name in names:
        path = os.path.join(folder, name)
        stem = _NIFTI_RE.match(name).group("stem")
        match = _SUFFIX_RE.search(stem)
        suffix = match.group("suffix").lower() if match else None
        if suffix in ("seg", "gtv") or (layout == "brats2020" and _ODD_SEG_RE.search(stem)):
            segs.append(path)
        elif suffix in _SUFFIX_TO_MODALITY and _SUFFIX_TO_MODALITY[suffix] not in modalities:
            modalities[_SUFFIX_TO_MODALITY[suffix]] = path
        else:
            extra.append(path)
    # The standard <case>_seg name wins over an oddly named one; any other is extra.
    segs.sort(key=lambda p: 0 if _SUFFIX_RE.search(_NIFTI_RE.match(os.path.basename(p)).group("stem")) else 1)
    return Case(id=case_id, layout=layout, modalities=modalities, seg=segs[0] if segs else None,
                label_scheme=label_scheme_for(layout, case_id), extra_files=segs[1:] + extra)


def _mark_expected_labels(cases):
    """Decides which cases must have a label file.

    BraTS 2020 names its unlabelled cases "Validation". Other releases keep
    unlabelled cases in a separate folder, so a case is expected to have a
    label when any other case in its parent folder has one.
    """
    labelled_parents = {os.path.dirname(_case_folder(c)) for c in cases if c.seg}
    for case in cases:
        if case.layout == "brats2020":
            case.expects_seg = "_Validation_" not in case.id
        elif case.layout != "kaggle-h5":
            case.expects_seg = os.path.dirname(_case_folder(case)) in labelled_parents


def _case_folder(case):
    return os.path.dirname(case.source_files()[0] if case.source_files() else case.extra_files[0])


def _h5_cases(paths, channel_order):
    if sorted(channel_order) != sorted(MODALITIES):
        raise DataError(f"channel order {channel_order} must name each of {MODALITIES} once")
    volumes = {}
    for path in paths:
        match = _H5_RE.match(os.path.basename(path))
        volumes.setdefault(int(match.group("volume")), []).append((int(match.group("slice")), path))
    cases = []
    for volume, items in volumes.items():
        items.sort()
        first = items[0][1]
        cases.append(Case(
            id=f"volume_{volume}", layout="kaggle-h5", modalities={m: first for m in MODALITIES},
            seg=first, label_scheme="brats2020", slices=tuple(p for _, p in items),
            slice_indices=tuple(s for s, _ in items), channel_order=channel_order))
    return cases


# --------------------------------------------------------------------------- reading


def load_nifti(path):
    """Loads one NIfTI file fully.

    Returns:
        (array, image): the voxel data as float32 (D, H, W) with nibabel's
        scaling applied, and the nibabel image (affine, header).

    Raises:
        DataError: missing, truncated or corrupt file, or not 3-D.
    """
    import nibabel as nib

    try:
        image = nib.load(path)
        array = np.asarray(image.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot read NIfTI ({reason})") from None
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    return array, image


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
        case: a Case from `discover`.
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
    if case.layout == "kaggle-h5":
        return _read_h5_case(case, modalities, with_labels)
    channels, reference = [], None
    for modality in modalities:
        path = case.modalities[modality]
        array, image = load_nifti(path)
        _raise_first(volume_problems(path, array))
        if reference is None:
            reference = (path, image)
        _raise_first([geometry_problem(path, image, *reference)])
        channels.append(array)
    seg = None
    if case.seg and with_labels:
        seg_array, seg_image = load_nifti(case.seg)
        _raise_first(volume_problems(case.seg, seg_array, is_label=True))
        _raise_first([geometry_problem(case.seg, seg_image, *reference)])
        seg = labels.labels_to_classes(seg_array, case.label_scheme, source=case.seg)
    image = reference[1]
    properties = {
        "affine": np.asarray(image.affine, dtype=np.float64),
        "header": image.header,
        "shape": tuple(int(s) for s in image.shape[:3]),
        "spacing": tuple(float(z) for z in image.header.get_zooms()[:3]),
        "files": case.source_files(),
    }
    return np.stack(channels, axis=-1), seg, properties


def _raise_first(problems):
    problems = [p for p in problems if p]
    if problems:
        raise DataError(problems[0])


def load_h5_slice(path):
    """Reads one Kaggle H5 slice: (image float32 (H, W, 4), mask (H, W, 3)); DataError if unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return np.asarray(handle["image"], dtype=np.float32), np.asarray(handle["mask"])
    except (OSError, KeyError) as error:
        raise DataError(f"{path}: cannot read H5 slice ({error})") from None


def h5_slice_problems(case):
    """One-line problems with a kaggle-h5 case's slice numbering (gaps, not starting at 0)."""
    expected = tuple(range(len(case.slices)))
    if case.slice_indices != expected:
        missing = sorted(set(range(max(case.slice_indices) + 1)) - set(case.slice_indices))
        return [f"case {case.id}: missing slices {missing[:10]}{' ...' if len(missing) > 10 else ''}"]
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


def _read_h5_case(case, modalities, with_labels=True):
    _raise_first(h5_slice_problems(case))
    images, masks = zip(*(load_h5_slice(p) for p in case.slices))
    volume = np.stack(images, axis=2)  # (H, W, S, 4): slices become the last spatial axis
    _raise_first(volume_problems(f"case {case.id}", volume))
    order = [case.channel_order.index(m) for m in modalities]
    seg = h5_mask_to_classes(np.stack(masks, axis=2), f"case {case.id}") if with_labels else None
    shape = volume.shape[:3]
    properties = {"affine": brats_affine(shape), "header": None, "shape": tuple(shape),
                  "spacing": (1.0, 1.0, 1.0), "files": list(case.slices)}
    return np.ascontiguousarray(volume[..., order]), seg, properties


def brats_affine(shape):
    """The 1 mm affine BraTS NIfTI files carry: diag(-1, -1, 1), origin so j runs 0..H-1 mm."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
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
