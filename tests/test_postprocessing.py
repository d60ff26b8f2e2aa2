import numpy as np
import pytest

from bratskeras.core.targets import classes_to_regions, regions_to_classes
from bratskeras.predict.cleanup import average_pool_smooth, enhancing_tumor_to_ncr, remove_small_components
from bratskeras.predict.postprocessing import postprocess


def test_average_pool_hand_computed_row():
    # Window [i, i+1] for size 2: means [1, .5, .5, 1]; half rounds to 0.
    mask = np.array([1, 1, 0, 1], bool).reshape(4, 1, 1)
    np.testing.assert_array_equal(average_pool_smooth(mask, (2, 1, 1))[:, 0, 0], [1, 0, 0, 1])


@pytest.mark.parametrize("size", [(4, 4, 4), (3, 2, 1), (16, 16, 16)])
def test_average_pool_matches_keras_same_padding(size):
    import keras

    rng = np.random.default_rng(0)
    mask = rng.random((10, 9, 7)) < 0.5
    pooled = keras.layers.AveragePooling3D(size, strides=1, padding="same")(
        mask.astype("float32")[None, ..., None]
    )
    expected = np.asarray(pooled)[0, ..., 0]
    # Compare away from exact ties, where float32 pooling may round either way.
    decided = np.abs(expected - 0.5) > 1e-4
    ours = average_pool_smooth(mask, size)
    np.testing.assert_array_equal(ours[decided], expected[decided] > 0.5)


def test_average_pool_removes_speck_and_keeps_block():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:12, 2:12, 2:12] = True
    mask[17, 17, 17] = True
    smoothed = average_pool_smooth(mask, 4)
    assert not smoothed[17, 17, 17]
    assert smoothed[4:10, 4:10, 4:10].all()


def test_remove_small_components_uses_26_connectivity():
    mask = np.zeros((6, 6, 6), bool)
    mask[0:3, 0:3, 0:3] = True  # 27 voxels
    mask[4, 4, 4] = mask[5, 5, 5] = True  # 2 voxels touching by a corner
    kept = remove_small_components(mask, 3)
    assert kept.sum() == 27 and not kept[4, 4, 4]
    assert remove_small_components(mask, 2).sum() == 29
    assert remove_small_components(np.zeros((3, 3, 3), bool), 5).sum() == 0


def test_et_to_ncr_threshold():
    classes = np.zeros((4, 4, 4), np.uint8)
    classes[0, 0, :3] = 3
    classes[1] = 2
    relabelled = enhancing_tumor_to_ncr(classes, 4)
    assert (relabelled[0, 0, :3] == 1).all() and (relabelled[1] == 2).all()
    np.testing.assert_array_equal(enhancing_tumor_to_ncr(classes, 3), classes)


def test_postprocess_class_map_per_region_keeps_nesting():
    classes = np.zeros((8, 8, 8), np.uint8)
    classes[1:5, 1:5, 1:5] = 2
    classes[2:4, 2:4, 2:4] = 1
    classes[2, 2, 2] = 3  # 1-voxel ET inside the core
    classes[7, 7, 7] = 1  # isolated 1-voxel core
    out = postprocess(classes, [{"name": "min_component", "voxels": 2}])
    assert out[7, 7, 7] == 0
    assert out[2, 2, 2] == 1  # ET removed as a region, still TC -> NCR
    assert (out[1:5, 1:5, 1:5] > 0).all()
    assert out.dtype == np.uint8


def test_postprocess_per_class_sets_removed_voxels_to_background():
    classes = np.zeros((8, 8, 8), np.uint8)
    classes[1:5, 1:5, 1:5] = 2
    classes[2, 2, 2] = 3
    out = postprocess(classes, [{"name": "min_component", "voxels": 2, "per": "class"}])
    assert out[2, 2, 2] == 0 and out[1, 1, 1] == 2


def test_postprocess_binary_and_chain():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:12, 2:12, 2:12] = True
    mask[17, 17, 17] = True
    out = postprocess(mask, [{"name": "average_pool", "size": 4}, {"name": "min_component", "voxels": 10}])
    assert out.dtype == bool and not out[17, 17, 17] and out[5, 5, 5]
    np.testing.assert_array_equal(postprocess(mask, []), mask)


