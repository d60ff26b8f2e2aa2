import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core.errors import DataError
from bratskeras.data import layouts, volumes
from bratskeras.data.inspection import inspect_dataset, require_clean
from bratskeras.synth import phantoms as synth

SHAPE = (16, 16, 12)


def _rewrite(path, transform):
    image = nib.load(path)
    data = transform(np.asarray(image.dataobj).astype(np.float32))
    nib.save(nib.Nifti1Image(data, image.affine), path)  # float32 on disk so NaN survives


def _case_file(root, case_id, suffix):
    return os.path.join(root, case_id, f"{case_id}_{suffix}.nii.gz")


@pytest.fixture()
def bad_dataset(tmp_path):
    """One brats2021 case per bad input (case 0 stays clean)."""
    root = str(tmp_path / "bad")
    synth.write_dataset(root, cases=9, shape=SHAPE, layout="brats2021")
    ids = [f"BraTS2021_{i:05d}" for i in range(9)]
    os.remove(_case_file(root, ids[1], "t1ce"))
    os.remove(_case_file(root, ids[2], "seg"))
    shutil.copy(_case_file(root, ids[3], "seg"), os.path.join(root, ids[3], f"{ids[3]}_seg_v2.nii.gz"))
    with open(_case_file(root, ids[4], "flair"), "rb") as handle:
        raw = handle.read()
    with open(_case_file(root, ids[4], "flair"), "wb") as handle:
        handle.write(raw[: len(raw) // 2])
    t2 = nib.load(_case_file(root, ids[5], "t2"))
    nib.save(nib.Nifti1Image(np.asarray(t2.dataobj)[:, :, :-1], t2.affine), _case_file(root, ids[5], "t2"))
    t1 = nib.load(_case_file(root, ids[6], "t1"))
    shifted = t1.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj), shifted), _case_file(root, ids[6], "t1"))
    _rewrite(_case_file(root, ids[7], "flair"), lambda a: np.where(a > 0, np.nan, a))
    _rewrite(_case_file(root, ids[8], "seg"), lambda a: np.where(a == 4, 3, a))
    zero = tmp_path / "zero"
    synth.write_dataset(zero, cases=1, shape=SHAPE, layout="brats2021")
    _rewrite(_case_file(zero, "BraTS2021_00000", "t2"), np.zeros_like)
    return root, ids, str(zero)


EXPECTED = {
    1: "missing t1ce file",
    2: "missing label file",
    3: "extra label file",
    4: "cannot read NIfTI",
    5: "shape (16, 16, 11) differs",
    6: "affine differs",
    7: "NaN/Inf voxels",
    8: "label values [3] are not in the brats2020 scheme",
}


def test_each_bad_input_is_named(bad_dataset):
    root, ids, zero = bad_dataset
    _, report = inspect_dataset(root)
    by_id = {case.id: case.problems for case in report.cases}
    assert by_id[ids[0]] == []
    for index, fragment in EXPECTED.items():
        problems = by_id[ids[index]]
        assert len(problems) == 1 and fragment in problems[0], (index, problems)
        assert ids[index] in problems[0]
    _, zero_report = inspect_dataset(zero)
    assert "all zeros" in zero_report.cases[0].problems[0]
    assert "_t2.nii.gz" in zero_report.cases[0].problems[0]


def test_read_case_raises_on_bad_input(bad_dataset):
    root, ids, _ = bad_dataset
    dataset = layouts.discover(root)
    for index in (1, 4, 5, 6, 7, 8):
        with pytest.raises(DataError, match=ids[index]):
            volumes.read_case(dataset.case(ids[index]))


def test_require_clean_stops_or_skips(bad_dataset):
    root, ids, _ = bad_dataset
    dataset, report = inspect_dataset(root)
    with pytest.raises(DataError, match="problem"):
        require_clean(dataset, report)
    cases, skipped = require_clean(dataset, report, skip_bad=True)
    assert [c.id for c in cases] == [ids[0]] and len(skipped) == 8


