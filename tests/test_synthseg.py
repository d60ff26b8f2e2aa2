"""SynthSeg-style heads (bratskeras.synth.synthseg) and synth's --kind synthseg."""

from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from bratskeras.cli import cli as cli_main
from bratskeras.data import layouts
from bratskeras.synth import synthseg

VOXEL = 4.0  # a whole head at 4 mm: 60 x 60 x 39 voxels, well under a second


def _only(kind, **options):
    """DEFAULT with one lesion of tumour type `kind`."""
    weights = tuple(float(name == kind) for name in synthseg.TUMOUR_TYPES)
    tumours = synthseg.Tumours(type_weights=weights, count_weights=(1.0,), whole_ml=(60.0, 80.0), mixed_share=0.0,
                               **options)
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


@pytest.mark.parametrize("left_out", ["vessels", "vessel_tubes"])
def test_named_streams_a_step_left_out_changes_no_other_steps_draws(left_out):
    """Each transform draws from its own stream: without a vessel step the labels differ only at vessels.

    (Vessel tubes start in CSF, so without the vessel blobs they may start elsewhere: a vessel either way.)
    """
    full = synthseg.Head(shape=(60, 60, 39), voxel_mm=VOXEL)
    without = synthseg.Head(shape=(60, 60, 39), voxel_mm=VOXEL)
    names = [t.name for t in synthseg.DEFAULT]
    for transform in synthseg.DEFAULT[:names.index("vessel_tubes") + 1]:
        transform(full, synthseg.stream(5, transform.name))
        if transform.name != left_out:
            transform(without, synthseg.stream(5, transform.name))
    differ = full.labels != without.labels
    assert differ.any() and ((full.labels[differ] == synthseg.VESSEL) | (without.labels[differ] == synthseg.VESSEL)).all()


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


def test_each_generator_adds_steps_to_the_one_before():
    """basic (stage 1) < mimics (stage 2: enhancing mimics) < default (real scans' other false positives)."""
    names = [t.name for t in synthseg.DEFAULT]
    mimics = [n for n in names if n not in ("ventricle_shapes", "healthy_bright", "choroid_plexus")]
    assert [t.name for t in synthseg.MIMICS] == mimics
    assert [t.name for t in synthseg.BASIC] == [n for n in mimics if n not in ("vessel_tubes", "dura")]


def test_faint_generator_is_default_with_faint_enhancement_and_the_cli_offers_every_generator():
    assert [t.name for t in synthseg.FAINT if t.name != "faint_enhancement"] == [t.name for t in synthseg.DEFAULT]
    from bratskeras.synth.kinds import KINDS

    assert KINDS["synthseg"].settings == tuple(synthseg.GENERATORS)
    from bratskeras.synth import anatomy

    assert KINDS["anatomy"].settings == tuple(anatomy.SETTINGS)


def _glioblastoma_heads(seed, generator, step, **always):
    """Heads built by `generator` up to `step`, without it ("before") and with it forced on ("after")."""
    names = [t.name for t in generator]
    upto = names.index(step)
    weights = tuple(float(name == "glioblastoma") for name in synthseg.TUMOUR_TYPES)
    steps = tuple(replace(t, **always) if t.name == step else
                  replace(t, type_weights=weights, count_weights=(1.0,), whole_ml=(60.0, 80.0), mixed_share=0.0)
                  if t.name == "tumours" else t for t in generator[:upto + 1])
    heads = {}
    for label, chosen in (("before", steps[:-1]), ("after", steps)):
        head = synthseg.Head(shape=synthseg.anatomy.grid_shape(VOXEL), voxel_mm=VOXEL)
        for transform in chosen:
            transform(head, synthseg.stream(seed, transform.name))
        heads[label] = head
    return heads["before"], heads["after"]


