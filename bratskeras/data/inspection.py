"""Validates a dataset: every problem of every case, one line each.

Problems found (each message names the case and the file):
missing modality, missing label file (for cases expected to have one, see
layouts.discover), extra label or unknown file, unreadable / truncated / corrupt
file, shape or affine mismatch between a case's files, NaN/Inf voxels,
all-zero modality, label values outside the release's scheme, missing H5
slices (gaps or trailing), a header claiming more voxels than
volumes.MAX_VOXELS or more data than its file holds; and, from discovery,
every input left out (a duplicate case id, an unreadable folder, a broken
case-folder symlink, an empty case folder, a renamed copy of a case). An
empty or wrong folder makes `layouts.discover` raise DataError. Inputs that
are not used but are no problem (layouts' module docstring) are listed as
`ignored`, with the reason.

Warnings (not problems: nothing stops on them) name, per case and image file,
an input unlike what BraTS models are trained on (`input_findings`): voxels
that are not 1 mm isotropic (the header's zooms), or a volume that does not
look skull-stripped. The skull-stripping heuristic: a brain with its CSF is
about BRAIN_ML (1000-1800 ml) and never reaches the edge of the field of view, so a
foreground (preprocessing.channel_foreground, the brain every other step
uses) above MAX_BRAIN_ML, or one covering more than MAX_BORDER_FOREGROUND of
the volume's border voxels, still holds skull and scalp (or the noise around
a head).
"""

import json
import os
from dataclasses import dataclass, field

import numpy as np

from bratskeras.core import labels
from bratskeras.core.errors import DataError
from bratskeras.data import formats, layouts, preprocessing, volumes
from bratskeras.platform import outputs

# Part of remembered reports' keys: bump when the checks change.
REPORT_VERSION = 3
# What every input warning says BraTS models are trained on.
BRATS_INPUT = "BraTS models expect skull-stripped, 1 mm isotropic scans co-registered to SRI24 (240 x 240 x 155)"
# An adult brain with its CSF, in ml; a foreground far above it holds more than a brain.
BRAIN_ML = (1000, 1800)
MAX_BRAIN_ML = 2500.0
# A skull-stripped brain leaves the field of view's border background; a head with its scalp does not.
MAX_BORDER_FOREGROUND = 0.5
# Header zooms within this many mm of 1 count as 1 mm (float32 zooms written from other tools' floats).
SPACING_TOLERANCE_MM = 0.01


@dataclass
class CaseReport:
    """What inspection found for one case (fields match `inspect --json`)."""

    id: str
    modalities: dict
    seg: str | None
    shape: list | None = None
    spacing: list | None = None
    labels: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return {"id": self.id, "modalities": self.modalities, "seg": self.seg, "shape": self.shape,
                "spacing": self.spacing, "labels": self.labels, "problems": self.problems,
                "warnings": self.warnings}


@dataclass
class DatasetReport:
    """The layout, one CaseReport per case, and what discovery left out (layouts.Dataset's lines).

    `duplicates` and `skipped_folders` are problems; `ignored` inputs are named, not problems.
    """

    layout: str
    cases: list
    label_scheme: str = ""
    skipped_folders: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    @property
    def problems(self):
        return self.duplicates + self.skipped_folders + [p for case in self.cases for p in case.problems]

    @property
    def warnings(self):
        return [w for case in self.cases for w in case.warnings]

    def to_dict(self):
        return {"layout": self.layout, "label_scheme": self.label_scheme, "cases": [c.to_dict() for c in self.cases],
                "skipped_folders": self.skipped_folders, "duplicates": self.duplicates, "ignored": self.ignored}


def inspect_dataset(root, layout=None, cache_dir=None, task=None):
    """Discovers and checks every case under `root`.

    Args:
        root, layout, task: as layouts.discover.
        cache_dir: optional folder remembering each case's report under a
            key of its files' paths, sizes and mtimes (and its extra files),
            so `fit` does not decompress a whole dataset again at every start;
            any changed, added or removed file gives a new key and a fresh check.

    Returns:
        (Dataset, DatasetReport).

    Raises:
        DataError: empty or wrong folder (from layouts.discover).
    """
    dataset = layouts.discover(root, layout, task=task)
    check = inspect_case if cache_dir is None else (lambda case: _remembered_report(case, cache_dir))
    return dataset, DatasetReport(layout=dataset.layout, cases=[check(c) for c in dataset.cases],
                                  label_scheme=dataset.label_scheme, skipped_folders=list(dataset.skipped),
                                  duplicates=list(dataset.duplicates), ignored=list(dataset.ignored))


