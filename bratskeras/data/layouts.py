"""Where BraTS cases lie on disk: `discover` finds them by the layouts' rows (`LAYOUTS`).

Layouts (docs/reference.md section 3), detected from the case folder names; each
is a row of bratskeras.data.layout_rows.LAYOUTS (its case-folder pattern, file
suffixes, separator, extension, label file, file format, ...), which discovery
reads and `synth` writes:

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
Reading what discovery finds is bratskeras.data.volumes' job, through the
case's file format (`Case.reader`, bratskeras.data.formats).

Discovery is the one place that decides which inputs are used, and it names
every data-like input it does not use (`Dataset`):

    problems (`Dataset.skipped`, `Dataset.duplicates`; inspect exits 1, fit
    refuses unless --skip-bad-cases, predict and evaluate report them):
        a folder that cannot be read, a second symlink to a folder already read,
        a case id found in several folders (every copy is left out: which one
        is meant cannot be guessed), a broken symlink named like a case folder
        or a data file, a case folder without NIfTI files, a folder of case
        files not named like a case (a renamed copy such as
        "BraTS2021_00001 (copy)"), an H5 volume found in several folders
    ignored inputs (`Dataset.ignored`, named, not problems):
        NIfTI files in a folder not named like a case that are not case files
        (e.g. predictions kept beside the data), case folders of another layout
        than the one asked for, other broken symlinks

Hidden files and folders (".bratskeras_cache", ".tmp-*" leftovers of the
package's own writers, macOS "._*" files) are not inputs and are not read.
"""

import os
from dataclasses import dataclass, field

from bratskeras.core import labels
from bratskeras.core.errors import DataError
from bratskeras.data import layout_rows
from bratskeras.data.layout_rows import LAYOUTS, MODALITIES, NAMES, Layout  # noqa: F401 (this module's API too)
from bratskeras.data.volumes import H5_CHANNEL_ORDER, H5_MASK_CLASSES  # noqa: F401 (this module's API too)


@dataclass
class Case:
    """One subject.

    Attributes:
        id: case folder name (or "volume_<v>" for kaggle-h5).
        layout: a key of LAYOUTS.
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
        expected_slices: kaggle-h5 only: how many slices the volume should
            have (the dataset's longest volume's), so missing trailing slices show.
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
    expected_slices: int = 0

    @property
    def reader(self):
        """The file format (bratskeras.data.formats) that reads this case: its layout's."""
        return LAYOUTS[self.layout].reader

    def source_files(self):
        """Every file this case is read from (for cache keys and messages)."""
        return self.reader.source_files(self)

    @property
    def folder(self):
        """The folder holding the case's files."""
        files = self.source_files()
        return os.path.dirname(files[0] if files else self.extra_files[0])


@dataclass
class Dataset:
    """A discovered dataset: its root, layout, label scheme and cases (sorted by id, each id once).

    Attributes:
        skipped: one problem line per input discovery had to leave out (module
            docstring): every command reports them, none drops a case in silence.
        duplicates: one problem line per case id found in several folders,
            naming them all; no copy is in `cases`.
        ignored: one line per data-like input that is not used, with the
            reason; not a problem (module docstring).
    """

    root: str
    layout: str
    label_scheme: str
    cases: list
    skipped: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    @property
    def problems(self):
        """Every dataset-level problem line: duplicate case ids first, then the inputs left out."""
        return self.duplicates + self.skipped

    def refuse_duplicates(self):
        """DataError naming the first duplicate case id and its folders, if any (before any work is done)."""
        if self.duplicates:
            raise DataError(f"{len(self.duplicates)} case id(s) found in several folders, first: "
                            f"{self.duplicates[0]}")

    def case(self, case_id):
        """The case called `case_id` (DataError if absent)."""
        for case in self.cases:
            if case.id == case_id:
                return case
        raise DataError(f"{self.root}: no case {case_id!r}")


