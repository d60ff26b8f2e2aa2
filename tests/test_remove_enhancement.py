"""tools/remove_enhancement.py: real scans' tumours made non-enhancing (T1c from T1 inside the tumour, ET -> core)."""

import filecmp
import os

import nibabel as nib
import numpy as np
import pytest
from tool_scripts import load_tool

from bratskeras.data import layouts
from bratskeras.synth import phantoms as synth

SHAPE = (48, 48, 40)


def _tool():
    return load_tool("remove_enhancement")


def _array(path):
    return np.asarray(nib.load(path).dataobj)


@pytest.fixture(scope="module", params=["brats2017", "brats2023"])
def written(request, tmp_path_factory):
    """Two phantoms of a layout, and the tool's run over them (exit status, stdout)."""
    root = tmp_path_factory.mktemp(request.param)
    data, out = str(root / "data"), str(root / "out")
    synth.write_dataset(data, cases=2, shape=SHAPE, layout=request.param, seed=3)
    return {"data": data, "out": out, "status": _tool().main([data, out]), "cases": layouts.discover(data).cases}


def test_only_t1c_inside_the_tumour_and_the_et_label_change(written):
    assert written["status"] == 0
    for case in written["cases"]:
        copy = layouts.discover(os.path.join(written["out"], case.id)).cases[0]
        for modality in ("flair", "t1", "t2"):
            assert filecmp.cmp(case.modalities[modality], copy.modalities[modality], shallow=False)
        old_labels, new_labels = _array(case.seg), _array(copy.seg)
        et_value = 4 if case.layout == "brats2017" else 3
        assert (old_labels == et_value).any() and not (new_labels == et_value).any()
        assert np.array_equal(old_labels > 0, new_labels > 0)  # WT unchanged
        assert np.array_equal(new_labels[old_labels == et_value], np.ones((old_labels == et_value).sum()))
        old_t1c, new_t1c = _array(case.modalities["t1ce"]), _array(copy.modalities["t1ce"])
        changed = old_t1c != new_t1c
        assert changed.any() and not (changed & (old_labels == 0) & ~_grown(old_labels > 0, 2)).any()
        # The phantoms' ET is bright on T1c; without uptake it is no brighter than the core around it.
        et = old_labels == et_value
        assert new_t1c[et].mean() < old_t1c[et].mean()


def _grown(mask, voxels):
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=voxels)


def test_the_replacement_is_t1_mapped_monotonically():
    tool = _tool()
    rng = np.random.default_rng(0)
    t1 = rng.uniform(100, 900, (20, 20, 20)).astype(np.float32)
    t1c = 2.0 * t1 + 50
    tumour = np.zeros(t1.shape, bool)
    tumour[8:12, 8:12, 8:12] = True
    t1c[tumour] = 5000.0  # uptake
    new, zone = tool.remove_uptake(t1, t1c, tumour, margin=1)
    assert zone[tumour].all() and not zone[0, 0, 0]
    np.testing.assert_allclose(new[zone], 2.0 * t1[zone] + 50, rtol=0.05)  # the healthy brain's own T1 -> T1c map
    assert np.array_equal(new[~zone], t1c[~zone])


def test_existing_case_folders_and_outputs_inside_the_data_are_refused(written, capsys):
    tool = _tool()
    before = {p: os.stat(os.path.join(written["out"], p)).st_mtime_ns for p in os.listdir(written["out"])}
    assert tool.main([written["data"], written["out"]]) == 1
    assert "exists" in capsys.readouterr().err
    assert before == {p: os.stat(os.path.join(written["out"], p)).st_mtime_ns for p in os.listdir(written["out"])}
    assert tool.main([written["data"], os.path.join(written["data"], "proxy")]) == 1
    assert "inside" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(written["data"], "proxy"))


def test_a_scheme_without_enhancing_tumour_is_refused():
    with pytest.raises(ValueError, match="menrt"):
        _tool().without_et(np.zeros((2, 2, 2), np.uint8), "menrt")
