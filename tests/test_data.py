import numpy as np
import pytest
import tensorflow as tf

from bratskeras import cache, data, layouts, synth
from bratskeras.data import AugmentConfig, PipelineConfig


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
    exact = AugmentConfig(scale=0.0, shift=0.0, gamma_probability=0.0)
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
    config = AugmentConfig(flip_probability=0.0, rot90=False, rotation_degrees=30,
                           scale=0.0, shift=0.0, gamma_probability=0.0)
    x, y = data.augment_patch(tf.constant(image), tf.constant(block), tf.constant([1, 2]), config)
    x_mask, y_mask = x.numpy()[..., 0] > 0.5, y.numpy()[..., 0] > 0
    assert not np.array_equal(y_mask, block[..., 0] > 0)  # it did rotate
    assert np.abs(np.argwhere(x_mask).mean(0) - np.argwhere(y_mask).mean(0)).max() < 0.5
    assert abs(int(x_mask.sum()) - int(y_mask.sum())) <= 0.1 * y_mask.sum()


def test_device_augmentation_matches_cpu_transform():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 8, 8, 8, 2)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 8, 8, 8, 1)).astype(np.uint8)
    seed = tf.constant([7, 0], tf.int64)
    x, y = data.augment_batch(tf.constant(images), tf.constant(labels), seed)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    for b in range(2):
        xb, yb = data.augment_patch(tf.constant(images[b]), tf.constant(labels[b]), seeds[b])
        assert np.allclose(x[b].numpy(), xb.numpy()) and np.array_equal(y[b].numpy(), yb.numpy())


def test_validation_is_deterministic_and_unaugmented(cached):
    whole = list(data.validation_dataset(cached, target="whole_tumor"))
    image, seg, _ = cached[0].load()
    assert np.array_equal(whole[0][0].numpy()[0], np.asarray(image))
    assert np.array_equal(whole[0][1].numpy()[0, ..., 0], (np.asarray(seg) > 0).astype(np.float32))
    a = [x.numpy() for x, _ in data.validation_dataset(cached, (16, 16, 16), batch_size=3)]
    b = [x.numpy() for x, _ in data.validation_dataset(cached, (16, 16, 16), batch_size=3)]
    assert len(a) == 1 and a[0].shape == (3, 16, 16, 16, 4) and np.array_equal(a[0], b[0])
