import os
import time

import numpy as np
import pytest

from bratskeras import cache, layouts, preprocessing, synth
from bratskeras.preprocessing import PreprocessSettings


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
