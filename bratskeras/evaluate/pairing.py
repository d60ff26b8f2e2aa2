"""Which prediction goes with which reference, and reading a pair in the reference's label scheme.

    predictions: PRED_DIR/<case id>.nii.gz (or .nii), top level only (what
                 `bratskeras predict` writes; its probabilities/ subfolder is ignored)
    references:  any labelled dataset layout `layouts.discover` reads (each read
                 by its case's file format, volumes.read_labels), or a flat folder
                 of <id>.nii.gz / <id>_seg.nii.gz label files (layout_rows'
                 NIfTI naming and FLAT_LABEL_SUFFIX)

Pairing is by case id (`pair`). Prediction label scheme: for 2017-2023
glioma, 4 present -> brats2020, 3 present -> brats2023, neither -> the
reference's scheme (0, 1, 2 mean the same in both); for the other 2023-2025
tasks, the reference's task (`prediction_classes`). Scoring the pairs is
bratskeras.evaluate.scoring's job.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from bratskeras.core import labels
from bratskeras.core.errors import DataError
from bratskeras.data import layout_rows, layouts, volumes


@dataclass
class Reference:
    """One reference case: its id, how to load its class map, and its label scheme."""

    case_id: str
    scheme: str
    path: str | None = None
    case: layouts.Case | None = None

    def load(self):
        """(class map uint8 (D, H, W), nibabel image or None, spacing)."""
        if self.case is not None:
            return volumes.read_labels(self.case)
        array, image = volumes.load_label_map(self.path)
        if self.scheme:
            classes = labels.labels_to_classes(array, self.scheme, source=self.path)
        else:
            # A flat folder names no release: its values say which (read once, here).
            classes, self.scheme = labels.label_map_to_classes(array, "brats2020", self.path)
        return classes, image, tuple(float(z) for z in image.header.get_zooms()[:3])


@dataclass
class Pairing:
    """Predictions matched with references by case id (all lists sorted)."""

    pairs: list = field(default_factory=list)  # (Reference, prediction path)
    missing: list = field(default_factory=list)  # References without a prediction
    extra: list = field(default_factory=list)  # prediction paths without a reference
    skipped: list = field(default_factory=list)  # reference inputs discovery left out (problem lines)
    ignored: list = field(default_factory=list)  # reference inputs not used, with the reason (not problems)


def find_references(ref_dir, task=None):
    """Reference label maps under `ref_dir`: a dataset layout, else a flat folder of label files.

    Args:
        ref_dir: the folder.
        task: a labels.TASKS name: the scheme of every reference (2023+ case
            folders, or a flat folder, whose values then need not tell).

    Returns:
        (list of Reference, one problem line per input discovery left out,
        one line per input not used with its reason).

    Raises:
        DataError: no labelled case found; a case id found in several
            folders (one prediction cannot be scored against two references);
            a layout folder discovery refuses (several tasks or layouts: its
            message says what to pass), which is not read as a flat folder.
    """
    ref_dir = os.fspath(ref_dir)
    try:
        dataset = layouts.discover(ref_dir, task=task)
    except layouts.NoCasesFound:
        dataset = None
    if dataset is not None:
        dataset.refuse_duplicates()
        refs = [Reference(c.id, c.label_scheme, path=c.seg, case=c) for c in dataset.cases if c.seg]
        if not refs:
            raise DataError(f"{ref_dir}: no labelled cases ({len(dataset.cases)} case(s) without label files)")
        return refs, list(dataset.skipped), list(dataset.ignored)
    refs = {}
    for name in sorted(os.listdir(ref_dir)) if os.path.isdir(ref_dir) else []:
        case_id = _flat_label_id(name)
        if case_id and os.path.isfile(os.path.join(ref_dir, name)):
            # The scheme of a flat folder is read from its values when it is loaded.
            refs.setdefault(case_id, Reference(case_id, task or "", path=os.path.join(ref_dir, name)))
    if not refs:
        raise DataError(f"{ref_dir}: no reference label files (a BraTS layout, or <id>.nii.gz / <id>_seg.nii.gz)")
    return list(refs.values()), [], []


def _flat_label_id(name):
    """The case id of a flat folder's label file <id>.nii.gz or <id>_seg.nii.gz (or .nii), else None."""
    stem = layout_rows.nifti_stem(name)
    suffix = layout_rows.FLAT_LABEL_SUFFIX
    if stem is not None and stem.endswith(suffix) and len(stem) > len(suffix):
        return stem[:-len(suffix)]
    return stem


def find_predictions(pred_dir):
    """{case id: path} of <id>.nii.gz / <id>.nii files at the top of `pred_dir`."""
    pred_dir = os.fspath(pred_dir)
    if not os.path.isdir(pred_dir):
        raise DataError(f"{pred_dir}: not a folder")
    found = {}
    for name in sorted(os.listdir(pred_dir)):
        case_id = layout_rows.nifti_stem(name)
        if case_id and not name.startswith(".") and os.path.isfile(os.path.join(pred_dir, name)):
            if case_id in found:
                raise DataError(f"{os.path.join(pred_dir, name)}: a second prediction for case {case_id}")
            found[case_id] = os.path.join(pred_dir, name)
    return found


def pair(pred_dir, ref_dir, task=None):
    """Pairs predictions with references by case id (see Pairing)."""
    predictions = find_predictions(pred_dir)
    references, skipped, ignored = find_references(ref_dir, task)
    result = Pairing(skipped=skipped, ignored=ignored)
    for ref in sorted(references, key=lambda r: r.case_id):
        if ref.case_id in predictions:
            result.pairs.append((ref, predictions[ref.case_id]))
        else:
            result.missing.append(ref)
    known = {r.case_id for r in references}
    result.extra = sorted(path for case_id, path in predictions.items() if case_id not in known)
    return result


def _load_prediction(path, reference_image, scheme):
    array, image = volumes.load_label_map(path)
    if reference_image is not None:
        problem = volumes.geometry_problem(path, image, "reference", reference_image)
        if problem:
            raise DataError(problem)
    return prediction_classes(array, scheme, path)


def prediction_classes(values, scheme, source):
    """A predicted label map -> class indices (D, H, W) uint8 of the reference's `scheme` (module docstring).

    2017-2023 glioma predictions say by their values which release they use
    (both have the same classes); every other task's are read in its scheme.
    """
    if scheme not in _VALUE_DETECTED:
        return labels.labels_to_classes(values, scheme, source=source)
    classes, _ = labels.label_map_to_classes(values, scheme, source)
    return classes


# Schemes whose predictions say by their values which of the two they use.
_VALUE_DETECTED = ("brats2020", "brats2023")


def load_pair(reference, prediction_path):
    """(predicted classes, reference classes, spacing) of one pair in the reference's scheme; empty when None."""
    ref_classes, ref_image, spacing = reference.load()
    if prediction_path is None:
        return np.zeros_like(ref_classes), ref_classes, spacing
    pred_classes = _load_prediction(prediction_path, ref_image, reference.scheme)
    if pred_classes.shape != ref_classes.shape:
        raise DataError(f"{prediction_path}: shape {pred_classes.shape} differs from the reference "
                        f"{ref_classes.shape}")
    return pred_classes, ref_classes, spacing
