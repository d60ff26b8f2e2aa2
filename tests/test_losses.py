import keras
import numpy as np
import pytest
import tensorflow as tf

from bratskeras.models import losses as L


def vol(values, channels=1):
    """Values laid out as (1, n, 1, 1, channels)."""
    return np.asarray(values, "float32").reshape(1, -1, 1, 1, channels)


PROBS_2CLASS = vol([[1, 0], [0.5, 0.5]], channels=2)
CLASSES_2 = vol([0, 1])


@pytest.mark.parametrize(
    "fn, y_true, y_pred, kwargs, expected",
    [
        # (2*1.5 + 1) / (1.5 + 2 + 1)
        (L.flair_dice_loss, vol([1, 1, 0, 0]), vol([0.5, 1, 0, 0]), {}, -4 / 4.5),
        (L.flair_dice_loss, vol([1, 1, 0, 0]), vol([0.5, 1, 0, 0]), {"form": "one_minus"}, 0.5 / 4.5),
        # class 0: 3/3.5, class 1: 2/2.5
        (L.soft_dice_loss, CLASSES_2, PROBS_2CLASS, {"from_logits": False}, 1 - (6 / 7 + 4 / 5) / 2),
        (L.soft_dice_loss, CLASSES_2, PROBS_2CLASS, {"from_logits": False, "include_background": False}, 0.2),
        (L.cross_entropy_loss, CLASSES_2, PROBS_2CLASS, {"from_logits": False}, np.log(2) / 2),
        (
            L.dice_ce_loss,
            CLASSES_2,
            PROBS_2CLASS,
            {"from_logits": False},
            0.3 * np.log(2) / 2 + 0.7 * (1 - (6 / 7 + 4 / 5) / 2),
        ),
        (
            L.dice_ce_loss,
            CLASSES_2,
            PROBS_2CLASS,
            {"from_logits": False, "ce_weight": 1.0, "dice_weight": 0.0},
            np.log(2) / 2,
        ),
        (L.region_dice_bce_loss, vol([1, 0]), vol([0.5, 0.5]), {"from_logits": False}, 1 / 3 + np.log(2)),
        # logits 0 are probabilities 0.5
        (L.region_dice_bce_loss, vol([1, 0]), vol([0.0, 0.0]), {}, 1 / 3 + np.log(2)),
        (L.sensitivity_specificity_loss, vol([1, 0]), vol([0.5, 0.5]), {}, -0.75),
        # sens = (1 + 1)/(1 + 1), spec = (0 + 1)/(1 + 1): -(0.9 * 1 + 0.1 * 0.5)
        (L.sensitivity_specificity_loss, vol([1, 0]), vol([1.0, 1.0]), {}, -0.95),
    ],
)
def test_hand_computed_values(fn, y_true, y_pred, kwargs, expected):
    assert float(fn(y_true, y_pred, **kwargs)) == pytest.approx(expected, abs=1e-6)


def test_region_dice_is_mean_over_channels():
    # Channel 0 perfect (Dice (2+1)/(2+1) = 1), channel 1 empty target, p = 1 (Dice 1/(1+1)).
    y_true = vol([[1, 0]], channels=2)
    y_pred = vol([[1, 1]], channels=2)
    loss = L.region_dice_bce_loss(y_true, y_pred, from_logits=False, bce_weight=0.0)
    assert float(loss) == pytest.approx(1 - (1 + 0.5) / 2)


def test_empty_target_and_prediction_are_perfect():
    zeros = np.zeros((2, 3, 3, 3, 1), "float32")
    assert float(L.flair_dice_loss(zeros, zeros)) == pytest.approx(-1.0)
    assert float(L.flair_dice_loss(zeros, zeros, form="one_minus")) == pytest.approx(0.0)
    background = np.zeros((2, 3, 3, 3, 4), "float32")
    background[..., 0] = 1.0
    assert float(L.soft_dice_loss(zeros, background, from_logits=False)) == pytest.approx(0.0)