@pytest.mark.parametrize(
    "steps",
    [
        [{"name": "blur"}],
        [{"name": "min_component"}],
        [{"name": "average_pool", "size": 0}],
        [{"name": "min_component", "voxels": 5, "per": "label"}],
        [{"name": "et_to_ncr", "voxels": 5, "extra": 1}],
    ],
)
def test_postprocess_rejects_bad_steps(steps):
    with pytest.raises(ValueError):
        postprocess(np.zeros((4, 4, 4), np.uint8), steps)


def test_postprocess_rejects_et_step_on_mask_and_bad_classes():
    with pytest.raises(ValueError, match="class map"):
        postprocess(np.zeros((4, 4, 4), bool), [{"name": "et_to_ncr", "voxels": 5}])
    with pytest.raises(ValueError, match="0..3"):
        postprocess(np.full((4, 4, 4), 4, np.uint8), [])


def test_regions_to_classes_inverts_classes_to_regions():
    classes = np.arange(4, dtype=np.uint8).reshape(2, 2, 1)
    np.testing.assert_array_equal(regions_to_classes(classes_to_regions(classes)), classes)


def test_postprocess_a_task_s_class_map_per_its_regions():
    """gli's classes (RC = 4) are cleaned per region WT, TC, ET, RC; a speck of RC goes, the tumor stays."""
    classes = np.zeros((12, 12, 12), np.uint8)
    classes[2:7, 2:7, 2:7] = 2  # SNFH
    classes[3:6, 3:6, 3:6] = 1  # NETC
    classes[4, 4, 4] = 3  # ET
    classes[9:12, 9:12, 9:12] = 4  # RC, 27 voxels
    classes[0, 11, 0] = 4  # an RC speck
    cleaned = postprocess(classes, [{"name": "min_component", "voxels": 2}], scheme="gli")
    expected = classes.copy()
    expected[0, 11, 0] = 0
    expected[4, 4, 4] = 1  # the one-voxel ET region goes; the voxel stays in TC, as NETC
    np.testing.assert_array_equal(cleaned, expected)
    per_class = postprocess(classes, [{"name": "min_component", "voxels": 2, "per": "class"}], scheme="gli")
    expected[4, 4, 4] = 0  # per class, the removed ET voxel becomes background
    np.testing.assert_array_equal(per_class, expected)
    with pytest.raises(ValueError, match=r"0\.\.3 \(brats2023 classes\)"):
        postprocess(classes, [])  # classic classes stop at 3


def test_et_to_ncr_uses_the_scheme_s_classes():
    ped = np.zeros((4, 4, 4), np.uint8)
    ped[0, 0, 0] = 1  # ped's ET is class 1, its NETC class 2
    np.testing.assert_array_equal(postprocess(ped, [{"name": "et_to_ncr", "voxels": 5}], scheme="ped")[0, 0, 0], 2)
    with pytest.raises(ValueError, match="menrt scheme has GTV"):
        postprocess(np.zeros((4, 4, 4), np.uint8), [{"name": "et_to_ncr", "voxels": 5}], scheme="menrt")


def test_major_components_keeps_components_of_at_least_a_fraction_of_the_largest():
    from bratskeras.predict.cleanup import keep_major_components

    mask = np.zeros((30, 30, 30), bool)
    mask[0:10, 0:10, 0:10] = True  # 1,000 voxels
    mask[20:26, 20:25, 20:30] = True  # 300
    mask[0:5, 20:30, 25:26] = True  # 50
    kept = keep_major_components(mask, 0.1)
    assert kept.sum() == 1300 and kept[0, 0, 0] and kept[20, 20, 20] and not kept[0, 20, 25]
    assert keep_major_components(mask, 0.0).sum() == 1350 and keep_major_components(mask, 1.0).sum() == 1000
    # Per region of a class map: a far speck of tumour goes with its ET; the nesting is kept.
    classes = np.where(mask, 2, 0).astype(np.uint8)
    classes[2:5, 2:5, 2:5] = 3
    classes[1, 22, 25] = 3
    cleaned = postprocess(classes, [{"name": "major_components", "fraction": 0.1}])
    assert (cleaned[0:5, 20:30, 25:26] == 0).all() and (cleaned[2:5, 2:5, 2:5] == 3).all()
    assert (cleaned[20:26, 20:25, 20:30] == 2).all()


