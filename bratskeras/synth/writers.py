"""Writing a synthetic dataset on disk: each case as its layout row names it, in a folder synth owns.

A case is written by `write_case` from the layout's row (data.layout_rows.LAYOUTS):
its case id and folder (`Layout.case_id`, `Layout.folder`), its files'
suffixes, separator, label suffix and extension (`Layout.file_name`, the
task's own naming for MEN-RT and GoAT: `Layout.for_scheme`), the file format
that writes them (`Layout.reader`: NIfTI files or H5 slices, data.formats)
and the files the release keeps beside its cases (`Layout.side_files`,
filled from SIDE_ROWS). Nothing here tests a layout's name.

The dataset folder (`write_folder`): one writer at a time; the dataset is
built beside out_dir and swapped in complete, so a kill or a full disk
leaves out_dir as it was, and --overwrite replaces a whole earlier synth
dataset (listed in its SYNTH_MARKER manifest), never merges into it.
"""

import contextlib
import csv
import json
import os
import shutil

from bratskeras.core import labels
from bratskeras.core.errors import OutputExistsError
from bratskeras.data.layout_rows import LAYOUTS
from bratskeras.platform import claims, outputs

# Written last into every dataset synth writes: a JSON manifest of its files
# ({"written_by": "bratskeras synth", "files": [relative paths]}). --overwrite
# replaces only a folder whose files are all listed in it.
SYNTH_MARKER = ".bratskeras-synth"
# What bratskeras itself adds to a dataset later: the preprocessing cache (fit's default --cache-dir).
_DERIVED = {".bratskeras_cache"}
# The layout synth writes unless told (a task's default too: TASK_LAYOUT replaces it).
DEFAULT_LAYOUT = "brats2020"
# The layout a 2023-2025 task is written in: the one whose case folders name their task.
TASK_LAYOUT = next(layout for layout in LAYOUTS.values() if layout.names_task)
# A layout's {grade} folder (2017-2019's HGG/ and LGG/): by the case index's parity.
GRADES = ("HGG", "LGG")
# The rows synth writes into a release's side files (Layout.side_files), per case:
# file name -> (header, row(case_id, index)). The Kaggle copy of BraTS 2020 keeps these beside its cases.
SIDE_ROWS = {
    "name_mapping.csv": (["Grade", "BraTS_2020_subject_ID"], lambda case_id, index: ["HGG", case_id]),
    "survival_info.csv": (["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"],
                          lambda case_id, index: [case_id, 40 + index % 40, 100 + 10 * index, "GTR"]),
}


def task_case_id(scheme, index):
    """The case folder name of a 2023-2025 task, e.g. BraTS-MET-00003-000, BraTS-MEN-RT-0003-1."""
    return TASK_LAYOUT.synth_case_id(index, scheme)


def write_case(layout, root, index, images, classes, scheme=None, voxel_mm=1.0):
    """Writes case `index` under `root` as layout row `layout` names it; returns its folder.

    Args:
        layout: a row of LAYOUTS.
        root: the dataset folder.
        index: the case's index in the dataset (its id and folder come from it).
        images: modality -> int16 (D, H, W).
        classes: uint8 (D, H, W) class indices of `scheme`.
        scheme: a labels.SCHEMES name or LabelScheme; None: the layout's own
            (the classic classes, written as its release's label values).
        voxel_mm: isotropic voxel size the files carry (formats that keep one).
    """
    scheme = labels.get_scheme(layout.label_scheme if scheme is None else scheme)
    naming = layout.for_scheme(scheme)
    case_id = layout.synth_case_id(index, scheme)
    folder = os.path.join(root, naming.folder.format(case_id=case_id, grade=GRADES[index % 2]))
    naming.reader.write(folder, naming, case_id, images, classes, scheme, voxel_mm)
    for name in naming.side_files:
        _append_side_row(os.path.join(os.path.dirname(folder), name), case_id, index)
    return folder


def _append_side_row(path, case_id, index):
    """Appends the case's row to side file `path` (SIDE_ROWS), with the header when the file is new."""
    header, row = SIDE_ROWS[os.path.basename(path)]
    new = not os.path.exists(path)
    with outputs.names_target(path), open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(header)
        writer.writerow(row(case_id, index))