def label_scheme_for(layout, case_id=None):
    """The labels.SCHEMES name of a layout's label files (2023+: from the case folder's task prefix)."""
    return LAYOUTS[layout].scheme_of(case_id)


class NoCasesFound(DataError):
    """`discover` found no BraTS case under its root (evaluate then reads a flat folder of label files)."""


def discover(root, layout=None, channel_order=H5_CHANNEL_ORDER, task=None):
    """Finds every case under `root` (any ancestor of the case folders).

    Args:
        root: folder to search recursively.
        layout: a key of LAYOUTS, or None to detect it from the folder names.
        channel_order: kaggle-h5 only: modality of each `image` channel.
        task: 2023+ layout only: the label scheme of every case (a name in
            labels.TASKS), for folders whose names do not tell (2024 GLI);
            a case whose folder names another task is an error.

    Returns:
        Dataset with cases sorted by id, each id once; what discovery left
        out is in its `skipped`, `duplicates` and `ignored` (module docstring).

    Symlinked folders are followed (each real folder once).

    Raises:
        NoCasesFound: no BraTS case found (empty or wrong folder).
        DataError: root missing or not a folder, several layouts found while
            `layout` is None, cases of several tasks found while `task` is
            None, or a `task` for a layout older than 2023.
    """
    root = os.fspath(root)
    if layout is not None and layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {', '.join(NAMES)}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder")
    nifti_dirs, h5_files, skipped, ignored = _scan(root)
    found = _nifti_cases(nifti_dirs, skipped, ignored)
    if h5_files:
        found[layout_rows.SLICES.name] = _h5_cases(h5_files, tuple(channel_order))
    found = {name: cases for name, cases in found.items() if cases}
    if not found and skipped:
        raise NoCasesFound(f"{root}: no BraTS cases found; {len(skipped)} input(s) left out, first: {skipped[0]}")
    if not found:
        raise NoCasesFound(f"{root}: no BraTS cases found (empty or wrong folder; layouts: {', '.join(NAMES)})")
    if layout is None:
        if len(found) > 1:
            raise DataError(f"{root}: cases of several layouts found ({', '.join(sorted(found))}); pass a layout")
        layout = next(iter(found))
    if layout not in found:
        raise DataError(f"{root}: no {layout} cases found (found: {', '.join(sorted(found))})")
    for other in sorted(set(found) - {layout}):
        folders = sorted(c.folder for c in found[other])
        ignored.append(f"{folders[0]}: {other} case folder, not read (layout {layout} asked for); "
                       f"{len(folders)} such folder(s)")
    every_copy = found[layout]
    _mark_expected_labels(every_copy)
    scheme = _dataset_scheme(root, layout, every_copy, task)
    cases, duplicates = _unique_cases(every_copy)
    return Dataset(root=root, layout=layout, label_scheme=scheme, cases=cases, skipped=skipped,
                   duplicates=duplicates, ignored=ignored)


def _unique_cases(cases):
    """(cases whose id is found once, sorted by id; one problem line per id found in several folders).

    Every copy of a duplicate id is left out: which one the user meant cannot
    be guessed, and two cases of one id would share one prediction file, one
    cache entry and one reference.
    """
    by_id = {}
    for case in cases:
        by_id.setdefault(case.id, []).append(case)
    unique, duplicates = [], []
    for case_id in sorted(by_id):
        copies = by_id[case_id]
        if len(copies) == 1:
            unique.append(copies[0])
            continue
        folders = sorted(c.folder for c in copies)
        duplicates.append(f"case {case_id}: found in {len(folders)} folders ({', '.join(folders)}); every copy "
                          "left out (a case id must be unique within a dataset: remove or rename all but one)")
    return unique, duplicates