def _enhancement_case():
    """A head whose healthy brain has T1c 100 +- 10 (p50 100, p75 ~107, p99 ~123, max ~145); predicted ET
    (8^3 voxels) on a rim at 130, a slab of it at 103 (above the brain's median, below white matter's level)
    and a core at 60 (a faint patch darker than the healthy brain)."""
    rng = np.random.default_rng(0)
    t1ce = np.zeros((40, 40, 40), np.float32)
    t1ce[2:38, 2:38, 2:38] = rng.normal(100, 10, (36, 36, 36))
    classes = np.zeros(t1ce.shape, np.uint8)
    classes[10:22, 10:22, 10:22] = 2  # oedema
    classes[12:20, 12:20, 12:20] = 3  # predicted ET ...
    t1ce[12:20, 12:20, 12:20] = 130.0  # ... enhancing on its rim
    t1ce[18:20, 12:20, 12:20] = 103.0  # ... barely above the healthy median on one slab
    t1ce[14:18, 14:18, 14:18] = 60.0  # ... and darker than the healthy brain inside
    return classes, t1ce


def test_et_enhancement_turns_et_darker_than_healthy_white_matter_into_ncr():
    classes, t1ce = _enhancement_case()
    cleaned = postprocess(classes, [{"name": "et_enhancement"}], images={"t1ce": t1ce})
    assert (cleaned[14:18, 14:18, 14:18] == 1).all() and (cleaned[18:20, 12:20, 12:20] == 1).all()  # NCR
    assert (cleaned == 3).sum() == 8 ** 3 - 4 ** 3 - 2 * 8 * 8  # the bright rim stays ET
    np.testing.assert_array_equal(cleaned > 0, classes > 0)  # WT unchanged, and TC: ET only becomes NCR
    # Any intensity scale and a constant background: the same voxels.
    shifted = np.where(t1ce != 0, t1ce * 0.01 + 5.0, 7.0).astype(np.float64)
    np.testing.assert_array_equal(postprocess(classes, [{"name": "et_enhancement"}], images={"t1ce": shifted}),
                                  cleaned)
    # The percentile says how bright ET must be: the brain's median keeps the slab, its 99th the rim only,
    # its brightest voxel nothing.
    count = lambda p: (postprocess(classes, [{"name": "et_enhancement", "percentile": p}],  # noqa: E731
                                   images={"t1ce": t1ce}) == 3).sum()
    assert count(50) == 8 ** 3 - 4 ** 3 and count(99) == (cleaned == 3).sum() and count(100) == 0


def test_et_enhancement_needs_the_t1c_and_a_scheme_with_et():
    classes, t1ce = _enhancement_case()
    with pytest.raises(ValueError, match="reads the t1ce image, which is not among the model's inputs"):
        postprocess(classes, [{"name": "et_enhancement"}])
    from bratskeras.predict.postprocessing import check_steps

    with pytest.raises(ValueError, match=r"not among the model's inputs \(flair\)"):
        check_steps([{"name": "et_enhancement"}], modalities=("flair",))
    with pytest.raises(ValueError, match="menrt scheme has GTV"):
        check_steps([{"name": "et_enhancement"}], scheme="menrt")
    with pytest.raises(ValueError, match="percentile must be a number within"):
        check_steps([{"name": "et_enhancement", "percentile": 101}])
    with pytest.raises(ValueError, match="needs a class map"):
        postprocess(classes > 0, [{"name": "et_enhancement"}], images={"t1ce": t1ce})
    # Without a healthy brain to compare with (the tumour fills the head), nothing changes.
    everywhere = np.where(t1ce != 0, 3, 0).astype(np.uint8)
    np.testing.assert_array_equal(postprocess(everywhere, [{"name": "et_enhancement"}], images={"t1ce": t1ce}),
                                  everywhere)


def _oedema_case():
    """A head whose healthy brain has FLAIR 100 +- 10; a predicted tumour (12^3) of oedema around a core
    (4^3, NCR) whose oedema is FLAIR-bright (140) except one dark slab (80: CSF a FLAIR does not null)."""
    rng = np.random.default_rng(1)
    flair = np.zeros((40, 40, 40), np.float32)
    flair[2:38, 2:38, 2:38] = rng.normal(100, 10, (36, 36, 36))
    classes = np.zeros(flair.shape, np.uint8)
    classes[10:22, 10:22, 10:22] = 2
    flair[10:22, 10:22, 10:22] = 140.0
    flair[10:12, 10:22, 10:22] = 80.0  # the dark slab of predicted oedema
    classes[14:18, 14:18, 14:18] = 1
    flair[14:18, 14:18, 14:18] = 60.0  # a necrotic core, dark on FLAIR: TC is not the step's to change
    return classes, flair


