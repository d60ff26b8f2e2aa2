"""Layout rows that carry their behaviour (data.layout_rows, data.formats, synth.writers), and synth's draws kept."""

import ast
import hashlib
import inspect
import os
import re

import numpy as np
import pytest

from bratskeras.core import labels
from bratskeras.data import formats, inspection, layout_rows, layouts, volumes
from bratskeras.evaluate import pairing, scoring
from bratskeras.synth import kinds, phantoms, writers


def _digest(images, classes):
    """sha256 (16 hex digits) of a case's images, by modality name, then its classes."""
    digest = hashlib.sha256()
    for array in [images[m] for m in sorted(images)] + [classes]:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


# Computed on main before synth and synthseg were split into modules (commit 03d0979): the shipped
# model's recipe regenerates its data draw for draw, so a refactor must leave every array as it was.
@pytest.mark.parametrize("tumor, expected", [("glioma", "f34dff945b8903e1"), ("metastases", "f56f8df5a9e4afd7")])
def test_simple_phantoms_draw_as_before(tumor, expected):
    assert _digest(*phantoms.make_case((16, 16, 12), (4, 1), fluid="cavity", tumor=tumor)) == expected


@pytest.mark.parametrize("generator, expected", [
    ("default", "d2c450130163971d"), ("heldout", "6471470c8c4538b5"),
    ("basic", "9d2e2d97837b64ca"), ("mimics", "329b5f2080291e63")])
def test_synthseg_heads_draw_as_before(generator, expected):
    from bratskeras.synth import synthseg

    assert _digest(*synthseg.make_case((20, 20, 16), (4, 1), generator, voxel_mm=4.0)) == expected


def _compared_constants(tree):
    """Every constant compared in `tree` (==, !=, in, not in), tuples' items included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                yield from (item.value for item in items if isinstance(item, ast.Constant))


def test_no_module_branches_on_a_layout_name():
    """Discovery, reading, inspection, scoring and synth ask the rows; only layout_rows names layouts."""
    for module in (layouts, volumes, formats, inspection, pairing, scoring, phantoms, writers, kinds):
        compared = set(_compared_constants(ast.parse(inspect.getsource(module))))
        assert not compared & set(layouts.NAMES), module.__name__
        assert "t1ce" not in compared, module.__name__  # MEN-RT was told by its modalities


def test_every_row_has_a_file_format_that_reads_and_writes():
    for row in layout_rows.LAYOUTS.values():
        for method in ("source_files", "read", "read_labels", "write"):
            assert callable(getattr(row.reader, method)), (row.name, method)
    assert [row.name for row in layout_rows.LAYOUTS.values() if row.names_task] == ["brats2023"]
    assert layout_rows.SLICES.name == "kaggle-h5" and layout_rows.LABEL_SUFFIXES == ("gtv", "seg")


@pytest.mark.parametrize("task", labels.TASKS)
def test_synth_case_ids_are_discovered_as_their_task(task):
    """A task's synth case id matches the row's pattern and its folder names the task back (gli's does not tell)."""
    scheme = labels.get_scheme(task)
    case_id = writers.task_case_id(scheme, 3)
    row = writers.TASK_LAYOUT
    assert row.case_pattern.match(case_id)
    assert layouts.label_scheme_for(row.name, case_id) == (task if scheme.prefixes else "brats2023")


def test_men_rt_files_are_named_by_the_rows_task_naming(tmp_path):
    (folder,) = phantoms.write_dataset(tmp_path, cases=1, shape=(16, 16, 12), task="menrt")
    case_id = os.path.basename(folder)
    assert case_id == "BraTS-MEN-RT-0000-1"
    assert sorted(os.listdir(folder)) == [f"{case_id}_gtv.nii.gz", f"{case_id}_t1c.nii.gz"]
    assert writers.TASK_LAYOUT.for_scheme("menrt").file_name(case_id, "gtv") == f"{case_id}_gtv.nii.gz"
    assert writers.TASK_LAYOUT.for_scheme("mets").file_name("x", "seg") == "x-seg.nii.gz"


def test_file_name_rules():
    assert layout_rows.nifti_stem("BraTS2021_00001_t1ce.nii.gz") == "BraTS2021_00001_t1ce"
    assert layout_rows.nifti_stem("a.nii") == "a" and layout_rows.nifti_stem("a.h5") is None
    assert layout_rows.split_suffix("BraTS-GLI-00001-000-T2F") == ("BraTS-GLI-00001-000", "t2f")
    assert layout_rows.split_suffix("notes") == ("notes", None)
    assert layout_rows.slice_file("volume_12_slice_3.h5") == (12, 3)
    assert layout_rows.slice_file("volume_x_slice_3.h5") is None


@pytest.mark.parametrize("name", ["a.nii.gz", "a_seg.nii.gz", "a_seg.nii", "_seg.nii.gz", "a_seg_seg.nii.gz",
                                  "a-seg.nii.gz", "a.nii.nii.gz", "a.txt", "a_seg.nii.gz.bak"])
def test_flat_reference_names_read_as_before(name):
    """The flat folder's <id>.nii.gz / <id>_seg.nii.gz rule, now from layout_rows, reads names as the old regex did."""
    old = re.match(r"^(?P<id>.+?)(_seg)?\.nii(\.gz)?$", name)
    assert pairing._flat_label_id(name) == (old.group("id") if old else None)


def test_kinds_name_what_each_generator_takes():
    assert tuple(kinds.KINDS) == ("simple", "anatomy", "synthseg")
    with pytest.raises(ValueError, match="voxel size other than 1 mm"):
        phantoms.write_dataset("unused", kind="simple", voxel_mm=2.0)
    with pytest.raises(ValueError, match="unknown phantom kind"):
        kinds.case_maker("nope", "default", None)
