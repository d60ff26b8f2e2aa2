import numpy as np
import pytest
import tensorflow as tf

from bratskeras.data import cache, layouts
from bratskeras.data import pipeline as data
from bratskeras.data.augmentations import AxialRotation, Mirror, Rot90, ScaleShift
from bratskeras.data.pipeline import Augmentation, PipelineConfig
from bratskeras.synth import phantoms as synth


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synth.write_dataset(root / "d", cases=3, shape=(32, 32, 24), layout="brats2021", seed=1)
    return cache.cache_dataset(layouts.discover(root / "d").cases, root / "c")


def test_splits_are_seeded_sklearn():
    ids = [f"case{i}" for i in range(20)]
    train, val = data.train_val_split(ids)
    assert len(val) == 4 and sorted(train + val) == sorted(ids)
    assert data.train_val_split(ids) == (train, val)
    folds = data.kfold_splits(ids, k=4, seed=0)
    assert sorted(v for _, val in folds for v in val) == sorted(ids)


def test_foreground_fraction_over_many_draws():
    rng = np.random.default_rng(0)
    foreground = np.array([[10, 10, 10], [11, 10, 10]])
    draws = [data.patch_start((40, 40, 30), (16, 16, 16), foreground, rng, 1 / 3) for _ in range(3000)]
    on_tumor = np.mean([flag for _, flag in draws])
    assert abs(on_tumor - 1 / 3) < 0.03
    for start, flag in draws[:200]:
        if flag:  # a tumor-centred patch contains its tumor voxel
            assert ((foreground[0] >= start) & (foreground[0] < start + 16)).all() or \
                   ((foreground[1] >= start) & (foreground[1] < start + 16)).all()
        assert (start >= 0).all() and (start + 16 <= np.array([40, 40, 30])).all()


def test_patch_larger_than_volume_is_padded(cached):
    config = PipelineConfig(patch_size=(48, 48, 48), batch_size=1, augment=False)
    x, y = next(iter(data.train_dataset(cached, config)))
    assert x.shape == (1, 48, 48, 48, 4) and y.dtype == tf.uint8
    assert y.numpy().max() > 0


@pytest.mark.parametrize("target, channels, dtype", [
    ("classes", 1, tf.uint8), ("regions", 3, tf.float32), ("whole_tumor", 1, tf.float32)])
def test_targets(cached, target, channels, dtype):
    config = PipelineConfig(patch_size=(16, 16, 16), batch_size=2, target=target, augment=False, seed=4)
    classes_config = PipelineConfig(patch_size=(16, 16, 16), batch_size=2, augment=False, seed=4)
    _, y = next(iter(data.train_dataset(cached, config)))
    _, classes = next(iter(data.train_dataset(cached, classes_config)))
    assert y.shape == (2, 16, 16, 16, channels) and y.dtype == dtype
    c = classes.numpy()[..., 0]
    if target == "regions":
        assert np.array_equal(y.numpy()[..., 1], np.isin(c, (1, 3)).astype(np.float32))
    if target == "whole_tumor":
        assert np.array_equal(y.numpy()[..., 0], (c > 0).astype(np.float32))


def test_pipeline_is_deterministic_per_seed(cached):
    def first_batches(seed):
        config = PipelineConfig(patch_size=(16, 16, 16), batch_size=2, seed=seed)
        return [x.numpy() for x, _ in data.train_dataset(cached, config).take(3)]

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_augmentation_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(12, 12, 8, 1)).astype(np.uint8)
    # Channel 0 encodes the label; no intensity transform so the encoding survives exactly.
    image = np.concatenate([label.astype(np.float32), rng.normal(size=(12, 12, 8, 1))], -1).astype(np.float32)
    exact = Augmentation((Rot90(), Mirror()))
    changed = 0
    for step in range(12):
        x, y = data.augment_patch(tf.constant(image), tf.constant(label), tf.constant([5, step]), exact)
        assert np.array_equal(x.numpy()[..., 0], y.numpy()[..., 0].astype(np.float32))
        changed += not np.array_equal(y.numpy(), label)
    assert changed > 6


def test_small_rotation_moves_image_and_label_together():
    block = np.zeros((16, 16, 4, 1), dtype=np.uint8)
    block[3:9, 4:12] = 1
    image = block.astype(np.float32)
    config = Augmentation((AxialRotation(degrees=30),))
    x, y = data.augment_patch(tf.constant(image), tf.constant(block), tf.constant([1, 2]), config)
    x_mask, y_mask = x.numpy()[..., 0] > 0.5, y.numpy()[..., 0] > 0
    assert not np.array_equal(y_mask, block[..., 0] > 0)  # it did rotate
    assert np.abs(np.argwhere(x_mask).mean(0) - np.argwhere(y_mask).mean(0)).max() < 0.5
    assert abs(int(x_mask.sum()) - int(y_mask.sum())) <= 0.1 * y_mask.sum()


