"""nnU-Net's augmentation set (bratskeras.data.augment): seeded, image and label alike, CPU = device."""

import numpy as np
import pytest
import tensorflow as tf

from bratskeras.data import augment, resampling
from bratskeras.data import pipeline as data
from bratskeras.data.augment import AUGMENTATION_SETS, Augmentation
from bratskeras.data.augmentations import Elastic, Rotation3D, Zoom

NNUNET = AUGMENTATION_SETS["nnunet"]
NOTHING = Augmentation(())


def _block_case(shape=(24, 24, 16)):
    """A label with two nested blocks and an image whose channel 0 is the tumor mask (label > 0)."""
    label = np.zeros(shape + (1,), dtype=np.uint8)
    label[5:17, 6:18, 3:12] = 2
    label[9:13, 10:15, 5:9] = 3
    noise = np.random.default_rng(0).normal(size=shape + (1,)).astype(np.float32)
    return np.concatenate([(label > 0).astype(np.float32), noise], -1), label


def test_data_keeps_the_augmentation_names():
    assert data.augment_patch is augment.augment_patch and data.Augmentation is Augmentation
    assert data.PipelineConfig().augmentation == AUGMENTATION_SETS["paper"]


def test_nnunet_set_is_seeded_and_keeps_shapes_and_label_values():
    image, label = _block_case()
    first = augment.augment_patch(tf.constant(image), tf.constant(label), tf.constant([4, 1]), NNUNET)
    again = augment.augment_patch(tf.constant(image), tf.constant(label), tf.constant([4, 1]), NNUNET)
    assert np.array_equal(first[0].numpy(), again[0].numpy()) and np.array_equal(first[1].numpy(), again[1].numpy())
    outputs = [augment.augment_patch(tf.constant(image), tf.constant(label), tf.constant([4, step]), NNUNET)
               for step in range(8)]
    for x, y in outputs:
        assert x.shape == image.shape and x.dtype == tf.float32 and y.dtype == tf.uint8
        assert set(np.unique(y.numpy())) <= {0, 2, 3}  # nearest neighbour: no new label values
    assert len({x.numpy().tobytes() for x, _ in outputs}) == 8


def test_spatial_transforms_move_image_and_label_together():
    image, label = _block_case()
    spatial = Augmentation((Rotation3D(probability=1.0, degrees=25.0), Zoom(probability=1.0),
                            Elastic(probability=1.0, voxels=2.0)))
    for step in range(3):
        x, y = augment.augment_patch(tf.constant(image), tf.constant(label), tf.constant([2, step]), spatial)
        x_mask, y_mask = x.numpy()[..., 0] > 0.5, y.numpy()[..., 0] > 0
        assert not np.array_equal(y_mask, label[..., 0] > 0)  # it did move
        assert np.mean(x_mask == y_mask) > 0.97
        assert np.abs(np.argwhere(x_mask).mean(0) - np.argwhere(y_mask).mean(0)).max() < 0.5


def test_identity_spatial_transform_is_exact():
    image, label = _block_case()
    coords = resampling.sampling_coordinates(tf.constant(label.shape[:3]), tf.zeros([3]), 1.0)
    assert np.allclose(resampling.trilinear(tf.constant(image), coords).numpy(), image, atol=1e-5)
    assert np.array_equal(resampling.nearest(tf.constant(label), coords).numpy(), label)


@pytest.mark.parametrize("field", ["noise", "blur", "brightness", "contrast", "low_resolution"])
def test_each_intensity_transform_changes_the_image_only(field):
    image, label = _block_case()
    config = Augmentation((NNUNET.with_options(**{field: {"probability": 1.0}})[field],))
    x, y = augment.augment_patch(tf.constant(image), tf.constant(label), tf.constant([1, 1]), config)
    assert np.array_equal(y.numpy(), label)
    assert x.shape == image.shape and not np.allclose(x.numpy(), image)
    if field == "contrast":  # the channel's range is kept
        assert x.numpy().min() >= image.min() - 1e-5 and x.numpy().max() <= image.max() + 1e-5
    if field == "blur":  # smoothing lowers the variance of the noise channel
        assert x.numpy()[..., 1].std() < image[..., 1].std()


def test_paper_set_draws_none_of_the_nnunet_transforms():
    image, label = _block_case()
    x, y = augment.augment_patch(tf.constant(image), tf.constant(label), tf.constant([0, 3]), NOTHING)
    assert np.array_equal(x.numpy(), image) and np.array_equal(y.numpy(), label)


def test_device_batch_matches_cpu_patches_for_nnunet_set():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 12, 12, 8, 2)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 12, 12, 8, 1)).astype(np.uint8)
    seed = tf.constant([7, 0], tf.int64)
    always = NNUNET.with_options(rotation_3d={"probability": 1.0}, noise={"probability": 1.0},
                                 blur={"probability": 1.0})
    x, y = augment.augment_batch(tf.constant(images), tf.constant(labels), seed, always)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    for b in range(2):
        xb, yb = augment.augment_patch(tf.constant(images[b]), tf.constant(labels[b]), seeds[b], always)
        assert np.allclose(x[b].numpy(), xb.numpy(), atol=1e-5) and np.array_equal(y[b].numpy(), yb.numpy())


def test_unknown_set_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation set 'heavy'"):
        augment.get_augmentation("heavy")
