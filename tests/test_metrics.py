import itertools

import keras
import numpy as np
import pytest

from bratskeras.core.labels import get_scheme, labels_to_classes, to_classic
from bratskeras.core.targets import classes_to_target
from bratskeras.evaluate import voxelwise as V
from bratskeras.models import losses as L
from bratskeras.models import metrics as M

# ---------------------------------------------------------------- per-case numpy


def test_dice_sensitivity_specificity_hand_computed():
    pred = np.array([1, 1, 0, 0], bool).reshape(2, 2, 1)
    ref = np.array([1, 0, 0, 0], bool).reshape(2, 2, 1)
    assert V.dice(pred, ref) == pytest.approx(2 / 3)
    assert V.sensitivity(pred, ref) == 1.0
    assert V.specificity(pred, ref) == pytest.approx(2 / 3)
    assert V.sensitivity(ref, pred) == 0.5


def test_empty_mask_rules():
    empty = np.zeros((3, 3, 3), bool)
    one = empty.copy()
    one[1, 1, 1] = True
    assert V.dice(empty, empty) == 1.0 and V.hd95(empty, empty) == 0.0
    assert V.dice(one, empty) == 0.0 and V.dice(empty, one) == 0.0
    assert V.hd95(one, empty) == V.hd95(empty, one) == V.EMPTY_HD95 == 373.13
    assert V.sensitivity(one, empty) == 1.0  # nothing to find
    assert V.specificity(empty, np.ones_like(empty)) == 1.0  # nothing to reject


def test_empty_hd95_is_the_brats_volume_diagonal():
    assert V.EMPTY_HD95 == pytest.approx(np.sqrt(240**2 + 240**2 + 155**2), abs=0.005)


def test_hd95_single_voxels_anisotropic():
    pred = np.zeros((3, 3, 5), bool)
    ref = np.zeros((3, 3, 5), bool)
    pred[0, 0, 0] = ref[0, 0, 3] = True
    assert V.hd95(pred, ref, spacing=(1, 1, 2)) == pytest.approx(6.0)


def _surface_brute_force(mask):
    # Surface by definition: a voxel with a 6-neighbour outside the mask or the array.
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1, 1:-1].copy()
    for axis, shift in itertools.product(range(3), (-1, 1)):
        interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~interior


def _hd95_brute_force(a, b, spacing):
    pa = np.argwhere(_surface_brute_force(a)) * spacing
    pb = np.argwhere(_surface_brute_force(b)) * spacing
    distances = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return np.percentile(np.concatenate([distances.min(1), distances.min(0)]), 95)


def _sphere(shape, centre, radius_mm, spacing):
    grid = np.indices(shape).astype(float)
    offsets = [(grid[i] - centre[i]) * spacing[i] for i in range(3)]
    return sum(o**2 for o in offsets) <= radius_mm**2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 0.8, 2.5)])
@pytest.mark.parametrize("shift", [(0, 0, 0), (2, 1, 0), (0, 3, 1)])
def test_hd95_shifted_spheres_against_brute_force(spacing, shift):
    shape = (24, 22, 14)
    a = _sphere(shape, (11, 10, 6), 6.0, spacing)
    b = _sphere(shape, np.add((11, 10, 6), shift), 5.0, spacing)
    assert V.hd95(a, b, spacing) == pytest.approx(_hd95_brute_force(a, b, np.array(spacing)), rel=1e-9)


def test_hd95_mask_touching_the_array_border():
    a = np.zeros((6, 6, 6), bool)
    a[:3] = True  # touches three faces of the array
    b = np.zeros_like(a)
    b[:4, 1:5, 1:5] = True
    assert V.hd95(a, b) == pytest.approx(_hd95_brute_force(a, b, np.ones(3)))