def test_ed_hyperintensity_turns_oedema_darker_than_the_healthy_brain_into_background():
    classes, flair = _oedema_case()
    cleaned = postprocess(classes, [{"name": "ed_hyperintensity"}], images={"flair": flair})
    assert (cleaned[10:12] == 0).all()  # the dark slab
    expected = classes.copy()
    expected[10:12] = 0
    np.testing.assert_array_equal(cleaned, expected)  # the bright oedema and the dark core stay
    shifted = np.where(flair != 0, flair * 0.01 + 5.0, 7.0).astype(np.float64)  # any scale, constant background
    np.testing.assert_array_equal(postprocess(classes, [{"name": "ed_hyperintensity"}], images={"flair": shifted}),
                                  cleaned)
    # Percentile 0: oedema need only reach the darkest healthy voxel (~50), so the slab stays; 100: none does.
    count = lambda p: (postprocess(classes, [{"name": "ed_hyperintensity", "percentile": p}],  # noqa: E731
                                   images={"flair": flair}) == 2).sum()
    assert count(0) == (classes == 2).sum() and count(100) == 0


def test_ed_hyperintensity_needs_the_flair_and_a_scheme_with_wt_and_tc():
    from bratskeras.predict.postprocessing import check_steps

    classes, flair = _oedema_case()
    with pytest.raises(ValueError, match=r"reads the flair image, which is not among the model's inputs \(t1ce\)"):
        check_steps([{"name": "ed_hyperintensity"}], modalities=("t1ce",))
    with pytest.raises(ValueError, match="needs WT and TC regions; the menrt scheme has GTV"):
        check_steps([{"name": "ed_hyperintensity"}], scheme="menrt")
    with pytest.raises(ValueError, match="needs a class map"):
        postprocess(classes > 0, [{"name": "ed_hyperintensity"}], images={"flair": flair})


def _fluid_case():
    """(classes (24,)*3 with oedema around a core, T1, T2): a slab of the oedema has CSF's signature, dark on T1
    and bright on T2; a fluid-like necrotic core too (TC: not the step's to change)."""
    rng = np.random.default_rng(0)
    shape = (24, 24, 24)
    classes = np.zeros(shape, np.int64)
    classes[6:18, 6:18, 6:18] = 2
    classes[10:14, 10:14, 10:14] = 1
    t1 = (100.0 * rng.normal(1.0, 0.03, shape)).astype(np.float32)
    t2 = (100.0 * rng.normal(1.0, 0.03, shape)).astype(np.float32)
    for image in (t1, t2):
        outside = np.ones(shape, bool)
        outside[2:-2, 2:-2, 2:-2] = False
        image[outside] = 0  # background, filling the border
        image[classes > 0] = 100.0  # the tumour at the healthy brain's median (the noise only outside it)
    t1[6:8, 6:18, 6:18], t2[6:8, 6:18, 6:18] = 40.0, 250.0  # the fluid slab of the oedema
    t1[10:14, 10:14, 10:14], t2[10:14, 10:14, 10:14] = 40.0, 250.0  # the fluid core
    return classes, t1, t2


def test_ed_fluid_turns_oedema_with_csf_s_signature_into_background():
    classes, t1, t2 = _fluid_case()
    cleaned = postprocess(classes, [{"name": "ed_fluid"}], images={"t1": t1, "t2": t2})
    expected = classes.copy()
    expected[6:8, 6:18, 6:18] = 0
    np.testing.assert_array_equal(cleaned, expected)  # the slab only: the core and the other oedema stay
    # Any scale and a constant background.
    scaled = {"t1": np.where(t1 != 0, t1 * 7.0 + 3.0, -1.0), "t2": np.where(t2 != 0, t2 * 0.01, 5.0)}
    np.testing.assert_array_equal(postprocess(classes, [{"name": "ed_fluid"}], images=scaled), cleaned)
    # Dark on T1 alone, or bright on T2 alone, is not fluid.
    for image, value in (("t1", 100.0), ("t2", 100.0)):
        one = {"t1": t1.copy(), "t2": t2.copy()}
        one[image][6:8, 6:18, 6:18] = value
        np.testing.assert_array_equal(postprocess(classes, [{"name": "ed_fluid"}], images=one), classes)


