"""A 2023-2025 task end to end, the way a user runs it: synth -> fit --task -> predict -> evaluate --lesion-wise."""

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core import labels


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("target, predict_options", [
    ("classes", ()),
    # nnU-Net's region training of the task (WT, TC, ET, RC), cleaned per region on the way out.
    pytest.param("regions", ("--postprocess", "min_component:voxels=5", "--postprocess", "et_to_ncr:voxels=10"),
                 marks=pytest.mark.slow),  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
])
def test_gli_task_from_synth_to_lesion_wise_scores(tmp_path, target, predict_options):
    data, run_dir, predictions = tmp_path / "data", tmp_path / "run", tmp_path / "pred"
    result = run("synth", data, "--task", "gli", "--cases", 3, "--shape", "24,24,16", "--seed", 3)
    assert result.exit_code == 0, result.output
    result = run("fit", data, "--task", "gli", "--target", target, "--out", run_dir, "--model-arg", "base_filters=4",
                 "--epochs", 1, "--steps-per-epoch", 1, "--batch-size", 2, "--patch-size", "16,16,16",
                 "--precision", "float32", "--quiet")
    assert result.exit_code == 0, result.output
    model_meta = json.loads((run_dir / "config.json").read_text())
    assert model_meta["task"] == "gli" and model_meta["target"] == target
    result = run("predict", run_dir, data, predictions, *predict_options)
    assert result.exit_code == 0, result.output
    written = sorted(predictions.glob("*.nii.gz"))
    assert len(written) == 3
    for path in written:  # task label values on disk, the reference's grid
        image = nib.load(path)
        assert image.shape == (24, 24, 16)
        assert set(np.unique(np.asarray(image.dataobj))) <= set(labels.SCHEMES["gli"].labels)
    result = run("evaluate", predictions, data, "--lesion-wise", "--task", "gli", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["cases"]) == 3
    for case in payload["cases"]:  # every official gli group, RC included, scored per case
        assert set(case["lesion_wise"]) == {name for name, _ in labels.SCHEMES["gli"].lesion_groups}
        assert case["lesion_wise"]["wt"]["tp"] + case["lesion_wise"]["wt"]["fn"] >= 1  # the phantom has a tumor


def test_predict_refuses_a_step_the_model_s_task_cannot_take(tmp_path):
    """MEN-RT models output GTV alone: et_to_ncr is refused in one line before anything is loaded or written."""
    run_dir, data = tmp_path / "run", tmp_path / "data"
    run_dir.mkdir()
    data.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"preset": "lightweight2020", "model": "lightweight-unet",
                                                     "target": "classes", "task": "menrt"}))
    result = run("predict", run_dir, data, tmp_path / "pred", "--postprocess", "et_to_ncr:voxels=10")
    assert result.exit_code != 0
    assert "step 'et_to_ncr' needs ET and NCR classes; the menrt scheme has GTV" in result.output
    assert not (tmp_path / "pred").exists()
