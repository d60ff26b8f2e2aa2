"""tools/error_analysis.py: the error figures the generator's steps are drawn from, on cases whose errors we made."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
from tool_scripts import load_tool

from bratskeras.data import layouts
from bratskeras.synth import phantoms as synth

SHAPE = (40, 40, 32)


def _tool():
    return load_tool("error_analysis")


@pytest.fixture(scope="module")
def made_errors(tmp_path_factory):
    """Two brats2020 phantoms; predictions: case 1 misses the oedema's outer half, case 2 adds ET outside the tumour."""
    root = tmp_path_factory.mktemp("errors")
    data, predictions = str(root / "data"), root / "pred"
    synth.write_dataset(data, cases=2, shape=SHAPE, layout="brats2020", seed=3)
    predictions.mkdir()
    cases = layouts.discover(data).cases
    made = {}
    for index, case in enumerate(cases):
        seg = nib.load(case.seg)
        labels = np.asarray(seg.dataobj).astype(np.uint8)  # brats2020 values: 1 NCR, 2 ED, 4 ET
        predicted = labels.copy()
        if index == 0:
            oedema = np.argwhere(labels == 2)
            dropped = oedema[oedema[:, 0] > np.median(oedema[:, 0])]
            predicted[tuple(dropped.T)] = 0
            made["missed"] = len(dropped)
        else:
            outside = np.argwhere((labels == 0) & (np.asarray(nib.load(case.modalities["flair"]).dataobj) != 0))[:25]
            predicted[tuple(outside.T)] = 4
            made["false_et"] = len(outside)
        nib.save(nib.Nifti1Image(predicted, seg.affine), str(predictions / f"{case.id}.nii.gz"))
    return {"data": data, "predictions": str(predictions), "made": made, "ids": [c.id for c in cases]}


def test_missed_oedema_is_counted_and_precision_stays_whole(made_errors, capsys):
    assert _tool().main([made_errors["predictions"], made_errors["data"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    first, second = report["cases"]
    assert [first["id"], second["id"]] == made_errors["ids"]
    assert first["missed_oedema_voxels"] == made_errors["made"]["missed"] > 0
    assert first["wt_precision"] == 1.0 and first["wt_recall"] < 1.0
    assert first["false_et_outside_tumour"] == first["false_et_inside_tumour"] == 0
    assert first["missed_oedema_flair"] is not None and first["found_oedema_flair"] is not None
    assert second["false_et_outside_tumour"] == made_errors["made"]["false_et"]
    assert second["wt_recall"] == 1.0 and second["wt_precision"] < 1.0
    assert second["missed_oedema_voxels"] == 0 and second["missed_oedema_flair"] is None
    assert report["medians"]["wt_recall"] == pytest.approx(np.median([first["wt_recall"], 1.0]), abs=1e-3)


def test_a_case_without_prediction_is_named_and_fails(made_errors, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    first = made_errors["ids"][0]
    os.symlink(os.path.join(made_errors["predictions"], f"{first}.nii.gz"), partial / f"{first}.nii.gz")
    assert _tool().main([str(partial), made_errors["data"]]) == 1
    captured = capsys.readouterr()
    assert f"error: {made_errors['ids'][1]}: no prediction in {partial}" in captured.err
    assert captured.out.startswith(first)