def test_ed_fluid_needs_t1_and_t2_and_a_scheme_with_wt_and_tc():
    from bratskeras.predict.postprocessing import check_steps

    classes, t1, t2 = _fluid_case()
    with pytest.raises(ValueError, match=r"reads the t2 image, which is not among the model's inputs"):
        check_steps([{"name": "ed_fluid"}], modalities=("flair", "t1", "t1ce"))
    with pytest.raises(ValueError, match="needs WT and TC regions; the menrt scheme has GTV"):
        check_steps([{"name": "ed_fluid"}], scheme="menrt")
    with pytest.raises(ValueError, match="t2 must have the class map's shape"):
        postprocess(classes, [{"name": "ed_fluid"}], images={"t1": t1, "t2": t2[:-1]})


def test_region_thresholds_decodes_each_region_above_its_own_threshold():
    from bratskeras.predict.postprocessing import decode
    from bratskeras.predict.regions import regions_above

    # Per voxel: background, NCR, ED, ET probabilities.
    probabilities = np.array([[0.45, 0.20, 0.20, 0.15],  # argmax: background; WT 0.55, TC 0.35, ET 0.15
                              [0.30, 0.05, 0.40, 0.25],  # argmax: ED; WT 0.70, TC 0.30, ET 0.25
                              [0.70, 0.00, 0.10, 0.20]],  # WT 0.30, ET 0.20: ET only once WT is
                             np.float32).reshape(3, 1, 1, 4)
    assert regions_above(probabilities, "classes", {}).ravel().tolist() == [2, 2, 0]  # regions at 0.5
    step = {"name": "region_thresholds", "wt": 0.25, "tc": 0.3, "et": 0.2}
    # WT 0.55 > 0.25, TC 0.35 > 0.3, ET 0.15 < 0.2 -> NCR; then TC 0.30 is not > 0.3 -> ED; then ET 0.2 is not > 0.2.
    assert decode(probabilities, "classes", step).ravel().tolist() == [1, 2, 2]
    assert decode(probabilities, "classes", dict(step, et=0.1)).ravel().tolist() == [3, 2, 2]
    # A regions target's channels are its regions' probabilities; where they nest (WT >= TC >= ET),
    # thresholds of 0.5 decode it as usual, and an ET without TC is clipped away.
    from bratskeras.core import targets

    sigmoids = -np.sort(-np.random.default_rng(0).random((6, 5, 4, 3)).astype(np.float32), axis=-1)
    np.testing.assert_array_equal(decode(sigmoids, "regions", {"name": "region_thresholds"}),
                                  targets.output_to_classes(sigmoids, "regions"))
    assert decode(np.array([[[[0.9, 0.1, 0.9]]]], np.float32), "regions", {"name": "region_thresholds"}).item() == 2
    assert decode(sigmoids[..., :1], "whole_tumor", {"name": "region_thresholds", "wt": 0.3}).dtype == bool


def test_region_thresholds_can_only_be_the_first_step():
    from bratskeras.predict.postprocessing import check_steps, split_decoding

    first = {"name": "region_thresholds", "wt": 0.3}
    check_steps([first, {"name": "major_components"}])
    with pytest.raises(ValueError, match="decodes the network's probabilities: it can only be the first step"):
        check_steps([{"name": "major_components"}, first])
    with pytest.raises(ValueError, match="needs WT, TC and ET regions; the menrt scheme has GTV"):
        check_steps([first], scheme="menrt")
    with pytest.raises(ValueError, match=r"a threshold must be a number within \(0, 1\)"):
        check_steps([{"name": "region_thresholds", "et": 1.0}])
    assert split_decoding([first, {"name": "major_components"}]) == (first, [{"name": "major_components"}])
    assert split_decoding([{"name": "major_components"}]) == (None, [{"name": "major_components"}])


def test_bias_refit_can_only_be_the_last_step_and_only_predict_applies_it():
    from bratskeras.predict.postprocessing import STEPS, check_steps, split_refit

    refit = {"name": "bias_refit", "margin": 2}
    check_steps([{"name": "region_thresholds"}, {"name": "major_components"}, refit])
    with pytest.raises(ValueError, match="predicts the case again after the other steps: it can only be the last"):
        check_steps([refit, {"name": "major_components"}])
    with pytest.raises(ValueError, match="margin must be a non-negative integer"):
        check_steps([{"name": "bias_refit", "margin": 1.5}])
    assert split_refit([{"name": "major_components"}, refit]) == ([{"name": "major_components"}], refit)
    assert split_refit([{"name": "major_components"}]) == ([{"name": "major_components"}], None)
    with pytest.raises(ValueError, match="re-runs the model: only predict applies it"):
        postprocess(np.zeros((4, 4, 4), np.uint8), [refit])
    classes = np.zeros((9, 9, 9), np.uint8)
    classes[4, 4, 4] = 3
    assert STEPS["bias_refit"].excluded(classes, 2).sum() == 25  # the 6-connected ball of radius 2
    assert STEPS["bias_refit"].excluded(classes, 0).sum() == 1 and not STEPS["bias_refit"].excluded(classes * 0, 2).any()


