import os
import time

import numpy as np
import pytest

from bratskeras.data import cache, layouts, preprocessing
from bratskeras.data.preprocessing import PreprocessSettings
from bratskeras.synth import phantoms as synth


def _image(seed=0):
    rng = np.random.default_rng(seed)
    image = np.zeros((20, 18, 16, 2), dtype=np.float32)
    image[3:15, 4:14, 2:12] = rng.uniform(50, 500, size=(12, 10, 10, 2))
    return image


def test_zscore_inside_mask_and_zero_outside():
    image = _image()
    out = preprocessing.zscore(image)
    mask = image[..., 0] != 0
    for c in range(2):
        assert abs(out[..., c][mask].mean()) < 1e-5
        assert abs(out[..., c][mask].std() - 1) < 1e-4
    assert not out[~mask].any()


@pytest.mark.parametrize("settings", [
    PreprocessSettings(crop="bbox"),
    PreprocessSettings(crop="bbox", margin=3),
    PreprocessSettings(crop="center", crop_size=(12, 24, 8)),  # crops some axes, pads another
    PreprocessSettings(crop="none"),
])
def test_uncrop_inverts_crop_exactly(settings):
    image = _image()
    cropped, _, geometry = preprocessing.preprocess(image, None, settings)
    if settings.crop == "center":
        assert cropped.shape[:3] == (12, 24, 8)
    restored = preprocessing.uncrop(cropped, geometry)
    expected = preprocessing.uncrop(preprocessing.crop(preprocessing.zscore(image), geometry), geometry)
    assert restored.shape == image.shape and np.array_equal(restored, expected)
    if settings.crop != "center":  # a brain-box crop loses nothing
        assert np.array_equal(restored, preprocessing.zscore(image))


def test_bbox_crop_is_brain_box():
    settings = PreprocessSettings(crop="bbox", margin=1)
    geometry = preprocessing.crop_geometry(_image(), settings)
    assert geometry["start"] == (2, 3, 1) and geometry["size"] == (14, 12, 12)


