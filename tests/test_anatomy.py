"""Phantoms on the MNI152 anatomy (bratskeras.synth.anatomy) and synth's --kind anatomy."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras.cli import cli as cli_main
from bratskeras.core.errors import ConfigError
from bratskeras.data import inspection, layouts, volumes
from bratskeras.synth import anatomy
from bratskeras.synth import phantoms as synth

WINDOW = (64, 64, 48)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def case():
    return anatomy.make_case(WINDOW, seed=(0, 3))


def test_template_tissue_maps_are_probabilities():
    template = anatomy.load_template()
    csf, gm, wm, brain = template
    assert template.shape == (4, 197, 233, 189)
    assert np.allclose((csf + gm + wm)[brain > 0], 1.0, atol=1e-5) and (csf + gm + wm)[brain == 0].max() == 0
    assert 900 < gm.sum() / 1000 < 1100 and 600 < wm.sum() / 1000 < 750  # ml, MNI152 2009a
    assert wm.max() == pytest.approx(1.0, abs=0.01) and csf[brain > 0].mean() > 0.05


def test_make_case_is_deterministic_per_seed(case):
    images, classes = case
    again_images, again_classes = anatomy.make_case(WINDOW, seed=(0, 3))
    other_images, _ = anatomy.make_case(WINDOW, seed=(0, 4))
    assert np.array_equal(classes, again_classes)
    assert all(np.array_equal(images[m], again_images[m]) for m in layouts.MODALITIES)
    assert not np.array_equal(images["flair"], other_images["flair"])


def test_tumor_classes_and_contrasts_follow_real_mri(case):
    images, classes = case
    assert set(np.unique(classes)) <= {0, 1, 2, 3} and {2, 3} <= set(np.unique(classes))
    brain = images["t1"] > 0
    assert all(images[m].dtype == np.int16 and images[m][~brain].max() == 0 for m in layouts.MODALITIES)
    assert (classes[~brain] == 0).all()  # tumor only inside the skull-stripped brain
    normal = brain & (classes == 0)

    def mean(modality, where):
        return images[modality][where].mean()

    assert mean("t1ce", classes == 3) > 1.3 * mean("t1ce", normal)  # ET enhances
    assert mean("flair", classes == 2) > 1.3 * mean("flair", normal)  # edema bright on FLAIR
    assert mean("t2", classes == 2) > mean("t2", normal)  # and on T2
    assert mean("t1", classes == 2) < mean("t1", normal)  # and dark on T1
    # The core sits inside the whole tumor, the edema around it.
    core = np.isin(classes, (1, 3))
    assert np.abs(np.argwhere(core).mean(0) - np.argwhere(classes > 0).mean(0)).max() < 12


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_whole_tumor_volumes_span_brats_range():
    """Whole heads at 1 mm: the drawn WT volume (10-250 ml) is met; the brain is patient-sized."""
    images, classes = anatomy.make_case(anatomy.BRATS_SHAPE, seed=(5, 0))
    assert images["t1"].shape == anatomy.BRATS_SHAPE
    whole_ml = (classes > 0).sum() / 1000
    brain_ml = (images["t1"] > 0).sum() / 1000
    assert 10 <= whole_ml <= 250 and 1000 < brain_ml < 1900
    low = anatomy.AnatomySettings(whole_tumor_ml=(10.0, 10.5))
    high = anatomy.AnatomySettings(whole_tumor_ml=(240.0, 250.0))
    small = (anatomy.make_case((112, 112, 96), seed=1, settings=low)[1] > 0).sum() / 1000
    large = (anatomy.make_case((112, 112, 96), seed=1, settings=high)[1] > 0).sum() / 1000
    assert small == pytest.approx(10.25, abs=0.3) and large > 20 * small


def test_edema_follows_white_matter():
    """The edema's potential is stretched where white matter is sparse: grey matter is spared."""
    rng = np.random.default_rng(0)
    points = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) - n / 2 for n in (40, 40, 40)], indexing="ij"))
    wm = np.where(points[0] > 0, 1.0, 0.0).astype(np.float32)  # white matter on one side only
    tissue = np.stack([np.zeros_like(wm), 1 - wm, wm, np.ones_like(wm)])
    settings = anatomy.AnatomySettings(whole_tumor_ml=(12.0, 12.0), core_fraction=(0.2, 0.2))
    classes = anatomy._tumor(points, tissue, np.ones(wm.shape, bool), rng, settings, voxel_mm=1.0)
    edema = classes == 2
    assert edema[wm > 0].sum() > 5 * edema[wm == 0].sum()