def _remembered_report(case, cache_dir):
    """inspect_case(case), read from `cache_dir` when the case's files are unchanged."""
    from bratskeras.data import cache

    key = cache.digest({"version": REPORT_VERSION, "scheme": case.label_scheme,
                        "sources": cache.source_stats(case.source_files()),
                        "extra": sorted(case.extra_files), "modalities": sorted(case.modalities),
                        "seg": case.seg, "expects_seg": case.expects_seg,
                        "expected_slices": case.expected_slices})
    path = os.path.join(os.fspath(cache_dir), "inspection", f"{case.id}-{key}.json")
    if os.path.exists(path):
        with open(path) as stream:
            return CaseReport(**json.load(stream))
    report = inspect_case(case)
    with outputs.atomic_path(path) as tmp, open(tmp, "w") as stream:
        json.dump(report.to_dict(), stream)
    return report


def inspect_case(case):
    """Checks one case, reading every file fully, as its file format asks (_CHECKS); returns its CaseReport."""
    report = CaseReport(id=case.id, modalities=dict(case.modalities), seg=case.seg)
    _CHECKS[case.reader](case, report)
    return report


def _inspect_files(case, report):
    """Fills `report` for a case folder of NIfTI files: its file set, then every file read fully."""
    report.problems += _file_set_problems(case)
    reference = None
    for path in list(case.modalities.values()) + ([case.seg] if case.seg else []):
        is_label = path == case.seg
        try:
            array, image = volumes.load_nifti(path)
        except DataError as error:
            report.problems.append(f"case {case.id}: {error}")
            continue
        file_problems = volumes.volume_problems(path, array, is_label)
        report.problems += [f"case {case.id}: {p}" for p in file_problems]
        if reference is None:
            reference = (path, image)
            report.shape = [int(s) for s in image.shape[:3]]
            report.spacing = [float(z) for z in image.header.get_zooms()[:3]]
        mismatch = volumes.geometry_problem(path, image, *reference)
        if mismatch:
            report.problems.append(f"case {case.id}: {mismatch}")
        if is_label:
            report.labels, problem = _label_values(array, case.label_scheme, path)
            report.problems += [f"case {case.id}: {problem}"] if problem else []
        elif not file_problems:
            zooms = [float(z) for z in image.header.get_zooms()[:3]]
            report.warnings += [f"case {case.id}: {path}: {finding}; {BRATS_INPUT}"
                                for finding in input_findings(array, zooms)]


def input_findings(channel, spacing):
    """What makes one image volume unlike a BraTS model's input (module docstring), one phrase each.

    Args:
        channel: (D, H, W) intensities of one modality.
        spacing: its voxel size (3,) in mm.

    Returns:
        list of str, empty for a BraTS-like volume.
    """
    return [f for f in (_spacing_finding(spacing), _skull_finding(channel, spacing)) if f]


def case_input_warning(case_id, image, spacing, modalities):
    """One line naming all of a case's input findings (predict's warning), or None for a BraTS-like case.

    Args:
        case_id: the case's id.
        image: (D, H, W, C) intensities, channels in `modalities` order.
        spacing: voxel size (3,) in mm, shared by the channels.
        modalities: the channels' names.
    """
    findings = [_spacing_finding(spacing)]
    for c, modality in enumerate(modalities):
        skull = _skull_finding(image[..., c], spacing)
        findings.append(f"{modality} {skull}" if skull else None)
    findings = [f for f in findings if f]
    return f"case {case_id}: {'; '.join(findings)}; {BRATS_INPUT}" if findings else None


def _spacing_finding(spacing):
    """"voxels 2 x 2 x 2 mm, not 1 mm isotropic" unless `spacing` (3,) is 1 mm on every axis."""
    if all(abs(float(z) - 1.0) <= SPACING_TOLERANCE_MM for z in spacing):
        return None
    return f"voxels {' x '.join(f'{float(z):g}' for z in spacing)} mm, not 1 mm isotropic"