def _dataset_scheme(root, layout, cases, task):
    """The one label scheme of `cases`: `task` (set on every case) or the one their folders name."""
    if task is not None:
        if task not in labels.TASKS:
            raise DataError(f"unknown task {task!r}; expected one of {', '.join(labels.TASKS)}")
        if not LAYOUTS[layout].names_task:
            raise DataError(f"{root}: a task applies to 2023+ case folders (BraTS-<TASK>-...), not {layout}")
        for case in cases:
            if case.label_scheme != task and not labels.get_scheme(case.label_scheme).ambiguous:
                raise DataError(f"case {case.id}: its folder name says task {case.label_scheme}, not {task}")
            case.label_scheme = task
        return task
    schemes = sorted({case.label_scheme for case in cases})
    if len(schemes) > 1:
        raise DataError(f"{root}: cases of several tasks found ({', '.join(schemes)}); a dataset holds one task: "
                        f"give one task's folder ({_task_folders(cases, schemes)}), or --task where the case "
                        "folders' names do not tell")
    return schemes[0]


def _task_folders(cases, schemes):
    """"mets: <folder>; ped: <folder>": the folder holding each scheme's cases (their common parent)."""
    parents = {scheme: os.path.commonpath([os.path.dirname(c.folder) for c in cases
                                           if c.label_scheme == scheme]) for scheme in schemes}
    return "; ".join(f"{scheme}: {parents[scheme]}" for scheme in schemes)