def test_case_metrics_keys_and_values():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[0, 0, 0] = 1  # NCR
    ref[0, 0, 1] = 2  # ED
    ref[0, 0, 2] = 3  # ET
    pred = ref.copy()
    pred[0, 0, 2] = 1  # ET predicted as NCR
    result = V.case_metrics(pred, ref, spacing=(1, 1, 1))
    expected_keys = {f"{m}_{s}" for m in ("dice", "hd95", "sensitivity", "specificity") for s in V.STRUCTURES}
    assert set(result) == expected_keys
    assert result["dice_wt"] == 1.0 and result["hd95_wt"] == 0.0
    assert result["dice_tc"] == 1.0
    assert result["dice_et"] == 0.0 and result["hd95_et"] == 373.13
    assert result["dice_ncr"] == pytest.approx(2 / 3) and result["sensitivity_ncr"] == 1.0
    assert result["specificity_ncr"] == pytest.approx(62 / 63)
    assert result["dice_ed"] == 1.0


@pytest.mark.parametrize("scheme, et_label", [("brats2020", 4), ("brats2023", 3)])
def test_region_mapping_for_both_label_schemes(scheme, et_label):
    seg = np.array([0, 1, 2, et_label]).reshape(4, 1, 1)
    classes = labels_to_classes(seg, scheme)
    assert [V.structure_mask(classes, s).ravel().tolist() for s in ("wt", "tc", "et", "ncr", "ed")] == [
        [0, 1, 1, 1],
        [0, 1, 0, 1],
        [0, 0, 0, 1],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
    ]


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        V.dice(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="spacing"):
        V.hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1, 1))
    with pytest.raises(ValueError, match="structure"):
        M.DiceScore("tc", target="whole_tumor")
    with pytest.raises(ValueError, match="target"):
        M.dice_metrics("labels")


# ---------------------------------------------------------------- Keras metrics


def _one_hot_logits(classes):
    return np.eye(4, dtype="float32")[classes] * 10.0


def test_streaming_dice_pools_batches_of_different_sizes():
    metric = M.DiceScore("wt", target="classes")
    # batch 1 (1 sample): I = 1, |A| + |B| = 2
    ref1 = np.zeros((1, 2, 2, 2), np.uint8)
    ref1[0, 0, 0, 0] = 2
    metric.update_state(ref1[..., None], _one_hot_logits(ref1))
    # batch 2 (2 samples): reference has 4 tumor voxels, prediction none: I = 0, volume 4
    ref2 = np.zeros((2, 2, 2, 2), np.uint8)
    ref2[:, 0, 0, :] = 1
    metric.update_state(ref2[..., None], _one_hot_logits(np.zeros_like(ref2)))
    assert float(metric.result()) == pytest.approx(2 / 6)  # not (1 + 0) / 2
    metric.reset_state()
    assert float(metric.result()) == 1.0  # empty epoch: empty vs empty


def test_dice_metrics_names_per_target():
    assert [m.name for m in M.dice_metrics("classes")] == ["dice_wt", "dice_tc", "dice_et", "dice_ncr", "dice_ed"]
    assert [m.name for m in M.dice_metrics("regions")] == ["dice_wt", "dice_tc", "dice_et", "dice_ncr", "dice_ed"]
    assert [m.name for m in M.dice_metrics("whole_tumor")] == ["dice_wt"]


def _dice_values(target, from_logits, y_true, y_pred, scheme=None):
    values = {}
    for metric in M.dice_metrics(target, from_logits=from_logits, scheme=scheme):
        metric.update_state(y_true, y_pred)
        values[metric.name] = float(metric.result())
    return values


def test_keras_dice_agrees_with_numpy_for_every_target():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 4, size=(2, 5, 5, 5)).astype(np.uint8)
    pred = rng.integers(0, 4, size=(2, 5, 5, 5)).astype(np.uint8)
    expected = {f"dice_{s}": V.dice(V.structure_mask(pred, s), V.structure_mask(ref, s)) for s in V.STRUCTURES}
    by_classes = _dice_values("classes", True, ref[..., None], _one_hot_logits(pred))
    assert by_classes == pytest.approx(expected)
    # Regions as sigmoid probabilities (0.9 / 0.1) and as logits (+-3).
    regions = classes_to_target(pred, "regions")
    probs = np.where(regions > 0, 0.9, 0.1).astype("float32")
    assert _dice_values("regions", False, classes_to_target(ref, "regions"), probs) == pytest.approx(expected)
    logits = (6 * regions - 3).astype("float32")
    assert _dice_values("regions", True, classes_to_target(ref, "regions"), logits) == pytest.approx(expected)
    wt = _dice_values("whole_tumor", False, classes_to_target(ref, "whole_tumor"), probs[..., :1])
    assert wt == pytest.approx({"dice_wt": expected["dice_wt"]})