def test_h5_missing_slice_is_reported(tmp_path):
    folder = synth.write_dataset(tmp_path, cases=1, shape=SHAPE, layout="kaggle-h5")[0]
    os.remove(os.path.join(folder, "volume_1_slice_4.h5"))
    _, report = inspect_dataset(tmp_path)
    assert report.cases[0].problems == ["case volume_1: missing slices [4]"]


def test_cli_inspect_json_schema_and_exit_codes(tmp_path, bad_dataset):
    runner = CliRunner()
    good = tmp_path / "good"
    assert runner.invoke(cli, ["synth", str(good), "--cases", "2", "--shape", "16,16,12",
                               "--layout", "brats2023"]).exit_code == 0
    result = runner.invoke(cli, ["inspect", str(good), "--json"])
    assert result.exit_code == 0
    payload = json.loads(result.output)
    assert payload["layout"] == "brats2023"
    case = payload["cases"][0]
    assert set(case) == {"id", "modalities", "seg", "shape", "spacing", "labels", "problems", "warnings"}
    assert case["warnings"] == []
    assert case["shape"] == [16, 16, 12] and case["spacing"] == [1.0, 1.0, 1.0]
    assert case["labels"] == [0, 1, 2, 3] and set(case["modalities"]) == set(layouts.MODALITIES)

    result = runner.invoke(cli, ["inspect", bad_dataset[0]])
    assert result.exit_code == 1 and "missing t1ce file" in result.output
    result = runner.invoke(cli, ["inspect", str(tmp_path / "empty_dir_absent")])
    assert result.exit_code != 0
    (tmp_path / "empty").mkdir()
    result = runner.invoke(cli, ["inspect", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no BraTS cases" in result.output


def test_cli_synth_refuses_non_empty_dir(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    assert runner.invoke(cli, ["synth", str(out), "--cases", "1", "--shape", "16,16,12"]).exit_code == 0
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*.nii"))
    result = runner.invoke(cli, ["synth", str(out), "--cases", "1", "--shape", "16,16,12", "--seed", "3"])
    assert result.exit_code == 1 and "not empty" in result.output
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*.nii")) == before
    assert runner.invoke(cli, ["synth", str(out), "--shape", "16,16"]).exit_code == 1


def test_remembered_reports_skip_reading_until_a_file_changes(tmp_path, monkeypatch):
    root = tmp_path / "data"
    synth.write_dataset(root, cases=2, shape=(16, 16, 12), layout="brats2021", seed=4)
    cache_dir = tmp_path / "cache"
    _, first = inspect_dataset(root, cache_dir=cache_dir)
    assert first.problems == []

    real_load = volumes.load_nifti
    reads = []
    monkeypatch.setattr(volumes, "load_nifti", lambda path: reads.append(path) or real_load(path))
    _, again = inspect_dataset(root, cache_dir=cache_dir)
    assert reads == []
    assert again.to_dict() == first.to_dict()

    victim = sorted(root.rglob("*_flair.nii.gz"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated: a new size, a new key
    _, changed = inspect_dataset(root, cache_dir=cache_dir)
    assert len(reads) == 5  # only the changed case was read again
    assert any("flair" in p and "cannot read NIfTI" in p for p in changed.problems)


def _with_zooms(path, voxel_mm):
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), volumes.brats_affine(image.shape, voxel_mm)), path)


def test_inputs_unlike_brats_are_named_as_warnings(tmp_path):
    """A head with its 'skull' filling the field of view, and 2 mm voxels: warnings per case and file, exit 0."""
    root = tmp_path / "d"
    synth.write_dataset(root, cases=4, shape=(24, 24, 20), layout="brats2021", seed=1)
    ids = [f"BraTS2021_{i:05d}" for i in range(4)]
    # Case 1: a bright, textured rim ('skull' and scalp) around the brain out to the edge of the
    # field of view, in t1 only. (A constant there would be a tool's background: see case 3.)
    rng = np.random.default_rng(0)
    _rewrite(_case_file(root, ids[1], "t1"), lambda a: np.where(a == 0, rng.uniform(700, 1100, a.shape), a))
    # Case 2: every file at 2 mm.
    for suffix in ("t1", "t1ce", "t2", "flair", "seg"):
        _with_zooms(_case_file(root, ids[2], suffix), 2.0)
    # Case 3: a constant background that is not 0 (a tool's minimum): not a skull.
    _rewrite(_case_file(root, ids[3], "t2"), lambda a: np.where(a == 0, -5.0, a))
    _, report = inspect_dataset(root)
    assert report.problems == []
    warnings = {case.id: case.warnings for case in report.cases}
    assert warnings[ids[0]] == [] and warnings[ids[3]] == []
    [skull] = warnings[ids[1]]
    assert skull.startswith(f"case {ids[1]}: {_case_file(root, ids[1], 't1')}: not skull-stripped? "
                            "its foreground covers 100% of the field of view's border")
    assert skull.endswith("; BraTS models expect skull-stripped, 1 mm isotropic scans co-registered to SRI24 "
                          "(240 x 240 x 155)")
    assert sorted(w.split(": ")[1] for w in warnings[ids[2]]) == sorted(
        _case_file(root, ids[2], m) for m in ("t1", "t1ce", "t2", "flair"))  # the label file is not an input
    assert all(": voxels 2 x 2 x 2 mm, not 1 mm isotropic; BraTS models" in w for w in warnings[ids[2]])

    result = CliRunner().invoke(cli, ["inspect", str(root)])
    assert result.exit_code == 0, result.output
    assert "0 problem(s), 5 warning(s)" in result.output
    assert f"warning: {skull}" in result.output


def test_skull_stripping_heuristic_by_volume_and_border():
    """Foreground above 2500 ml, or on more than half of the border: not skull-stripped (hand-made volumes)."""
    from bratskeras.data.inspection import input_findings

    head = np.zeros((150, 150, 150), np.float32)
    head[5:145, 5:145, 5:145] = 1  # 140^3 voxels = 2744 ml at 1 mm
    assert input_findings(head, (1, 1, 1)) == [
        "not skull-stripped? its foreground is 2744 ml, above any brain's 1000-1800 ml with CSF (limit 2500 ml)"]
    brain = np.zeros((150, 150, 150), np.float32)
    # 120^3 voxels = 1728 ml: a large brain, with texture (a constant would be a tool's background).
    brain[15:135, 15:135, 15:135] = np.random.default_rng(0).uniform(1, 2, (120, 120, 120))
    assert input_findings(brain, (1, 1, 1)) == []
    assert input_findings(brain[:60, :60, :60], (1, 1, 1.0001)) == []  # one octant, away from 3 faces
    # Cut by the field of view on three faces: 60 x 60 of their 75 x 75 voxels, 32 % of the border.
    assert input_findings(brain[:75, :75, :75], (1, 1, 1)) == []
    # Foreground on every border voxel: 1331 ml, but the field of view cuts through it.
    assert input_findings(brain[20:130, 20:130, 20:130], (1, 1, 1)) == [
        "not skull-stripped? its foreground covers 100% of the field of view's border"]
    assert input_findings(brain[10:140, 10:140, 10:140], (1, 1, 0.5)) == ["voxels 1 x 1 x 0.5 mm, not 1 mm isotropic"]


def test_real_scans_have_no_warnings():
    """Real BraTS scans (skull-stripped, 1 mm) in the folder BRATSKERAS_REAL_SCANS names; skipped without one.

    Real scans are never part of the repository: a user points the variable at their own copy.
    """
    real = os.environ.get("BRATSKERAS_REAL_SCANS")
    if not real:
        pytest.skip("BRATSKERAS_REAL_SCANS is not set")
    _, report = inspect_dataset(real)
    assert report.cases and report.problems == [] and report.warnings == []