def test_cache_hits_and_invalidates(tmp_path):
    synth.write_dataset(tmp_path / "d", cases=1, shape=(20, 20, 16), layout="brats2021")
    case = layouts.discover(tmp_path / "d").cases[0]
    first = cache.cache_case(case, tmp_path / "c")
    image, seg, fg = first.load()
    assert isinstance(image, np.memmap) and image.dtype == np.float32 and seg.dtype == np.uint8
    assert len(fg) == int((seg > 0).sum()) and (seg[tuple(fg.T)] > 0).all()
    assert cache.cache_case(case, tmp_path / "c").folder == first.folder  # reused

    half = cache.cache_case(case, tmp_path / "c", settings=PreprocessSettings(dtype="float16"))
    assert half.folder != first.folder and half.load()[0].dtype == np.float16
    flair_only = cache.cache_case(case, tmp_path / "c", modalities=("flair",))
    assert flair_only.folder != first.folder and flair_only.load()[0].shape[-1] == 1

    # Rewrite a source file with new content: the key changes and the new data is served.
    image_file = case.modalities["flair"]
    import nibabel as nib
    source = nib.load(image_file)
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj) // 2, source.affine), image_file)
    os.utime(image_file, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    refreshed = cache.cache_case(case, tmp_path / "c")
    assert refreshed.folder != first.folder
    assert not np.array_equal(refreshed.load()[0], first.load()[0])
    assert not any(p.name.startswith(".") for p in (tmp_path / "c").iterdir())  # no temp leftovers


def test_resampling_to_a_target_spacing_and_back():
    """nnU-Net's target spacing: the crop goes to 2 mm (image trilinear, labels nearest); restore_grid goes back."""
    rng = np.random.default_rng(0)
    image = np.zeros((20, 22, 16, 2), np.float32)
    image[2:18, 3:19, 2:14] = rng.normal(5, 1, size=(16, 16, 12, 2))
    seg = np.zeros((20, 22, 16), np.uint8)
    # Boxes on 2-voxel blocks of the crop (which starts at 2, 3, 2), so 2 mm holds them exactly.
    seg[6:14, 7:15, 4:12] = 2
    seg[8:12, 9:13, 6:10] = 3
    settings = PreprocessSettings(crop="bbox", spacing=(2, 2, 2))
    out_image, out_seg, geometry = preprocessing.preprocess(image, seg, settings, spacing=(1.0, 1.0, 1.0))
    assert geometry["size"] == (16, 16, 12) and geometry["resampled_size"] == (8, 8, 6)
    assert out_image.shape == (8, 8, 6, 2) and out_seg.shape == (8, 8, 6)
    assert set(np.unique(out_seg)) == {0, 2, 3}  # nearest: no label values in between
    # A block of 2 mm voxels covers the same place at 1 mm: the tumor box stays where it was.
    restored = preprocessing.restore_grid(out_seg, geometry, order=0)
    assert restored.shape == (16, 16, 12)
    np.testing.assert_array_equal(preprocessing.uncrop(restored, geometry), seg)
    # Probabilities go back trilinearly, channels kept.
    probabilities = np.stack([out_seg == 0, out_seg > 0], axis=-1).astype(np.float32)
    back = preprocessing.restore_grid(probabilities, geometry)
    assert back.shape == (16, 16, 12, 2) and back.dtype == np.float32
    np.testing.assert_allclose(back.sum(-1), 1.0, atol=1e-6)
    # Anisotropic source (1 x 1 x 2 mm) to 1 mm: the third axis doubles.
    _, _, aniso = preprocessing.preprocess(image, None, PreprocessSettings(crop="none", spacing=(1, 1, 1)),
                                           spacing=(1.0, 1.0, 2.0))
    assert aniso["resampled_size"] == (20, 22, 32)
    # At the source spacing nothing is resampled.
    _, _, same = preprocessing.preprocess(image, None, PreprocessSettings(spacing=(1, 1, 1)), spacing=(1, 1, 1))
    assert "resampled_size" not in same
    with pytest.raises(ValueError, match="needs the source spacing"):
        preprocessing.preprocess(image, None, settings)
    with pytest.raises(ValueError, match="three positive voxel sizes"):
        PreprocessSettings(spacing=(2, 0, 2))


# ------------------------------------------------------------- real inputs: backgrounds, dtypes, scales


def _synth_image(shape=(32, 30, 24), seed=0):
    """A synth phantom's four modalities as float32 (D, H, W, 4), background exactly 0."""
    images, _ = synth.make_case(shape, seed=seed)
    return np.stack([images[m] for m in layouts.MODALITIES], axis=-1).astype(np.float32)


@pytest.mark.parametrize("background", [-1024.0, -1.5, 0.5])
def test_a_constant_background_is_background_bit_for_bit(background):
    """A tool's constant outside the brain (a negative minimum, a small positive value) acts as 0 does."""
    image = _synth_image()
    brain = image != 0
    assert not np.isin(background, image[brain])
    filled = np.where(brain, image, np.float32(background))
    assert preprocessing.background_value(filled[..., 0]) == np.float32(background)
    np.testing.assert_array_equal(preprocessing.foreground_mask(filled), brain.any(-1))
    assert preprocessing.brain_bbox(filled) == preprocessing.brain_bbox(image)
    for settings in (PreprocessSettings(), PreprocessSettings(margin=2, spacing=(2, 2, 2))):
        expected, _, expected_geometry = preprocessing.preprocess(image, None, settings, spacing=(1, 1, 1))
        out, _, geometry = preprocessing.preprocess(filled, None, settings, spacing=(1, 1, 1))
        assert geometry == expected_geometry
        np.testing.assert_array_equal(out, expected)


def test_zero_is_background_unless_a_constant_fills_border_and_volume():
    rng = np.random.default_rng(0)
    head = rng.uniform(1, 2, size=(30, 30, 30)).astype(np.float32)
    # Noise everywhere (a head that is not skull-stripped): no constant, so 0 is background.
    assert preprocessing.background_value(head) == 0
    # A constant on more than half the border but under a fifth of the volume: a frame, not background.
    framed = head.copy()
    framed[0], framed[-1], framed[:, 0], framed[:, -1] = 5, 5, 5, 5
    assert np.count_nonzero(framed == 5) < 0.2 * framed.size
    assert preprocessing.background_value(framed) == 0
    # The same constant around a smaller brain fills a large share of the volume: background.
    small = np.full(head.shape, 5, np.float32)
    small[5:25, 5:25, 5:25] = head[5:25, 5:25, 5:25]
    assert preprocessing.background_value(small) == 5
    # A brain that reaches the border on every face keeps the zero rule.
    touching = np.zeros(head.shape, np.float32)
    touching[:, 5:25, 5:25] = head[:, 5:25, 5:25]
    touching[5:25, :, 5:25] = head[5:25, :, 5:25]
    touching[5:25, 5:25, :] = head[5:25, 5:25, :]
    assert preprocessing.background_value(touching) == 0
    np.testing.assert_array_equal(preprocessing.channel_foreground(touching), touching != 0)


@pytest.mark.parametrize("exponent", [-100, -60, 60, 100])
def test_zscore_is_exact_at_any_power_of_two_scale(exponent):
    """Scales whose squares would underflow or overflow float32 give the very same z-scores."""
    image = _synth_image()
    scaled = np.ldexp(image, exponent)
    assert np.isfinite(scaled).all() and (np.count_nonzero(scaled) == np.count_nonzero(image))
    np.testing.assert_array_equal(preprocessing.zscore(scaled), preprocessing.zscore(image))


@pytest.mark.parametrize("peak", [1.0, 1e6])
def test_zscore_of_rescaled_float64_intensities(peak):
    """0..1 and 0..1e6 float64 intensities z-score like the int16 originals (float32 rounding only)."""
    image = _synth_image()
    rescaled = image.astype(np.float64) * (peak / image.max())
    np.testing.assert_allclose(preprocessing.zscore(rescaled), preprocessing.zscore(image), atol=2e-5)


def _save(array, path, like, slope_inter=None):
    """Writes `array` as NIfTI with `like`'s affine; `slope_inter` stores it scaled (scl_slope, scl_inter)."""
    import nibabel as nib

    image = nib.Nifti1Image(array, nib.load(like).affine)
    if slope_inter:
        image.header.set_slope_inter(*slope_inter)
    nib.save(image, path)


def _rewrite_real_world(case):
    """Rewrites a synth case's images the ways real files come (the values in the brain kept exactly).

    t1: float64, background the image's minimum minus one (negative); t1ce:
    int16 raw with scl_slope 0.5, scl_inter -7, so its background reads as
    -7; t2: uint16; flair: float64 on a 0..1e6 scale (not exact: rescaled).
    """
    import nibabel as nib

    arrays = {m: np.asarray(nib.load(p).dataobj) for m, p in case.modalities.items()}
    brain = arrays["t1"] != 0
    t1 = arrays["t1"].astype(np.float64)
    _save(np.where(brain, t1, -1.0 - t1.max()), case.modalities["t1"], case.modalities["t1"])
    t1ce = arrays["t1ce"].astype(np.int32)
    raw = np.where(arrays["t1ce"] != 0, 2 * (t1ce + 7), 0).astype(np.int16)
    _save(raw, case.modalities["t1ce"], case.modalities["t1ce"], slope_inter=(0.5, -7.0))
    _save(arrays["t2"].astype(np.uint16), case.modalities["t2"], case.modalities["t2"])
    flair = arrays["flair"].astype(np.float64)
    _save(flair * (1e6 / flair.max()), case.modalities["flair"], case.modalities["flair"])


def test_float64_scaled_and_constant_background_files_cache_like_zero_background(tmp_path):
    """Through volumes.read_case and fit's cache: dtypes, scl_slope/inter and backgrounds do not change the input."""
    from bratskeras.data import volumes

    for name in ("plain", "real"):
        synth.write_dataset(tmp_path / name, cases=1, shape=(32, 30, 24), layout="brats2021", seed=3)
    plain, real = (layouts.discover(tmp_path / n).cases[0] for n in ("plain", "real"))
    _rewrite_real_world(real)
    image, _, _ = volumes.read_case(real)
    assert image.dtype == np.float32
    assert preprocessing.background_value(image[..., layouts.MODALITIES.index("t1ce")]) == -7.0
    expected = cache.cache_case(plain, tmp_path / "c").load()[0]
    got = cache.cache_case(real, tmp_path / "c").load()[0]
    assert got.shape == expected.shape
    exact = [layouts.MODALITIES.index(m) for m in ("t1", "t1ce", "t2")]
    np.testing.assert_array_equal(got[..., exact], expected[..., exact])
    flair = layouts.MODALITIES.index("flair")
    np.testing.assert_allclose(got[..., flair], expected[..., flair], atol=2e-5)


def test_values_beyond_float32_are_refused_by_name(tmp_path):
    from bratskeras.core.errors import DataError
    from bratskeras.data import volumes

    synth.write_dataset(tmp_path / "d", cases=1, shape=(16, 16, 12), layout="brats2021")
    path = layouts.discover(tmp_path / "d").cases[0].modalities["t1"]
    import nibabel as nib

    array = np.asarray(nib.load(path).dataobj).astype(np.float64)
    array /= array.max()
    _save(array * 3e38, path, path)
    np.testing.assert_allclose(volumes.load_nifti(path)[0], array * 3e38, rtol=1e-7)  # within float32: read
    _save(array * 1e40, path, path)
    with pytest.raises(DataError, match=r"t1\.nii\.gz: values up to .* exceed float32's range"):
        volumes.load_nifti(path)