def _as_task(classes, task):
    """(a classic class map (0 bg, 1 NCR, 2 ED, 3 ET) in `task`'s class indices, as predict maps them
    (LabelScheme.from_classic), the task's scheme)."""
    from bratskeras.core.labels import get_scheme

    scheme = get_scheme(task)
    return np.asarray(scheme.from_classic, np.uint8)[classes], scheme


def _surface_case():
    """A 36^3 brain (T1c 100) with a deep tumour (ET rim around NCR), a cortical tumour whose ET reaches the
    edge but has depth (8 voxels deep: 3/8 of it within 3 voxels of the edge) and a 2-voxel sheet of ET on
    the edge (enhancing dura) inside a little oedema."""
    t1ce = np.zeros((40, 40, 40), np.float32)
    t1ce[2:38, 2:38, 2:38] = 100.0
    classes = np.zeros(t1ce.shape, np.uint8)
    classes[14:24, 14:24, 14:24] = 3
    classes[17:21, 17:21, 17:21] = 1
    classes[2:10, 24:30, 24:30] = 3  # the cortical tumour's ET, from the edge (plane 2) 8 voxels in
    classes[20:30, 2:6, 8:16] = 2  # oedema under the sheet
    classes[20:30, 2:4, 8:16] = 3  # the sheet: depths 1 and 2
    return classes, t1ce


def test_et_surface_drops_et_lying_mostly_at_the_brain_edge():
    classes, t1ce = _surface_case()
    cleaned = postprocess(classes, [{"name": "et_surface"}], images={"t1ce": t1ce})
    expected = classes.copy()
    expected[20:30, 2:4, 8:16] = 0  # the sheet becomes background, the oedema under it stays
    np.testing.assert_array_equal(cleaned, expected)
    # Any intensity scale and a constant background: the same voxels.
    shifted = np.where(t1ce != 0, t1ce * 0.01 + 5.0, 7.0).astype(np.float64)
    np.testing.assert_array_equal(postprocess(classes, [{"name": "et_surface"}], images={"t1ce": shifted}), cleaned)
    # The share and depth say how superficial a component must be: 3/8 of the cortical tumour lies within 3
    # voxels, all of it within 8.
    count = lambda **o: (postprocess(classes, [{"name": "et_surface", **o}], images={"t1ce": t1ce}) == 3).sum()  # noqa: E731
    deep, cortical, sheet = 10 ** 3 - 4 ** 3, 8 * 6 * 6, 10 * 2 * 8
    assert count(share=0.3) == deep and count(depth=1) == deep + cortical + sheet
    assert count(depth=8, share=0.99) == deep
    # A crop that cuts the brain: outside the array is outside the brain, so the cut face is an edge too.
    cut = postprocess(classes[2:], [{"name": "et_surface"}], images={"t1ce": t1ce[2:]})
    np.testing.assert_array_equal(cut, cleaned[2:])


def test_et_surface_takes_the_task_classes_and_checks_its_options():
    from bratskeras.predict.postprocessing import check_steps

    classes, t1ce = _surface_case()
    as_gli, gli = _as_task(classes, "gli")
    et = gli.names.index("ET")
    cleaned = postprocess(as_gli, [{"name": "et_surface"}], scheme="gli", images={"t1ce": t1ce})
    assert (cleaned[20:30, 2:4, 8:16] == 0).all() and (cleaned == et).sum() == 10 ** 3 - 4 ** 3 + 8 * 6 * 6
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        check_steps([{"name": "et_surface", "depth": 0}])
    with pytest.raises(ValueError, match="fraction must be a number within"):
        check_steps([{"name": "et_surface", "share": 1.5}])
    with pytest.raises(ValueError, match="menrt scheme has GTV"):
        check_steps([{"name": "et_surface"}], scheme="menrt")
    with pytest.raises(ValueError, match="needs a class map"):
        postprocess(classes > 0, [{"name": "et_surface"}], images={"t1ce": t1ce})