def write_folder(out_dir, overwrite, write_cases):
    """Runs `write_cases(staging)` into a staging folder, then publishes it as `out_dir` with its manifest.

    Args:
        out_dir: target folder; must be absent or empty unless `overwrite`.
        overwrite: replace the dataset synth wrote in `out_dir` before, whole.
        write_cases: callable(staging folder) -> the case folders it wrote.

    Returns:
        The case folders' paths under `out_dir`.

    Raises:
        OutputExistsError: `out_dir` cannot be written (`_check_out_dir`).
        OSError: naming the file's final path under `out_dir`.
    """
    out_dir = os.fspath(out_dir)
    with claims.claim_folder(out_dir, "synth"):
        _check_out_dir(out_dir, overwrite)
        staging = claims.staging_folder(out_dir)
        try:
            with _names_final_paths(staging, out_dir):
                folders = write_cases(staging)
                _write_manifest(staging)
            claims.publish_folder(staging, out_dir, last=SYNTH_MARKER)
        finally:
            if os.path.lexists(staging):
                shutil.rmtree(staging, ignore_errors=True)
    return [os.path.join(out_dir, os.path.relpath(folder, staging)) for folder in folders]


def _dataset_files(root):
    """Relative paths of the files under `root`, bratskeras' own bookkeeping (claim, marker, cache) aside."""
    found = []
    for parent, folders, files in os.walk(root):
        if parent == root:
            folders[:] = [f for f in folders if f not in _DERIVED]
            files = [f for f in files if f not in (SYNTH_MARKER, claims.CLAIM_FILE)]
        found += [os.path.relpath(os.path.join(parent, name), root) for name in files]
    return sorted(found)


def _write_manifest(root):
    """Writes SYNTH_MARKER, the list of every file synth wrote under `root`, last."""
    # Listed before the marker's temporary file exists, which would otherwise be listed too.
    files = _dataset_files(root)
    with outputs.atomic_path(os.path.join(root, SYNTH_MARKER)) as tmp, open(tmp, "w") as stream:
        json.dump({"written_by": "bratskeras synth", "files": files}, stream)


@contextlib.contextmanager
def _names_final_paths(staging, out_dir):
    """Re-raises an OSError from the block with the file's final path under `out_dir`, not its staging one."""
    try:
        yield
    except OSError as error:
        if error.errno is None:
            raise
        name = os.fspath(error.filename) if error.filename is not None else out_dir
        if name.startswith(staging):
            name = out_dir + name[len(staging):]
        raise OSError(error.errno, error.strerror or os.strerror(error.errno), name) from None


def _check_out_dir(out_dir, overwrite):
    """Writing into a non-empty folder needs `overwrite`, and only a dataset synth wrote is replaced.

    Raises:
        OutputExistsError: not a folder; not empty without `overwrite`; or
            not empty and not written by synth (a real dataset with the
            same case names would otherwise be replaced by phantoms), or
            holding files synth did not write (named).
    """
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"{out_dir}: exists and is not a folder")
    entries = claims.folder_entries(out_dir) if os.path.isdir(out_dir) else []
    if entries and not overwrite:
        raise OutputExistsError(f"{out_dir}: folder is not empty (pass --overwrite to write into it)")
    if entries and SYNTH_MARKER not in entries:
        raise OutputExistsError(f"{out_dir}: folder is not empty and was not written by bratskeras synth; "
                                "--overwrite replaces only synth's own phantoms")
    if entries:
        foreign = _foreign_files(out_dir)
        if foreign:
            raise OutputExistsError(f"{out_dir}: holds files bratskeras synth did not write ({', '.join(foreign[:3])}"
                                    f"{', ...' if len(foreign) > 3 else ''}); --overwrite replaces a whole synth "
                                    "dataset, so move them out or choose another folder")


def _foreign_files(out_dir):
    """Files under `out_dir` that its SYNTH_MARKER manifest does not list (all of them for an unreadable one)."""
    try:
        with open(os.path.join(out_dir, SYNTH_MARKER)) as stream:
            listed = set(json.load(stream)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        # A marker of an older bratskeras (one line of text) lists nothing: nothing is known to be synth's.
        return [f"{SYNTH_MARKER} (no manifest of synth's files)"]
    return [path for path in _dataset_files(out_dir) if path not in listed]
