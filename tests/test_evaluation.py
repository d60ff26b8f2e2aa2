"""Pairing, BraTS scores of perfect and missing predictions, scheme detection, CSV/JSON, CLI."""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core import labels
from bratskeras.core.errors import DataError
from bratskeras.data import layouts, volumes
from bratskeras.evaluate import scoring as evaluation
from bratskeras.evaluate import voxelwise as metrics
from bratskeras.synth import phantoms as synth

SHAPE = (32, 32, 24)


def copy_labels(dataset, out_dir, scheme=None):
    """Writes each case's reference as <id>.nii.gz (a perfect prediction), optionally relabelled."""
    from bratskeras.core import labels

    os.makedirs(out_dir, exist_ok=True)
    for case in dataset.cases:
        _, seg, properties = volumes.read_case(case)
        volumes.write_label_map(labels.classes_to_labels(seg, scheme or case.label_scheme), properties,
                           os.path.join(out_dir, f"{case.id}.nii.gz"))


@pytest.mark.parametrize("layout", synth.SYNTH_LAYOUTS)
def test_perfect_prediction_scores_dice_1_hd95_0(tmp_path, layout):
    synth.write_dataset(tmp_path / "ref", cases=2, shape=SHAPE, layout=layout)
    copy_labels(layouts.discover(tmp_path / "ref"), tmp_path / "pred")
    result = evaluation.evaluate(tmp_path / "pred", tmp_path / "ref")
    assert result.ok and len(result.rows) == 2
    for row in result.rows:
        for structure in metrics.STRUCTURES:
            assert row[f"dice_{structure}"] == 1.0 and row[f"hd95_{structure}"] == 0.0
            assert row[f"sensitivity_{structure}"] == 1.0 and row[f"specificity_{structure}"] == 1.0
    assert result.summary["dice_wt"] == {"mean": 1.0, "std": 0.0, "median": 1.0, "p25": 1.0, "p75": 1.0, "n": 2}


def test_flat_reference_folder_and_scheme_from_values(tmp_path):
    synth.write_dataset(tmp_path / "ref", cases=2, shape=SHAPE, layout="brats2021")
    dataset = layouts.discover(tmp_path / "ref")
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(dataset.cases[0].seg, flat / f"{dataset.cases[0].id}_seg.nii.gz")
    shutil.copy(dataset.cases[1].seg, flat / f"{dataset.cases[1].id}.nii.gz")
    # Predictions written in the other release's labels still score perfectly.
    copy_labels(dataset, tmp_path / "pred", scheme="brats2023")
    result = evaluation.evaluate(tmp_path / "pred", flat)
    assert result.ok and [r["dice_et"] for r in result.rows] == [1.0, 1.0]


def test_missing_and_extra_predictions_are_reported(tmp_path):
    synth.write_dataset(tmp_path / "ref", cases=3, shape=SHAPE, layout="brats2021")
    dataset = layouts.discover(tmp_path / "ref")
    copy_labels(dataset, tmp_path / "pred")
    os.remove(tmp_path / "pred" / f"{dataset.cases[1].id}.nii.gz")
    shutil.copy(tmp_path / "pred" / f"{dataset.cases[0].id}.nii.gz", tmp_path / "pred" / "stranger.nii.gz")
    result = evaluation.evaluate(tmp_path / "pred", tmp_path / "ref")
    assert not result.ok
    assert result.missing == [dataset.cases[1].id]
    assert result.extra == [str(tmp_path / "pred" / "stranger.nii.gz")]
    missing_row = next(r for r in result.rows if r["id"] == dataset.cases[1].id)
    # Scored as an empty prediction: the phantom has every structure.
    assert missing_row["status"] == "missing"
    assert missing_row["dice_wt"] == 0.0 and missing_row["hd95_wt"] == metrics.EMPTY_HD95
    assert result.summary["dice_wt"]["n"] == 3


def test_bad_prediction_values_and_grid_fail_by_file(tmp_path):
    synth.write_dataset(tmp_path / "ref", cases=2, shape=SHAPE, layout="brats2021")
    dataset = layouts.discover(tmp_path / "ref")
    copy_labels(dataset, tmp_path / "pred")
    first = tmp_path / "pred" / f"{dataset.cases[0].id}.nii.gz"
    image = nib.load(first)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, image.affine), first)
    second = tmp_path / "pred" / f"{dataset.cases[1].id}.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), image.affine), second)
    result = evaluation.evaluate(tmp_path / "pred", tmp_path / "ref")
    assert len(result.failed) == 2
    # Unreadable predictions are scored as empty ones, never left out of the summary.
    assert [row["status"] for row in result.rows] == ["unreadable", "unreadable"]
    assert str(first) in result.failed[0] and "[7]" in result.failed[0]
    assert str(second) in result.failed[1] and "shape" in result.failed[1]


def test_detect_scheme():
    assert labels.detect_scheme(np.array([0, 1, 4]), None, "f") == "brats2020"
    assert labels.detect_scheme(np.array([0, 2, 3]), "brats2020", "f") == "brats2023"
    assert labels.detect_scheme(np.array([0, 2]), "brats2023", "f") == "brats2023"
    with pytest.raises(DataError, match="both 3 and 4"):
        labels.detect_scheme(np.array([3, 4]), None, "f")


def test_no_references_is_an_error(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    with pytest.raises(DataError, match="no reference label files"):
        evaluation.evaluate(tmp_path / "pred", tmp_path / "ref")


def test_cli_evaluate_csv_json_and_papers(tmp_path):
    synth.write_dataset(tmp_path / "ref", cases=2, shape=SHAPE, layout="brats2020")
    dataset = layouts.discover(tmp_path / "ref")
    copy_labels(dataset, tmp_path / "pred")
    runner = CliRunner()
    out = tmp_path / "metrics.csv"
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["cases"][0]["id"] == dataset.cases[0].id and document["cases"][0]["dice_tc"] == 1.0
    assert set(document["summary"]["hd95_et"]) == {"mean", "std", "median", "p25", "p75", "n"}
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,status,dice_wt,dice_tc,dice_et") and len(lines) == 3
    again = runner.invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(out)])
    assert again.exit_code == 1 and "exists" in again.output
    papers = runner.invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--compare-papers"])
    assert "0.8026" in papers.output and "0.71" in papers.output and "papers' numbers" in papers.output
    os.remove(tmp_path / "pred" / f"{dataset.cases[0].id}.nii.gz")
    missing = runner.invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref")])
    assert missing.exit_code == 1 and dataset.cases[0].id in missing.output