def _scan(root):
    """Walks `root`, symlinked folders included: what it finds, and what it had to leave out.

    os.walk does not follow folder symlinks by default, which dropped
    symlinked case folders without a word; here they are followed, each real
    folder read once (a link back to an ancestor would loop forever). Hidden
    files and folders are not inputs (module docstring) and are not entered.

    Returns:
        ({folder: [NIfTI file names]}, [H5 slice paths], [problem lines: inputs
        left out], [lines naming ignored inputs]).
    """
    nifti_dirs, h5_files, skipped, ignored, seen = {}, [], [], [], {}

    def unreadable(error):
        skipped.append(f"{error.filename}: folder cannot be read ({error.strerror}); cases in it are left out")

    for folder, subfolders, files in os.walk(root, onerror=unreadable, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        real = os.path.realpath(folder)
        if real in seen:
            skipped.append(f"{folder}: same folder as {seen[real]} (symlink), read once")
            subfolders[:] = []
            continue
        seen[real] = folder
        has_data = False
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.startswith("."):
                continue
            if layout_rows.nifti_stem(name) is not None:
                # A broken link named like a data file stays: reading it fails by name, in its case.
                nifti_dirs.setdefault(folder, []).append(name)
                has_data = True
            elif layout_rows.slice_file(name) is not None:
                h5_files.append(path)
                has_data = True
            elif os.path.islink(path) and not os.path.exists(path):
                _broken_link(path, skipped, ignored)
        if not has_data and not subfolders and _layout_of(os.path.basename(folder)):
            skipped.append(f"{folder}: case folder without NIfTI files; case left out")
    return nifti_dirs, h5_files, skipped, ignored


def _broken_link(path, skipped, ignored):
    """Names a symlink whose target is missing: a problem when named like a case folder, else ignored."""
    line = f"{path}: broken symlink (its target {os.readlink(path)} does not exist)"
    if _layout_of(os.path.basename(path)):
        skipped.append(f"{line}; case left out")
    else:
        ignored.append(f"{line}; not read")


def _layout_of(case_id):
    for layout in LAYOUTS.values():
        if layout.case_pattern is not None and layout.case_pattern.match(case_id):
            return layout.name
    return None


def _nifti_cases(nifti_dirs, skipped, ignored):
    """{layout: [Case]} for every folder named like a BraTS case; names every other folder of NIfTI files.

    A folder not named like a case that holds case files (<case id>_<suffix>)
    is a problem (a renamed copy such as "BraTS2021_00001 (copy)"); one with
    other NIfTI files (predictions kept beside the data) is ignored, by name.
    """
    found = {}
    for folder, names in nifti_dirs.items():
        case_id = os.path.basename(folder)
        layout = _layout_of(case_id)
        if layout is not None:
            found.setdefault(layout, []).append(_nifti_case(folder, case_id, layout, sorted(names)))
            continue
        case_files = [name for name in sorted(names) if _case_id_of_file(name)]
        if case_files:
            skipped.append(f"{folder}: holds files of case {_case_id_of_file(case_files[0])} "
                           f"({case_files[0]}, ...) but is not named like a case folder (a renamed copy, or "
                           "files outside their case folder?); left out")
        else:
            ignored.append(f"{folder}: {len(names)} NIfTI file(s) in a folder not named like a case "
                           f"({sorted(names)[0]}, ...); not read")
    return found


def _case_id_of_file(name):
    """The case id a NIfTI file's name carries before its modality or label suffix, or None."""
    case_id, suffix = layout_rows.split_suffix(layout_rows.nifti_stem(name))
    return case_id if suffix and _layout_of(case_id) else None


def _nifti_case(folder, case_id, layout, names):
    """The Case of one case folder's NIfTI file `names`: modalities, label file and extra files by suffix."""
    odd_label = LAYOUTS[layout].odd_label
    modalities, segs, extra = {}, [], []
    for name in names:
        path = os.path.join(folder, name)
        stem = layout_rows.nifti_stem(name)
        _, suffix = layout_rows.split_suffix(stem)
        modality = layout_rows.MODALITY_OF_SUFFIX.get(suffix)
        if suffix in layout_rows.LABEL_SUFFIXES or (odd_label is not None and odd_label.search(stem)):
            segs.append(path)
        elif modality is not None and modality not in modalities:
            modalities[modality] = path
        else:
            extra.append(path)
    # The standard <case>_seg name wins over an oddly named one; any other is extra.
    segs.sort(key=lambda p: 0 if layout_rows.split_suffix(layout_rows.nifti_stem(os.path.basename(p)))[1] else 1)
    return Case(id=case_id, layout=layout, modalities=modalities, seg=segs[0] if segs else None,
                label_scheme=label_scheme_for(layout, case_id), extra_files=segs[1:] + extra)


def _mark_expected_labels(cases):
    """Decides which cases must have a label file, by their layout's rule (`Layout.expects_label`).

    BraTS 2020 names its unlabelled cases "Validation". Other releases keep
    unlabelled cases in a separate folder, so a case is expected to have a
    label when any other case in its parent folder has one.
    """
    labelled_parents = {os.path.dirname(c.folder) for c in cases if c.seg}
    for case in cases:
        case.expects_seg = LAYOUTS[case.layout].expects_label(case, labelled_parents)


def _h5_cases(paths, channel_order):
    """One Case per (folder, volume number) of slice files; each expects as many slices as the longest volume.

    A volume whose slice files stop early has no gap to show it: the longest
    volume of the dataset (all BraTS volumes have one size) says how many
    there should be (volumes.h5_slice_problems).
    """
    if sorted(channel_order) != sorted(MODALITIES):
        raise DataError(f"channel order {channel_order} must name each of {MODALITIES} once")
    volumes = {}
    for path in paths:
        volume, index = layout_rows.slice_file(os.path.basename(path))
        volumes.setdefault((os.path.dirname(path), volume), []).append((index, path))
    expected = max(max(s for s, _ in items) + 1 for items in volumes.values())
    cases = []
    for (_, volume), items in sorted(volumes.items()):
        items.sort()
        first = items[0][1]
        cases.append(Case(
            id=layout_rows.SLICES.case_id.format(number=volume), layout=layout_rows.SLICES.name, modalities={m: first for m in MODALITIES},
            seg=first, label_scheme=layout_rows.SLICES.label_scheme, slices=tuple(p for _, p in items),
            slice_indices=tuple(s for s, _ in items), channel_order=channel_order, expected_slices=expected))
    return cases