@pytest.mark.parametrize("scheme", ["gli", "ped", "menrt"])
def test_keras_dice_of_a_task_s_classes_and_regions_scores_the_classic_structures(scheme):
    """A task model's logged Dice (classes or its own regions) is the classic structures' Dice of its classes."""
    rng = np.random.default_rng(2)
    count = len(get_scheme(scheme).labels)
    ref = rng.integers(0, count, size=(2, 5, 5, 5)).astype(np.uint8)
    pred = rng.integers(0, count, size=(2, 5, 5, 5)).astype(np.uint8)
    classic_ref, classic_pred = to_classic(ref, scheme), to_classic(pred, scheme)
    expected = {f"dice_{s}": V.dice(V.structure_mask(classic_pred, s), V.structure_mask(classic_ref, s))
                for s in V.STRUCTURES}
    logits = np.where(np.eye(count, dtype=bool)[pred], 5.0, -5.0).astype("float32")
    assert _dice_values("classes", True, ref[..., None], logits, scheme) == pytest.approx(expected)
    regions = classes_to_target(pred, "regions", scheme)
    assert _dice_values("regions", True, classes_to_target(ref, "regions", scheme), 6 * regions - 3,
                        scheme) == pytest.approx(expected)
    metric = M.DiceScore("tc", target="regions", scheme=scheme)
    assert M.DiceScore.from_config(metric.get_config()).get_config() == metric.get_config()


def test_keras_dice_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        metric = M.DiceScore("et")
        metric.update_state(np.zeros((1, 2, 2, 2, 1)), np.zeros((1, 2, 2, 2, 4), "float16"))
        assert metric.dtype == "float32" and metric.result().dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ---------------------------------------------------------------- save / load


def _save_load(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_classes_model_with_losses_and_metrics_reloads_safe_mode(tmp_path):
    from bratskeras.models import build_model

    model = build_model("lightweight-unet", input_shape=(16, 16, 16, 4), base_filters=4)
    model.compile(
        optimizer="adam",
        loss=L.DiceCELoss(ce_weight=0.4, dice_weight=0.6),
        metrics=M.dice_metrics("classes", from_logits=True),
    )
    # As bratskeras' fit does: built inside the first trace, the optimizer's variables would make
    # tf.function trace the train step twice.
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 16, 16, 16, 4)).astype("float32")
    y = rng.integers(0, 4, size=(1, 16, 16, 16, 1)).astype("uint8")
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert {"loss", "dice_wt", "dice_tc", "dice_et", "dice_ncr", "dice_ed"} <= set(logs)
    restored = _save_load(model, tmp_path)
    assert isinstance(restored.loss, L.DiceCELoss) and restored.loss.get_config()["ce_weight"] == 0.4
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    after = restored.evaluate(x, y, verbose=0, return_dict=True)
    assert after == pytest.approx(before, rel=1e-5)


@pytest.mark.parametrize(
    "loss, target, channels",
    [
        (L.RegionDiceBCELoss(bce_weight=0.5), "regions", 3),
        (L.FlairDiceLoss(form="one_minus", from_logits=True), "whole_tumor", 1),
        (L.SensitivitySpecificityLoss(sensitivity_weight=0.8, specificity_weight=0.2, from_logits=True), "whole_tumor", 1),
        (L.SoftDiceLoss(include_background=False), "classes", 4),
        (L.CrossEntropyLoss(), "classes", 4),
    ],
)
def test_sigmoid_and_other_losses_reload_safe_mode(tmp_path, loss, target, channels):
    inputs = keras.Input((4, 4, 4, 2))
    model = keras.Model(inputs, keras.layers.Conv3D(channels, 1, name="head")(inputs))
    model.compile(optimizer="sgd", loss=loss, metrics=M.dice_metrics(target, from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 4, 2)).astype("float32")
    y = classes_to_target(rng.integers(0, 4, size=(2, 4, 4, 4)), target)
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    restored = _save_load(model, tmp_path)
    assert restored.loss.get_config() == loss.get_config()
    assert restored.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(before, rel=1e-5)