def test_one_seed_is_one_head_at_any_voxel_size():
    """A 2 mm case is the 1 mm case of the same seed on a coarser grid: same tumor (ml), same anatomy."""
    fine_images, fine = anatomy.make_case((96, 96, 80), seed=(0, 3))
    coarse_images, coarse = anatomy.make_case((48, 48, 40), seed=(0, 3), voxel_mm=2.0)
    assert coarse.shape == (48, 48, 40)
    assert 8 * (coarse > 0).sum() == pytest.approx((fine > 0).sum(), rel=0.03)
    assert 8 * (coarse == 3).sum() == pytest.approx((fine == 3).sum(), rel=0.1)
    blocks = fine[::2, ::2, ::2]  # the 1 mm voxel in each 2 x 2 x 2 block's corner, 0.5 mm off the 2 mm centre
    for region in ((1, 2, 3), (1, 3)):
        a, b = np.isin(blocks, region), np.isin(coarse, region)
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85
    brain = (fine_images["t1"][::2, ::2, ::2] > 0) & (coarse_images["t1"] > 0)
    fine_t1, coarse_t1 = fine_images["t1"][::2, ::2, ::2][brain], coarse_images["t1"][brain]
    assert np.corrcoef(fine_t1, coarse_t1)[0, 1] > 0.85
    assert coarse_t1.mean() == pytest.approx(fine_t1.mean(), rel=0.05)
    with pytest.raises(ValueError, match="voxel size"):
        anatomy.make_case((16, 16, 16), seed=0, voxel_mm=8.0)


def test_anatomy_demo_heads_cover_bratss_field_of_view():
    from bratskeras.training import demo

    spec = demo.DEMOS["anatomy"]
    assert spec.shape == anatomy.grid_shape(spec.voxel_mm) and spec.heldout_shape == anatomy.BRATS_SHAPE


def test_synth_cli_writes_2mm_heads_on_bratss_field_of_view(tmp_path):
    result = CliRunner().invoke(cli_main, ["synth", str(tmp_path / "d"), "--kind", "anatomy", "--cases", "1",
                                           "--voxel-size", "2"])
    assert result.exit_code == 0, result.output
    dataset, report = inspection.inspect_dataset(tmp_path / "d")
    assert len(dataset.cases) == 1 and not report.problems
    image, seg, properties = volumes.read_case(dataset.cases[0])
    assert image.shape[:3] == anatomy.grid_shape(2.0) == (120, 120, 78)
    assert np.allclose(np.abs(np.diag(properties["affine"])[:3]), 2.0)
    assert 10 <= (seg > 0).sum() * 8 / 1000 <= 250
    refused = CliRunner().invoke(cli_main, ["synth", str(tmp_path / "s"), "--voxel-size", "2"])
    assert refused.exit_code != 0 and "anatomy heads" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_synth_writes_anatomy_cases_in_every_layout(tmp_path):
    for layout in synth.SYNTH_LAYOUTS:
        root = tmp_path / layout
        synth.write_dataset(root, cases=1, shape=(40, 40, 32), layout=layout, seed=7, kind="anatomy")
        dataset = layouts.discover(root)
        assert len(dataset.cases) == 1 and dataset.layout.startswith(layout.split("-")[0][:5])
        image, seg, _ = volumes.read_case(dataset.cases[0])
        assert image.shape[:3] == (40, 40, 32) and set(np.unique(seg)) <= {0, 1, 2, 3}


def test_heldout_tool_writes_clean_cases_with_other_settings(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_heldout.py"), str(tmp_path / "h"),
                             "--cases", "2", "--shape", "48,48,40"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-2000:]
    dataset, report = inspection.inspect_dataset(tmp_path / "h")
    assert len(dataset.cases) == 2 and not report.problems
    assert anatomy.HELDOUT != anatomy.DEFAULT
    # Same seed, other ranges: other cases.
    default = anatomy.make_case((48, 48, 40), seed=(2000, 0))[0]["flair"]
    heldout = anatomy.make_case((48, 48, 40), seed=(2000, 0), settings=anatomy.HELDOUT)[0]["flair"]
    assert not np.array_equal(default, heldout)


def test_missing_nilearn_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "bratskeras\[anatomy\]"'):
        synth.write_dataset(tmp_path / "out", cases=1, shape=(32, 32, 24), kind="anatomy")
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli_main, ["synth", str(tmp_path / "cli"), "--kind", "anatomy", "--cases", "1",
                                           "--shape", "32,32,24"])
    assert result.exit_code != 0 and 'pip install "bratskeras[anatomy]"' in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "cli").exists()


def test_synth_cli_kind_anatomy(tmp_path):
    result = CliRunner().invoke(cli_main, ["synth", str(tmp_path / "d"), "--kind", "anatomy", "--cases", "1",
                                           "--shape", "32,32,24", "--settings", "heldout", "--layout", "brats2021"])
    assert result.exit_code == 0, result.output
    assert len(layouts.discover(tmp_path / "d").cases) == 1
    refused = CliRunner().invoke(cli_main, ["synth", str(tmp_path / "t"), "--kind", "anatomy", "--task", "ped"])
    assert refused.exit_code != 0 and "anatomy phantoms have the classic" in refused.output