def test_faint_enhancement_dims_only_et_on_t1c_and_keeps_it_above_the_tumour_around_it():
    """ET's T1c mean moves into the healthy range (level 0: the parenchyma's median), above NCR and oedema."""
    bright, faint = _glioblastoma_heads((6, 1), synthseg.FAINT, "faint_enhancement", share=1.0, level=(0.0, 0.0))
    assert np.array_equal(bright.labels, faint.labels)
    for modality in ("flair", "t1", "t2"):
        assert np.array_equal(bright.images[modality], faint.images[modality])
    enhancing = faint.labels == synthseg.ENHANCING
    assert enhancing.sum() > 10
    t1ce, before = faint.images["t1ce"], bright.images["t1ce"]
    assert np.array_equal(t1ce[~enhancing], before[~enhancing])
    parenchyma = np.percentile(t1ce[np.isin(faint.labels, synthseg.PARENCHYMA)], (50, 99))
    assert t1ce[enhancing].mean() < before[enhancing].mean()
    assert t1ce[enhancing].mean() < parenchyma[1]
    for label in (synthseg.NECROSIS, synthseg.OEDEMA_A, synthseg.OEDEMA_B):
        if (faint.labels == label).any():
            assert t1ce[enhancing].mean() >= t1ce[faint.labels == label].mean() + 0.05 - 1e-5
    with pytest.raises(ValueError, match="level"):
        synthseg.FaintEnhancement(level=(0.5, 0.1))
    with pytest.raises(ValueError, match="margin_sd"):
        synthseg.FaintEnhancement(margin_sd=-1.0)


def test_faint_enhancement_with_margin_sd_keeps_et_above_the_texture_of_the_tumour_around_it():
    _, faint = _glioblastoma_heads((6, 1), synthseg.LOWRES, "faint_enhancement", share=1.0, level=(0.0, 0.0),
                                   margin_sd=2.0)
    t1ce, enhancing = faint.images["t1ce"], faint.labels == synthseg.ENHANCING
    for label in (synthseg.NECROSIS, synthseg.OEDEMA_A, synthseg.OEDEMA_B):
        around = t1ce[faint.labels == label]
        if around.size:
            assert t1ce[enhancing].mean() >= around.mean() + 2.0 * around.std() + 0.05 - 1e-4


def test_fading_generator_is_faint_with_fading_oedema_and_isointense_enhancement():
    added = ("fading_oedema", "isointense_enhancement")
    assert [t.name for t in synthseg.FADING if t.name not in added] == [t.name for t in synthseg.FAINT]


def test_fading_oedema_darkens_only_oedema_on_flair_and_t2_most_at_its_outer_edge():
    """Edge 0 (the parenchyma's median): oedema next to the core keeps its brightness, the fringe falls to it."""
    before, after = _glioblastoma_heads((6, 1), synthseg.FADING, "fading_oedema", share=1.0, edge=(0.0, 0.0),
                                        gamma=(1.0, 1.0))
    assert np.array_equal(before.labels, after.labels)
    oedema = np.isin(after.labels, (synthseg.OEDEMA_A, synthseg.OEDEMA_B))
    assert oedema.sum() > 50
    core = np.isin(after.labels, (synthseg.NECROSIS, synthseg.NON_ENHANCING, synthseg.CYST, synthseg.ENHANCING))
    outside = ndimage.binary_dilation(oedema | core) & ~(oedema | core)
    fringe = oedema & ndimage.binary_dilation(outside)
    beside_core = oedema & ndimage.binary_dilation(core)
    for modality in ("t1", "t1ce"):
        assert np.array_equal(before.images[modality], after.images[modality])
    for modality in ("flair", "t2"):
        image, old = after.images[modality], before.images[modality]
        assert np.array_equal(image[~oedema], old[~oedema])
        assert np.all(image[oedema] <= old[oedema] + 1e-6)  # only ever darker
        drop = old - image
        assert drop[fringe].mean() > 2 * drop[beside_core & ~fringe].mean()
        median = np.percentile(image[np.isin(after.labels, synthseg.PARENCHYMA)], 50)
        assert image[fringe].mean() < old[fringe].mean()
        assert abs(image[fringe].mean() - median) < abs(old[fringe].mean() - median)
    with pytest.raises(ValueError, match="gamma"):
        synthseg.FadingOedema(gamma=(0.0, 1.0))


