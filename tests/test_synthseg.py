"""SynthSeg-style heads (bratskeras.synthseg) and synth's --kind synthseg."""

from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras import layouts, synthseg
from bratskeras.cli import cli as cli_main

VOXEL = 4.0  # a whole head at 4 mm: 60 x 60 x 39 voxels, well under a second


def _only(kind, **options):
    """DEFAULT with one lesion of tumour type `kind`."""
    weights = tuple(float(name == kind) for name in synthseg.TUMOUR_TYPES)
    tumours = synthseg.Tumours(type_weights=weights, count_weights=(1.0,), whole_ml=(60.0, 80.0), **options)
    return tuple(tumours if t.name == "tumours" else t for t in synthseg.DEFAULT)


def _make(seed, transforms=synthseg.DEFAULT):
    return synthseg.make_case(seed=seed, transforms=transforms, voxel_mm=VOXEL)


def test_one_seed_one_head_and_whole_brain_grid():
    images, classes = _make((3, 1))
    again, again_classes = _make((3, 1))
    other, _ = _make((3, 2))
    assert classes.shape == (60, 60, 39) and set(images) == set(layouts.MODALITIES)
    assert np.array_equal(classes, again_classes)
    assert all(np.array_equal(images[m], again[m]) for m in images)
    assert not np.array_equal(images["t1"], other["t1"])
    assert all(images[m].dtype == np.int16 for m in images)


def test_named_streams_a_step_left_out_changes_no_other_steps_draws():
    """Each transform draws from its own stream: without the vessels the labels differ only where vessels were."""
    full = synthseg.Head(shape=(60, 60, 39), voxel_mm=VOXEL)
    without = synthseg.Head(shape=(60, 60, 39), voxel_mm=VOXEL)
    for transform in synthseg.DEFAULT[:6]:  # up to and with Vessels
        transform(full, synthseg.stream(5, transform.name))
        if transform.name != "vessels":
            transform(without, synthseg.stream(5, transform.name))
    differ = full.labels != without.labels
    assert differ.any() and (full.labels[differ] == synthseg.VESSEL).all()


@pytest.mark.parametrize("kind, present, absent", [
    ("glioblastoma", {1, 2, 3}, set()),
    ("low_grade", {1, 2}, {3}),  # non-enhancing: no ET at all
    ("cystic", {1, 3}, set()),
])
def test_tumour_types_give_their_brats_classes(kind, present, absent):
    for seed in range(3):
        _, classes = _make(seed, _only(kind))
        found = set(np.unique(classes).tolist()) - {0}
        assert present <= found and not absent & found, (seed, found)


def test_low_grade_is_bright_on_flair_and_t2_without_enhancement():
    images, classes = _make(4, _only("low_grade"))
    brain = images["t1"] > 0
    normal = brain & (classes == 0)
    tumour = classes > 0
    for modality in ("flair", "t2"):
        assert np.median(images[modality][tumour]) > np.percentile(images[modality][normal], 75)
    # no enhancement: the tumour's T1c / T1 ratio is that of normal tissue
    ratio = images["t1ce"].astype(float) / np.maximum(images["t1"], 1)
    assert np.median(ratio[tumour]) < 1.3 * np.median(ratio[normal])


def test_contrasts_keep_what_defines_the_brats_classes_under_random_contrasts():
    """Even with fully random healthy contrasts: ET is the brightest T1c tissue, oedema bright on FLAIR."""
    transforms = tuple(replace(t, random_share=1.0) if t.name == "contrasts" else
                       replace(t, noise=(0.0, 0.0), thick_share=0.0, blur_mm=(0.0, 0.0), bias=(0.0, 0.0))
                       if t.name == "scanner" else t for t in _only("glioblastoma"))
    for seed in range(3):
        images, classes = _make(seed, transforms)
        normal = (images["t1"] > 0) & (classes == 0)
        assert np.median(images["t1ce"][classes == 3]) > np.percentile(images["t1ce"][normal], 90)
        assert np.median(images["flair"][classes == 2]) > np.median(images["flair"][normal])
        assert np.median(images["t1"][classes == 1]) < np.median(images["t1"][normal])


def test_skull_strip_mask_and_background():
    for seed in range(4):
        images, classes = _make(seed)
        mask = images["flair"] > 0
        assert all(((images[m] > 0) == mask).all() for m in images)  # one mask, every modality
        assert (classes[~mask] == 0).all() and mask[classes > 0].all()
        brain_ml = mask.sum() * VOXEL**3 / 1000
        assert 800 < brain_ml < 2600, brain_ml


def test_multifocal_heads_have_several_tumour_components():
    from scipy import ndimage

    tumours = synthseg.Tumours(count_weights=(0.0, 0.0, 1.0), whole_ml=(30.0, 40.0), mass_effect=0.0)
    transforms = tuple(tumours if t.name == "tumours" else t for t in synthseg.DEFAULT)
    counts = [ndimage.label(_make(seed, transforms)[1] > 0)[1] for seed in range(3)]
    assert max(counts) >= 2, counts


def test_transform_options_are_checked():
    with pytest.raises(ValueError, match="type_weights"):
        synthseg.Tumours(type_weights=(1.0,))
    with pytest.raises(ValueError, match="scale"):
        synthseg.Pose(scale=(1.2, 0.9))
    with pytest.raises(ValueError, match="unknown generator"):
        synthseg.make_case(seed=0, transforms="nope", voxel_mm=VOXEL)


def test_synth_cli_writes_synthseg_heads(tmp_path):
    out = tmp_path / "heads"
    result = CliRunner().invoke(cli_main, ["synth", str(out), "--kind", "synthseg", "--voxel-size", "4",
                                           "--cases", "2", "--settings", "heldout"])
    assert result.exit_code == 0, result.output
    cases = layouts.discover(str(out)).cases
    assert len(cases) == 2
    import nibabel as nib

    image = nib.load(cases[0].modalities["flair"])
    assert image.shape == (60, 60, 39) and np.allclose(image.header.get_zooms()[:3], 4.0)