def _rim_case():
    """A brain with FLAIR uniform in 95..105 around a predicted tumour (oedema around NCR) whose true oedema
    goes on for 2 voxels past the prediction on one side (FLAIR 140); the 3-voxel shell around the tumour is
    otherwise FLAIR 100, and 8 voxels from the tumour lies a separate bright spot."""
    rng = np.random.default_rng(2)
    flair = np.zeros((40, 40, 40), np.float32)
    flair[2:38, 2:38, 2:38] = rng.uniform(95, 105, (36, 36, 36))
    flair[9:25, 9:25, 9:25] = 100.0
    classes = np.zeros(flair.shape, np.uint8)
    classes[12:22, 12:22, 12:22] = 2
    classes[15:19, 15:19, 15:19] = 1
    flair[12:22, 12:22, 12:22] = 140.0
    flair[22:24, 12:22, 12:22] = 140.0  # the missed oedema: touching the prediction
    flair[30:32, 12:14, 12:14] = 140.0  # a bright spot 8 voxels away, not connected
    return classes, flair


def test_ed_growth_adds_the_flair_bright_rim_connected_to_the_tumour():
    classes, flair = _rim_case()
    grown = postprocess(classes, [{"name": "ed_growth"}], images={"flair": flair})
    expected = classes.copy()
    expected[22:24, 12:22, 12:22] = 2
    np.testing.assert_array_equal(grown, expected)  # the rim, not the far spot; no predicted voxel changes
    shifted = np.where(flair != 0, flair * 0.01 + 5.0, 7.0).astype(np.float64)  # any scale, constant background
    np.testing.assert_array_equal(postprocess(classes, [{"name": "ed_growth"}], images={"flair": shifted}), grown)
    # depth 1 takes the rim's first plane; percentile 0 lets the healthy-looking shell in, `depth` voxels out.
    one = postprocess(classes, [{"name": "ed_growth", "depth": 1}], images={"flair": flair})
    assert (one[22, 12:22, 12:22] == 2).all() and (one == 2).sum() == (classes == 2).sum() + 10 * 10
    everywhere = postprocess(classes, [{"name": "ed_growth", "percentile": 0}], images={"flair": flair})
    assert (everywhere > 0).sum() == 16 ** 3  # the 10^3 tumour grown by 3 voxels every way
    # gli's classes: SNFH.
    as_gli, gli = _as_task(classes, "gli")
    snfh = gli.names.index("SNFH")
    grown_gli = postprocess(as_gli, [{"name": "ed_growth"}], scheme="gli", images={"flair": flair})
    assert (grown_gli[22:24, 12:22, 12:22] == snfh).all() and (grown_gli > 0).sum() == (grown > 0).sum()


def test_ed_growth_needs_the_flair_an_oedema_class_and_a_tumour():
    from bratskeras.predict.postprocessing import check_steps

    classes, flair = _rim_case()
    with pytest.raises(ValueError, match=r"reads the flair image, which is not among the model's inputs \(t1ce\)"):
        check_steps([{"name": "ed_growth"}], modalities=("t1ce",))
    with pytest.raises(ValueError, match="needs an oedema class .* the menrt scheme has GTV"):
        check_steps([{"name": "ed_growth"}], scheme="menrt")
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        check_steps([{"name": "ed_growth", "depth": 0}])
    with pytest.raises(ValueError, match="needs a class map"):
        postprocess(classes > 0, [{"name": "ed_growth"}], images={"flair": flair})
    nothing = np.zeros_like(classes)
    np.testing.assert_array_equal(postprocess(nothing, [{"name": "ed_growth"}], images={"flair": flair}), nothing)


def _enhancing_rim_case():
    """A brain with T1c uniform in 95..105 and a glioblastoma: NCR core, an ET rim (T1c 200) 1 voxel thick
    that the annotators would draw 3 voxels thick (the 2 planes outside it, T1c 200, predicted oedema), the
    oedema around it (T1c 100); and a bright spot (T1c 200) 3 voxels out from the ET, in the oedema."""
    rng = np.random.default_rng(3)
    t1ce = np.zeros((40, 40, 40), np.float32)
    t1ce[2:38, 2:38, 2:38] = rng.uniform(95, 105, (36, 36, 36))
    classes = np.zeros(t1ce.shape, np.uint8)
    classes[8:30, 8:30, 8:30] = 2
    classes[14:24, 14:24, 14:24] = 3
    classes[15:23, 15:23, 15:23] = 1
    t1ce[8:30, 8:30, 8:30] = 100.0
    t1ce[12:26, 12:26, 12:26] = 200.0  # the rim as drawn: the predicted 1-voxel shell and 2 planes outside it
    t1ce[15:23, 15:23, 15:23] = 60.0  # necrosis
    t1ce[9, 18:20, 18:20] = 200.0  # the spot: 3 voxels outside the drawn rim, 5 from the predicted ET
    return classes, t1ce