def test_isointense_enhancement_moves_et_toward_healthy_brain_on_flair_and_t2_only():
    before, after = _glioblastoma_heads((6, 1), synthseg.FADING, "isointense_enhancement", share=1.0,
                                        level=(0.0, 0.0))
    assert np.array_equal(before.labels, after.labels)
    enhancing = after.labels == synthseg.ENHANCING
    assert enhancing.sum() > 10
    for modality in ("t1", "t1ce"):
        assert np.array_equal(before.images[modality], after.images[modality])
    for modality in ("flair", "t2"):
        image, old = after.images[modality], before.images[modality]
        assert np.array_equal(image[~enhancing], old[~enhancing])
        median = np.percentile(image[np.isin(after.labels, synthseg.PARENCHYMA)], 50)
        assert old[enhancing].mean() > median + 0.05
        assert image[enhancing].mean() == pytest.approx(median, abs=1e-4)
        assert np.allclose(image[enhancing] - old[enhancing], image[enhancing][0] - old[enhancing][0], atol=1e-5)
    with pytest.raises(ValueError, match="share"):
        synthseg.IsointenseEnhancement(share=1.5)


def test_subtle_generator_is_fading_with_subtle_t2_oedema_and_unsuppressed_csf():
    added = ("subtle_t2_oedema", "unsuppressed_csf")
    assert [t.name for t in synthseg.SUBTLE if t.name not in added] == [t.name for t in synthseg.FADING]


def test_subtle_t2_oedema_moves_oedema_and_non_enhancing_tumour_toward_parenchyma_on_t2_only():
    """Level 0.2: each class's T2 mean lands a fifth of the way from the parenchyma's median to the CSF's."""
    before, after = _glioblastoma_heads((6, 1), synthseg.SUBTLE, "subtle_t2_oedema", share=1.0, level=(0.2, 0.2))
    assert np.array_equal(before.labels, after.labels)
    for modality in ("flair", "t1", "t1ce"):
        assert np.array_equal(before.images[modality], after.images[modality])
    t2, old = after.images["t2"], before.images["t2"]
    oedema = np.isin(after.labels, (synthseg.OEDEMA_A, synthseg.OEDEMA_B))
    changed = oedema | (after.labels == synthseg.NON_ENHANCING)
    assert oedema.sum() > 50
    assert np.array_equal(t2[~changed], old[~changed])
    assert np.all(t2[changed] <= old[changed] + 1e-6)
    parenchyma = np.median(t2[np.isin(after.labels, synthseg.PARENCHYMA)])
    fluid = np.median(t2[np.isin(after.labels, synthseg.CSF)])
    if old[oedema].mean() > parenchyma + 0.2 * (fluid - parenchyma):
        assert t2[oedema].mean() == pytest.approx(parenchyma + 0.2 * (fluid - parenchyma), abs=1e-4)
    assert t2[oedema].mean() < old[oedema].mean()
    with pytest.raises(ValueError, match="level"):
        synthseg.SubtleT2Oedema(level=(0.6, 0.1))


def test_unsuppressed_csf_brightens_only_csf_on_flair_most_toward_the_skull_base():
    """Level 1 (the parenchyma's p99) with no patches: only the inferior gradient lifts CSF, only on FLAIR."""
    before, after = _glioblastoma_heads((6, 1), synthseg.SUBTLE, "unsuppressed_csf", share=1.0,
                                        level=(1.0, 1.0), coverage=(-1.0, -1.0), inferior_share=1.0)
    assert np.array_equal(before.labels, after.labels)
    csf = np.isin(after.labels, synthseg.CSF)
    for modality in ("t1", "t1ce", "t2"):
        assert np.array_equal(before.images[modality], after.images[modality])
    flair, old = after.images["flair"], before.images["flair"]
    assert np.array_equal(flair[~csf], old[~csf])
    assert np.all(flair[csf] >= old[csf])  # only ever brighter
    lift = flair - old
    low, high = csf & (after.points[2] < -45), csf & (after.points[2] > 0)
    assert low.sum() > 20 and high.sum() > 20
    assert lift[low].mean() > 0.1 and np.all(lift[high] == 0)  # waves at most 1 - 1: none above the centre
    p99 = np.percentile(flair[np.isin(after.labels, synthseg.PARENCHYMA)], 99)
    assert flair[csf].max() <= max(p99, old[csf].max()) + 1e-5
    with pytest.raises(ValueError, match="inferior_mm"):
        synthseg.UnsuppressedCSF(inferior_mm=0.0)


