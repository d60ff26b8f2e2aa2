"""bratskeras.data.bias_field: a plane in log intensity, fitted over the brain outside the tumour, divided out."""

import numpy as np
import pytest

from bratskeras.data.bias_field import LEFT_AS_IS, MIN_SAMPLES, divide_linear_field, linear_log_field

SHAPE = (60, 64, 48)


def _head(seed=0, background=0.0):
    """(intensities (D, H, W) of a brain of two noisy tissues inside `background`, the brain mask, a bright lesion)."""
    rng = np.random.default_rng(seed)
    d, h, w = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    brain = ((d - 30) / 26.0) ** 2 + ((h - 32) / 28.0) ** 2 + ((w - 24) / 21.0) ** 2 <= 1
    tissue = np.where(rng.random(SHAPE) < 0.6, 100.0, 90.0) * rng.normal(1.0, 0.05, SHAPE)
    lesion = ((d - 40) ** 2 + (h - 38) ** 2 + (w - 24) ** 2) <= 64
    tissue[lesion] = 190.0
    return np.where(brain, tissue, background).astype(np.float32), brain, lesion


def _biased(volume, brain, slope=(0.012, -0.006, 0.004)):
    """`volume` with exp(slope . index) multiplied into its brain: a 2x brighter top than bottom along D."""
    d, h, w = np.indices(SHAPE)
    field = np.exp(slope[0] * d + slope[1] * h + slope[2] * w).astype(np.float32)
    return np.where(brain, volume * field, volume).astype(np.float32)


def _log_spread(a, b, mask):
    """The standard deviation of log(a / b) over `mask`: 0 when they differ by a constant factor."""
    return float(np.std(np.log(a[mask] / b[mask])))


def test_a_linear_bias_is_measured_and_divided_out():
    volume, brain, lesion = _head()
    biased = _biased(volume, brain)
    assert _log_spread(biased, volume, brain) > 0.1  # the bias to undo: +-~40 % over the brain
    coefficients = linear_log_field(biased, exclude=lesion)
    np.testing.assert_allclose(coefficients[1:], [0.012, -0.006, 0.004], atol=5e-4)
    corrected = divide_linear_field(biased[..., None], exclude=lesion)[..., 0]
    assert corrected.dtype == np.float32 and corrected.shape == SHAPE
    assert _log_spread(corrected, volume, brain) < 0.01  # what is left is a constant factor
    # The field's mean log over the fitted voxels is 0: the brain keeps its overall brightness.
    fitted = brain & ~lesion
    assert abs(np.mean(np.log(corrected[fitted] / biased[fitted]))) < 1e-3


def test_the_excluded_tumour_does_not_pull_the_field():
    volume, brain, _ = _head()
    big_lesion = brain & (np.indices(SHAPE)[0] > 38)  # a bright third of the brain at one end
    volume[big_lesion] = 190.0
    biased = _biased(volume, brain)
    left_out = linear_log_field(biased, exclude=big_lesion)
    pulled = linear_log_field(biased)
    assert abs(left_out[1] - 0.012) < 1.5e-3  # fitted on two thirds of the brain, extrapolated to the rest
    assert abs(pulled[1] - 0.012) > 0.01  # with the lesion in, the trimmed fit takes a quarter of it for bias


def test_any_scale_and_a_constant_background():
    volume, brain, lesion = _head(background=-7.0)
    biased = _biased(volume, brain)
    corrected = divide_linear_field(biased[..., None], exclude=lesion)[..., 0]
    scaled = divide_linear_field((biased * 1000.0)[..., None], exclude=lesion)[..., 0]
    np.testing.assert_array_equal(corrected[~brain], -7.0)  # the background stays as it was
    np.testing.assert_allclose(scaled[brain], corrected[brain] * 1000.0, rtol=1e-4)
    assert _log_spread(corrected, volume, brain) < 0.01


def test_channels_are_fitted_one_by_one_and_a_tiny_brain_is_left_alone():
    volume, brain, lesion = _head()
    flat = volume.copy()
    image = np.stack([_biased(volume, brain), flat, np.zeros(SHAPE, np.float32)], axis=-1)
    tiny = np.zeros(SHAPE, np.float32)
    tiny[:3, :3, :3] = 5.0  # 27 voxels, under MIN_SAMPLES once subsampled
    image[..., 2] = tiny
    corrected = divide_linear_field(image, exclude=lesion)
    assert _log_spread(corrected[..., 0], volume, brain) < 0.01
    assert _log_spread(corrected[..., 1], flat, brain) < 0.005  # a flat channel stays flat
    np.testing.assert_array_equal(corrected[..., 2], tiny)
    assert linear_log_field(tiny) is None and MIN_SAMPLES > 1


@pytest.mark.parametrize("exclude", [None, "all"])
def test_nothing_to_fit_leaves_the_image_unchanged(exclude):
    volume, brain, _ = _head()
    mask = brain if exclude == "all" else None
    if exclude is None:
        volume = np.zeros(SHAPE, np.float32)
    np.testing.assert_array_equal(divide_linear_field(volume[..., None], exclude=mask)[..., 0], volume)


def test_t1ce_is_left_as_it_is_when_the_channels_are_named():
    """LEFT_AS_IS: T1c is not corrected (its plane leans toward enhancing vessels and dura); the others are."""
    volume, brain, lesion = _head()
    biased = _biased(volume, brain)
    image = np.stack([biased, biased, biased], axis=-1)
    corrected = divide_linear_field(image, exclude=lesion, modalities=("flair", "t1ce", "t1"))
    assert "t1ce" in LEFT_AS_IS
    np.testing.assert_array_equal(corrected[..., 1], biased)
    for c in (0, 2):
        assert _log_spread(corrected[..., c], volume, brain) < 0.01
    # Unnamed channels are all corrected.
    unnamed = divide_linear_field(image, exclude=lesion)
    assert _log_spread(unnamed[..., 1], volume, brain) < 0.01