def test_et_growth_grows_an_enhancing_rim_into_bright_t1c_next_to_it():
    classes, t1ce = _enhancing_rim_case()
    grown = postprocess(classes, [{"name": "et_growth"}], images={"t1ce": t1ce})
    expected = classes.copy()
    expected[(t1ce == 200.0) & (classes == 2)] = 3
    expected[9, 18:20, 18:20] = 2  # the spot lies past the depth of 2: it stays oedema
    np.testing.assert_array_equal(grown, expected)
    assert (grown == 3).sum() == 14 ** 3 - 8 ** 3 and (grown > 0).sum() == (classes > 0).sum()
    shifted = np.where(t1ce != 0, t1ce * 0.01 + 5.0, 7.0).astype(np.float64)  # any scale, constant background
    np.testing.assert_array_equal(postprocess(classes, [{"name": "et_growth"}], images={"t1ce": shifted}), grown)
    # depth 1 takes one plane; the NCR core is dark and never grows.
    one = postprocess(classes, [{"name": "et_growth", "depth": 1}], images={"t1ce": t1ce})
    assert (one == 3).sum() == 12 ** 3 - 8 ** 3 and (one == 1).sum() == 8 ** 3
    # Oedema as bright as healthy brain does not grow the rim, nor does a rim past the brain's brightest with P 100.
    flat = np.where((t1ce == 200.0) & (classes == 2), 100.0, t1ce).astype(np.float32)
    np.testing.assert_array_equal(postprocess(classes, [{"name": "et_growth"}], images={"t1ce": flat}), classes)
    brightest = postprocess(classes, [{"name": "et_growth", "percentile": 100}], images={"t1ce": t1ce})
    np.testing.assert_array_equal(brightest, grown)
    # Outside the predicted tumour nothing grows: the tumour shrunk to the rim and core, no oedema around it.
    bare = np.where(classes == 2, 0, classes).astype(np.uint8)
    np.testing.assert_array_equal(postprocess(bare, [{"name": "et_growth"}], images={"t1ce": t1ce}), bare)


def test_et_growth_leaves_scattered_et_of_a_non_enhancing_tumour_alone():
    classes, t1ce = _enhancing_rim_case()
    # A low-grade glioma's pattern: a large core with a few ET voxels (3 % of it), bright T1c beside them.
    lgg = np.where(classes == 3, 1, classes).astype(np.uint8)
    lgg[14:16, 14:16, 14:23] = 3
    share = (lgg == 3).sum() / np.isin(lgg, (1, 3)).sum()
    assert 0.02 < share < 0.05
    np.testing.assert_array_equal(postprocess(lgg, [{"name": "et_growth"}], images={"t1ce": t1ce}), lgg)
    grown = postprocess(lgg, [{"name": "et_growth", "share": 0.02}], images={"t1ce": t1ce})
    assert (grown == 3).sum() > (lgg == 3).sum()  # with a lower share the same ET grows
    nothing = np.zeros_like(classes)
    np.testing.assert_array_equal(postprocess(nothing, [{"name": "et_growth"}], images={"t1ce": t1ce}), nothing)


def test_et_growth_takes_the_task_classes_and_checks_its_inputs():
    from bratskeras.predict.postprocessing import check_steps

    classes, t1ce = _enhancing_rim_case()
    as_gli, gli = _as_task(classes, "gli")
    et = gli.names.index("ET")
    grown = postprocess(as_gli, [{"name": "et_growth"}], scheme="gli", images={"t1ce": t1ce})
    classic = postprocess(classes, [{"name": "et_growth"}], images={"t1ce": t1ce})
    np.testing.assert_array_equal(grown == et, classic == 3)
    with pytest.raises(ValueError, match=r"reads the t1ce image, which is not among the model's inputs \(flair\)"):
        check_steps([{"name": "et_growth"}], modalities=("flair",))
    with pytest.raises(ValueError, match="menrt scheme has GTV"):
        check_steps([{"name": "et_growth"}], scheme="menrt")
    with pytest.raises(ValueError, match="fraction must be a number within"):
        check_steps([{"name": "et_growth", "share": -0.1}])
    with pytest.raises(ValueError, match="needs a class map"):
        postprocess(classes > 0, [{"name": "et_growth"}], images={"t1ce": t1ce})