def test_lowres_generator_is_subtle_with_low_resolution_before_the_scanner():
    assert [t.name for t in synthseg.LOWRES if t.name != "low_resolution"] == [t.name for t in synthseg.SUBTLE]
    assert [t for t in synthseg.LOWRES if t.name == "faint_enhancement"][0].margin_sd == 2.0
    names = [t.name for t in synthseg.LOWRES]
    assert names.index("low_resolution") == names.index("scanner") - 1


def test_plexus_generator_is_lowres_with_more_non_enhancing_tumours_and_larger_enhancing_mimics():
    """Same steps as LOWRES, in order; only the tumour mix, the vessels and the choroid plexus differ."""
    assert [t.name for t in synthseg.PLEXUS] == [t.name for t in synthseg.LOWRES]
    changed = {t.name for t, old in zip(synthseg.PLEXUS, synthseg.LOWRES) if t != old}
    assert changed == {"tumours", "vessels", "vessel_tubes", "choroid_plexus"}
    low_grade = synthseg.TUMOUR_TYPES.index("low_grade")
    assert [t for t in synthseg.PLEXUS if t.name == "tumours"][0].type_weights[low_grade] == 0.45
    seed = (8, 1)
    heads = {}
    for label, generator in (("lowres", synthseg.LOWRES), ("plexus", synthseg.PLEXUS)):
        head = synthseg.Head(shape=synthseg.anatomy.grid_shape(VOXEL), voxel_mm=VOXEL)
        for transform in generator[:[t.name for t in generator].index("vessel_tubes") + 1]:
            transform(head, synthseg.stream(seed, transform.name))
        heads[label] = head
    assert (heads["plexus"].labels == synthseg.VESSEL).sum() > 1.5 * (heads["lowres"].labels == synthseg.VESSEL).sum()
    with pytest.raises(ValueError, match="no step named warp"):  # a derived generator replaces, never adds
        synthseg._with_steps(synthseg.LOWRES[:2], synthseg.Warp())


def test_derived_generators_insert_their_steps_in_the_order_they_were_trained_with():
    """FAINT to LOWRES are their base plus inserted steps; the step order is the one their stages were drawn with."""
    base = [t.name for t in synthseg.DEFAULT]
    assert base[base.index("contrasts") + 1] == "healthy_bright"
    expected = {
        "faint": ["contrasts", "faint_enhancement", "healthy_bright"],
        "fading": ["contrasts", "faint_enhancement", "fading_oedema", "isointense_enhancement", "healthy_bright"],
        "subtle": ["contrasts", "faint_enhancement", "fading_oedema", "isointense_enhancement", "subtle_t2_oedema",
                   "healthy_bright", "unsuppressed_csf", "choroid_plexus"],
    }
    for name, middle in expected.items():
        names = [t.name for t in synthseg.GENERATORS[name]]
        assert names[names.index("contrasts"):names.index("contrasts") + len(middle)] == middle, name
        assert names[:names.index("contrasts")] == base[:base.index("contrasts")], name
    kept = [t for t in synthseg.FADING if t.name not in ("fading_oedema", "isointense_enhancement")]
    assert kept == list(synthseg.FAINT)  # the base's steps, options and all
    with pytest.raises(ValueError, match="no step named nowhere"):
        synthseg._with_inserted(synthseg.DEFAULT, "nowhere", synthseg.FadingOedema())
    with pytest.raises(ValueError, match="already in the generator"):
        synthseg._with_inserted(synthseg.FAINT, "scanner", synthseg.FaintEnhancement())