def test_keras_dice_flaw_and_ours():
    # An all-background volume predicted perfectly as background.
    y_true = np.zeros((1, 4, 4, 4, 1), "float32")
    y_pred = np.zeros((1, 4, 4, 4, 1), "float32")
    keras_loss = float(keras.losses.Dice()(y_true, y_pred))
    assert keras_loss == pytest.approx(1.0)  # epsilon only in the denominator: 0 / eps
    ours = float(L.flair_dice_loss(y_true, y_pred, form="one_minus"))
    assert ours == pytest.approx(0.0)
    # And ours still penalises predicting tumor where there is none.
    assert float(L.flair_dice_loss(y_true, np.ones_like(y_pred), form="one_minus")) > 0.9


def test_class_targets_of_rank_4_and_float_dtype():
    rank5 = L.soft_dice_loss(CLASSES_2.astype("uint8"), PROBS_2CLASS, from_logits=False)
    rank4 = L.soft_dice_loss(CLASSES_2[..., 0], PROBS_2CLASS, from_logits=False)
    # 0.9999999 must count as class 1
    near = L.soft_dice_loss(CLASSES_2 - 1e-7, PROBS_2CLASS, from_logits=False)
    assert float(rank5) == pytest.approx(float(rank4)) == pytest.approx(float(near))


ALL_LOSSES = [
    ("flair_dice", "binary", {"from_logits": True}),
    ("soft_dice", "classes", {}),
    ("cross_entropy", "classes", {}),
    ("dice_ce", "classes", {}),
    ("region_dice_bce", "regions", {}),
    ("sensitivity_specificity", "binary", {"from_logits": True}),
]


def _targets(kind, value):
    shape = (2, 4, 4, 4)
    if kind == "classes":
        return np.full(shape + (1,), 3 * value, "uint8"), 4
    channels = 3 if kind == "regions" else 1
    return np.full(shape + (channels,), value, "float32"), channels


@pytest.mark.parametrize("name, kind, kwargs", ALL_LOSSES)
@pytest.mark.parametrize("value", [0, 1], ids=["empty", "full"])
def test_gradients_finite_for_empty_and_full_targets(name, kind, kwargs, value):
    y_true, channels = _targets(kind, value)
    loss = L.get_loss(name, **kwargs)
    for logit in (-30.0, 0.0, 30.0):  # saturated and undecided outputs
        logits = tf.Variable(np.full(y_true.shape[:-1] + (channels,), logit, "float32"))
        with tf.GradientTape() as tape:
            value_ = loss(y_true, logits)
        grad = tape.gradient(value_, logits)
        assert np.isfinite(float(value_))
        assert np.all(np.isfinite(grad.numpy()))


@pytest.fixture
def mixed_policy(request):
    keras.mixed_precision.set_global_policy("mixed_" + request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name, kind, kwargs", ALL_LOSSES)
@pytest.mark.parametrize("mixed_policy", ["float16", "bfloat16"], indirect=True)
def test_float32_output_under_mixed_precision(name, kind, kwargs, mixed_policy):
    y_true, channels = _targets(kind, 1)
    logits = np.random.default_rng(0).normal(size=y_true.shape[:-1] + (channels,))
    value = L.get_loss(name, **kwargs)(y_true, tf.cast(logits, mixed_policy))
    assert value.dtype == tf.float32 and np.isfinite(float(value))


def test_pure_functions_compute_in_float32():
    y_pred = tf.cast(PROBS_2CLASS, "float16")
    value = L.soft_dice_loss(CLASSES_2, y_pred, from_logits=False)
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx(1 - (6 / 7 + 4 / 5) / 2, abs=1e-6)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown loss"):
        L.get_loss("dice")
    with pytest.raises(ValueError, match="smooth"):
        L.FlairDiceLoss(smooth=0)
    with pytest.raises(ValueError, match="form"):
        L.FlairDiceLoss(form="positive")
    with pytest.raises(ValueError, match="one-hot"):
        L.soft_dice_loss(np.zeros((1, 2, 1, 1, 4)), np.zeros((1, 2, 1, 1, 4)))
    with pytest.raises(ValueError, match="binary masks"):
        L.region_dice_bce_loss(np.zeros((1, 2, 1, 1, 1)), np.zeros((1, 2, 1, 1, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        L.sensitivity_specificity_loss(vol([1]), vol([1]), sensitivity_weight=-1)


@pytest.mark.parametrize("name", sorted(L.LOSSES))
def test_config_round_trip(name):
    loss = L.get_loss(name, smooth=2.0) if name != "cross_entropy" else L.get_loss(name, from_logits=False)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