def _axial_symmetries(volume):
    """The 16 documented flip/rot90 results of a (D, H, W, C) patch: optional D/H transpose, then flips."""
    variants = []
    for transpose in (False, True):
        base = np.swapaxes(volume, 0, 1) if transpose else volume
        for flips in range(8):
            axes = tuple(axis for axis in range(3) if flips >> axis & 1)
            variants.append(np.flip(base, axes) if axes else base)
    return variants


def _same_transform(raw_image, raw_label, image, label):
    """Index of the symmetry that maps the raw (image, label) onto the augmented pair, or None.

    The image may also be scaled and shifted per channel (augmentations.ScaleShift): it must be an
    exact per-channel affine map of the symmetric raw image, found by least squares.
    """
    for k, (moved_image, moved_label) in enumerate(zip(_axial_symmetries(raw_image), _axial_symmetries(raw_label))):
        if not np.array_equal(moved_label, label):
            continue
        fits = True
        for channel in range(image.shape[-1]):
            source = moved_image[..., channel].ravel().astype(np.float64)
            design = np.stack([source, np.ones_like(source)], axis=1)
            coefficients, *_ = np.linalg.lstsq(design, image[..., channel].ravel(), rcond=None)
            fits &= bool(np.abs(design @ coefficients - image[..., channel].ravel()).max() < 1e-4)
        if fits:
            return k
    return None


def test_device_augmentation_applies_the_cpu_pipelines_transforms(cached):
    """Both paths of the public pipeline draw from the same transforms, applied alike to image and label.

    augment_on="device" must yield the raw patches (the train step augments them with
    `augment_batch`); augment_on="cpu" must yield the same patches augmented. Each augmented
    sample must be one of the 16 axial symmetries of its raw patch with the same symmetry on the
    label, and the image scaled/shifted per channel (the device and CPU paths draw different
    random numbers, so which symmetry is not compared, only that transforms happen on both paths).
    """
    augmentation = Augmentation((Rot90(), Mirror(probability=0.5), ScaleShift(scale=0.2, shift=0.2)))
    common = dict(patch_size=(16, 16, 16), batch_size=2, seed=5)
    raw = list(data.train_dataset(cached, PipelineConfig(augment=False, **common)).take(3))
    on_device = list(data.train_dataset(cached, PipelineConfig(augment_on="device", augmentation=augmentation,
                                                               **common)).take(3))
    on_cpu = list(data.train_dataset(cached, PipelineConfig(augment_on="cpu", augmentation=augmentation,
                                                            **common)).take(3))
    symmetries = {"device": [], "cpu": []}
    for step, ((raw_x, raw_y), (dev_x, dev_y), (cpu_x, cpu_y)) in enumerate(zip(raw, on_device, on_cpu)):
        # The device path's pipeline leaves the patches as they are.
        assert np.array_equal(dev_x.numpy(), raw_x.numpy()) and np.array_equal(dev_y.numpy(), raw_y.numpy())
        aug_x, aug_y = data.augment_batch(dev_x, dev_y, tf.constant([5, step], tf.int64), augmentation)
        assert aug_x.dtype == cpu_x.dtype and aug_y.dtype == cpu_y.dtype and aug_x.shape == cpu_x.shape
        for path, (x, y) in (("device", (aug_x, aug_y)), ("cpu", (cpu_x, cpu_y))):
            for b in range(x.shape[0]):
                k = _same_transform(raw_x.numpy()[b], raw_y.numpy()[b], x.numpy()[b], y.numpy()[b])
                assert k is not None, f"{path} sample {step}/{b} is not a flip/rot90 + scale/shift of its patch"
                symmetries[path].append(k)
                # The intensity changed too (scale/shift drawn per channel).
                assert not np.allclose(x.numpy()[b], _axial_symmetries(raw_x.numpy()[b])[k])
    for path, found in symmetries.items():
        assert len(set(found)) >= 3, f"{path}: transforms {found} look constant"


def test_validation_is_deterministic_and_unaugmented(cached):
    whole = list(data.validation_dataset(cached, target="whole_tumor"))
    image, seg, _ = cached[0].load()
    assert np.array_equal(whole[0][0].numpy()[0], np.asarray(image))
    assert np.array_equal(whole[0][1].numpy()[0, ..., 0], (np.asarray(seg) > 0).astype(np.float32))
    a = [x.numpy() for x, _ in data.validation_dataset(cached, (16, 16, 16), batch_size=3)]
    b = [x.numpy() for x, _ in data.validation_dataset(cached, (16, 16, 16), batch_size=3)]
    assert len(a) == 1 and a[0].shape == (3, 16, 16, 16, 4) and np.array_equal(a[0], b[0])