def test_low_resolution_blurs_the_chosen_modalities_only():
    """Two modalities at 8 mm: their images lose high frequencies, the other two are untouched, classes kept."""
    before, after = _glioblastoma_heads((6, 1), synthseg.LOWRES, "low_resolution", share=1.0, modalities=(2, 2),
                                        in_plane_mm=(8.0, 8.0), slice_mm=(8.0, 8.0))
    assert np.array_equal(before.labels, after.labels)
    changed = [m for m in synthseg.MODALITIES if not np.array_equal(before.images[m], after.images[m])]
    assert len(changed) == 2
    for modality in changed:
        roughness = [np.abs(np.diff(head.images[modality], axis=0)).mean() for head in (before, after)]
        assert roughness[1] < 0.7 * roughness[0]
    with pytest.raises(ValueError, match="modalities"):
        synthseg.LowResolution(modalities=(0, 5))


def test_healthy_mimics_change_images_not_classes():
    """Choroid plexus and FLAIR-bright healthy tissue: the same tumour classes; plexus enhances like ET."""
    seed = (4, 2)
    plain = tuple(t for t in synthseg.DEFAULT if t.name not in ("healthy_bright", "choroid_plexus"))
    painted = tuple(replace(t, flow_share=1.0, caps_share=1.0, rim_share=1.0, spots_share=1.0)
                    if t.name == "healthy_bright" else t for t in synthseg.DEFAULT)
    images, classes = _make(seed, painted)
    plain_images, plain_classes = _make(seed, plain)
    assert np.array_equal(classes, plain_classes)
    assert not np.array_equal(images["flair"], plain_images["flair"])
    head = synthseg.Head(shape=classes.shape, voxel_mm=VOXEL)
    for transform in painted[:[t.name for t in painted].index("choroid_plexus") + 1]:
        transform(head, synthseg.stream(seed, transform.name))
    t1ce, ventricles = head.images["t1ce"], head.labels == synthseg.VENTRICLE
    parenchyma = np.isin(head.labels, synthseg.PARENCHYMA)
    assert (t1ce[ventricles] > np.percentile(t1ce[parenchyma], 99)).sum() >= 3  # enhancing tufts


def test_ventricle_shapes_move_only_ventricles_and_healthy_tissue():
    head = synthseg.Head(shape=(60, 60, 39), voxel_mm=VOXEL)
    for transform in synthseg.DEFAULT[:[t.name for t in synthseg.DEFAULT].index("atrophy") + 1]:
        transform(head, synthseg.stream(1, transform.name))
    before = head.labels.copy()
    synthseg.VentricleShapes(deformation_mm=(6.0, 6.0), asymmetry_mm=(4.0, 4.0))(head, synthseg.stream(1, "v"))
    changed = before != head.labels
    assert changed.any()
    assert np.isin(before[changed], synthseg.HEALTHY).all() and np.isin(head.labels[changed], synthseg.HEALTHY).all()


def test_dura_left_by_skull_stripping_enhances_on_t1c():
    transforms = tuple(replace(t, dilate_share=1.0, erode_share=0.0) if t.name == "skull_strip" else
                       replace(t, enhancing_share=1.0) if t.name == "dura" else
                       replace(t, noise=(0.0, 0.0), thick_share=0.0, blur_mm=(0.0, 0.0), bias=(0.0, 0.0))
                       if t.name == "scanner" else t for t in synthseg.DEFAULT)
    head = synthseg.Head(shape=(60, 60, 39), voxel_mm=VOXEL)
    for transform in transforms[:-1]:
        transform(head, synthseg.stream(2, transform.name))
    dura, brain = head.labels == synthseg.DURA, np.isin(head.labels, synthseg.HEALTHY)
    assert dura.sum() > 100
    t1ce = head.images["t1ce"]
    assert np.median(t1ce[dura]) >= np.percentile(t1ce[brain], 99)


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
