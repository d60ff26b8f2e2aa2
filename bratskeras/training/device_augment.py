"""Augmentation on the accelerator, as the first step of each training batch.

A fast GPU consumes patches faster than a few CPU cores can augment them.
With `augment_on="device"` the tf.data pipeline yields raw patches and this
wrapper applies `bratskeras.data.augment_batch` inside the compiled train
step, on whatever device runs it. Both paths use the same per-patch transform
(`data.augment_patch`), so the distribution of transforms is the same; only
the random stream differs (seeded here by the optimizer's step counter).
"""

import keras

from bratskeras import data


class DeviceAugmentedModel(keras.Model):
    """Trains `network` on augmented batches; inference is the plain network.

    Args:
        network: the functional model being trained (saved on its own).
        seed: base seed of the stateless augmentation stream.
        augmentation: data.AugmentConfig.
    """

    def __init__(self, network, seed=0, augmentation=data.AugmentConfig(), **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.seed = int(seed)
        self.augmentation = augmentation

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def train_step(self, batch):
        import tensorflow as tf

        x, y = batch
        step = tf.cast(self.optimizer.iterations, tf.int64)
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        x, y = data.augment_batch(x, y, seed, self.augmentation)
        return super().train_step((x, y))
