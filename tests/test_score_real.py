"""tools/score_real.py: predict + evaluate on labelled folders; its figures are `bratskeras evaluate`'s."""

import csv
import json
import os
import subprocess
import sys

import keras
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from tool_scripts import load_tool

from bratskeras.cli import cli
from bratskeras.data import layouts
from bratskeras.models import build_model
from bratskeras.synth import phantoms as synth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "score_real.py")
SHAPE = (32, 32, 24)


def _tool():
    return load_tool("score_real")


def _snapshot(folder):
    """{path: (size, mtime_ns)} of every file under `folder`."""
    return {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(folder) for f in files}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Three brats2023 phantoms (the last one's reference without ET), a tiny built model, the tool's --json run."""
    root = tmp_path_factory.mktemp("score_real")
    data = str(root / "data")
    synth.write_dataset(data, cases=3, shape=SHAPE, layout="brats2023", seed=1)
    cases = layouts.discover(data).cases
    seg = nib.load(cases[2].seg)
    labels = np.asarray(seg.dataobj)
    nib.save(nib.Nifti1Image(np.where(labels == 3, 1, labels).astype(np.uint8), seg.affine), cases[2].seg)
    model = str(root / "tiny.keras")
    keras.utils.set_random_seed(0)
    build_model("lightweight-unet", base_filters=4).save(model)
    before = _snapshot(data)
    command = [sys.executable, TOOL, model, data, "--json", "--out", str(root / "scores.csv"),
               "--keep-predictions", str(root / "kept"), "--overlap", "0.25"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "data": data, "model": model, "cases": cases, "report": json.loads(result.stdout),
            "before": before, "predictions": str(root / "kept" / "1-data")}


def test_figures_are_evaluates_and_voxels_are_the_files(scored):
    report, data, cases = scored["report"], scored["data"], scored["cases"]
    assert [f["folder"] for f in report["folders"]] == [data]
    assert report["folders"][0]["cases"] == [c.id for c in cases]
    assert report["predict_options"] == ["--overlap", "0.25"]
    # The same code path as `bratskeras predict`: the same options give the same label maps.
    runner = CliRunner()
    own = str(scored["root"] / "own")
    assert runner.invoke(cli, ["predict", scored["model"], data, own, "--overlap", "0.25"]).exit_code == 0
    for case in cases:
        kept = nib.load(os.path.join(scored["predictions"], f"{case.id}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(kept.dataobj),
                                      np.asarray(nib.load(os.path.join(own, f"{case.id}.nii.gz")).dataobj))
    evaluated = runner.invoke(cli, ["evaluate", own, data, "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    expected = {row["id"]: row for row in json.loads(evaluated.stdout)["cases"]}
    for row, case in zip(report["cases"], cases):
        assert row["id"] == case.id and row["folder"] == data and row["status"] == "ok"
        for key in ("dice_wt", "dice_tc", "dice_et", "hd95_wt"):
            assert row[key] == expected[case.id][key], (case.id, key)
        reference = np.asarray(nib.load(case.seg).dataobj)
        prediction = np.asarray(nib.load(os.path.join(own, f"{case.id}.nii.gz")).dataobj)
        assert row["reference_et_voxels"] == int((reference == 3).sum())  # brats2023: ET is label 3
        assert row["predicted_et_voxels"] == int((prediction == 3).sum())
    assert [row["reference_has_et"] for row in report["cases"]] == [True, True, False]

    rows = report["cases"]
    summary = report["summary"]
    assert (summary["cases"], summary["enhancing_cases"], summary["non_enhancing_cases"]) == (3, 2, 1)
    assert summary["mean_dice_wt"] == pytest.approx(np.mean([expected[r["id"]]["dice_wt"] for r in rows]), abs=1e-12)
    assert summary["mean_dice_tc"] == pytest.approx(np.mean([expected[r["id"]]["dice_tc"] for r in rows]), abs=1e-12)
    assert summary["mean_dice_et_enhancing"] == pytest.approx(
        np.mean([expected[r["id"]]["dice_et"] for r in rows[:2]]), abs=1e-12)
    assert summary["max_predicted_et_non_enhancing"] == rows[2]["predicted_et_voxels"]
    met = {g["key"]: g["met"] for g in report["goals"]}
    assert met == {"mean_dice_wt": summary["mean_dice_wt"] >= 0.80, "mean_dice_tc": summary["mean_dice_tc"] >= 0.65,
                   "mean_dice_et_enhancing": summary["mean_dice_et_enhancing"] >= 0.65,
                   "max_predicted_et_non_enhancing": summary["max_predicted_et_non_enhancing"] < 1000}

    with open(scored["root"] / "scores.csv") as stream:
        written = list(csv.DictReader(stream))
    assert [r["id"] for r in written] == [c.id for c in cases]
    assert [float(r["dice_wt"]) for r in written] == pytest.approx([r["dice_wt"] for r in rows], rel=1e-5)
    # The references' folder was only read.
    assert _snapshot(data) == scored["before"]


def test_text_report_names_what_was_scored_and_the_goals(scored):
    report = scored["report"]
    text = _tool().format_report(report).splitlines()
    ids = [c.id for c in scored["cases"]]
    assert f"scored: {scored['data']}: 3 case(s): {', '.join(ids)}" in text
    assert any(line.startswith("references: the label files in each DATA_DIR as they are") for line in text)
    case_lines = [line for line in text if line.split(" ")[0] in ids]
    assert len(case_lines) == 3 and case_lines[2].split()[-2:] == ["no", "ok"]
    mean_wt = report["summary"]["mean_dice_wt"]
    assert f"mean WT Dice >= 0.8: {mean_wt:.3f} ({'met' if mean_wt >= 0.8 else 'not met'})" in text


def test_summary_and_goals_by_hand():
    tool = _tool()
    rows = [{"dice_wt": 0.9, "dice_tc": 0.7, "dice_et": 0.8, "predicted_et_voxels": 10, "reference_has_et": True},
            {"dice_wt": 0.8, "dice_tc": 0.5, "dice_et": 0.4, "predicted_et_voxels": 5, "reference_has_et": True},
            {"dice_wt": 0.6, "dice_tc": 0.6, "dice_et": 0.0, "predicted_et_voxels": 1200, "reference_has_et": False}]
    summary = tool.summarize(rows)
    assert summary["mean_dice_wt"] == pytest.approx(2.3 / 3) and summary["mean_dice_tc"] == pytest.approx(0.6)
    assert summary["mean_dice_et_enhancing"] == pytest.approx(0.6) and summary["max_predicted_et_non_enhancing"] == 1200
    assert [g["met"] for g in tool.goals(summary)] == [False, False, False, False]
    only_enhancing = tool.summarize(rows[:1])
    assert [g["met"] for g in tool.goals(only_enhancing)] == [True, True, True, None]


def test_outputs_inside_a_data_dir_are_refused_before_predicting(scored, capsys):
    data = scored["data"]
    status = _tool().main([scored["model"], data, "--out", os.path.join(data, "scores.csv")])
    assert status == 1
    assert f"scores.csv: inside DATA_DIR {data}, which is only read" in capsys.readouterr().err
    assert _snapshot(data) == scored["before"]


def test_a_folder_without_label_files_stops_before_predicting(tmp_path, scored, capsys):
    synth.write_dataset(tmp_path / "unlabelled", cases=1, shape=SHAPE, layout="brats2023", seed=4)
    for case in layouts.discover(tmp_path / "unlabelled").cases:
        os.remove(case.seg)
    status = _tool().main([scored["model"], str(tmp_path / "unlabelled"), "--keep-predictions", str(tmp_path / "p")])
    assert status == 1 and "no labelled cases" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