def _skull_finding(channel, spacing):
    """"not skull-stripped? ..." when the foreground of (D, H, W) `channel` is too large or fills the border."""
    foreground = preprocessing.channel_foreground(channel)
    millilitres = np.count_nonzero(foreground) * float(np.prod(spacing)) / 1000.0
    if millilitres > MAX_BRAIN_ML:
        return (f"not skull-stripped? its foreground is {millilitres:.0f} ml, above any brain's "
                f"{BRAIN_ML[0]}-{BRAIN_ML[1]} ml with CSF (limit {MAX_BRAIN_ML:.0f} ml)")
    border = preprocessing.border_values(foreground)
    share = np.count_nonzero(border) / border.size
    if share > MAX_BORDER_FOREGROUND:
        return f"not skull-stripped? its foreground covers {share:.0%} of the field of view's border"
    return None


def _file_set_problems(case):
    expected = labels.get_scheme(case.label_scheme).modalities
    problems = [f"case {case.id}: missing {m} file" for m in expected if m not in case.modalities]
    if case.expects_seg and case.seg is None:
        problems.append(f"case {case.id}: missing label file")
    for path in case.extra_files:
        kind = "extra label file" if "seg" in os.path.basename(path).lower() else "unexpected file"
        problems.append(f"case {case.id}: {kind} {path}")
    return problems


def _label_values(array, scheme, path):
    """(sorted label values found, problem message or None)."""
    finite = array[np.isfinite(array)]
    values = [int(v) if float(v).is_integer() else float(v) for v in np.unique(finite)]
    bad = [v for v in values if v not in labels.get_scheme(scheme).labels]
    return values, (labels.out_of_scheme_message(path, bad, scheme) if bad else None)


def _inspect_h5(case, report):
    """Fills `report` for a volume of Kaggle H5 slices: its numbering, shapes, channels and mask."""
    report.problems += volumes.h5_slice_problems(case)
    images, masks = [], []
    for path in case.slices:
        try:
            image, mask = volumes.load_h5_slice(path)
        except DataError as error:
            report.problems.append(f"case {case.id}: {error}")
            continue
        images.append(image)
        masks.append(mask)
    if not images:
        return
    if len({(i.shape, m.shape) for i, m in zip(images, masks)}) > 1:
        report.problems.append(f"case {case.id}: slices differ in shape")
        return
    volume = np.stack(images, axis=2)
    report.shape = [int(s) for s in volume.shape[:3]]
    report.spacing = [1.0, 1.0, 1.0]
    for channel, modality in enumerate(case.channel_order):
        name = f"{modality} channel of volume {case.id}"
        problems = volumes.volume_problems(name, volume[..., channel])
        report.problems += [f"case {case.id}: {p}" for p in problems]
        if not problems:
            report.warnings += [f"case {case.id}: {name}: {finding}; {BRATS_INPUT}"
                                for finding in input_findings(volume[..., channel], report.spacing)]
    try:
        classes = volumes.h5_mask_to_classes(np.stack(masks, axis=2), f"case {case.id}")
        report.labels = [int(v) for v in np.unique(classes)]
    except DataError as error:
        report.problems.append(str(error))


# How each file format (bratskeras.data.formats, a layout row's `reader`) is checked.
_CHECKS = {formats.NIFTI_FILES: _inspect_files, formats.H5_SLICES: _inspect_h5}


def require_clean(dataset, report, skip_bad=False):
    """The cases to use: all of them, or the clean ones when `skip_bad`.

    Returns:
        (cases without problems, lines to print: every problem skipped, then
        every ignored input with its reason).

    Raises:
        DataError: some case or input has a problem (a duplicate case id, a
            folder left out) and `skip_bad` is False; the message counts them
            and quotes the first. With `skip_bad`, when no case is left: the
            message counts the bad cases and quotes the first few problems.
    """
    bad = {case.id for case in report.cases if case.problems}
    problems = report.problems
    if problems and not skip_bad:
        raise DataError(f"{len(problems)} problem(s) in {_where(report, bad)}, first: {problems[0]}")
    clean = [case for case in dataset.cases if case.id not in bad]
    if problems and not clean:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise DataError(f"all {len(bad) + len(report.duplicates)} case(s) have problems, none is left to use "
                        f"({len(problems)} problem(s) in {_where(report, bad)}): {shown}")
    # Ignored inputs end in "not read": printed beside the skipped problems, none goes unnamed.
    return clean, problems + list(report.ignored)


def _where(report, bad):
    """"3 case(s)", "... and 2 duplicate case id(s)", "... and 1 input(s) left out": where problems are."""
    parts = [f"{len(bad)} case(s)"]
    if report.duplicates:
        parts.append(f"{len(report.duplicates)} duplicate case id(s)")
    if report.skipped_folders:
        parts.append(f"{len(report.skipped_folders)} input(s) left out")
    return " and ".join(parts)
