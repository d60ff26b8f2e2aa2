"""The model that `fit` trains: the network plus what a train step needs around it.

- Augmentation on the accelerator (`augment_on="device"`): a fast GPU consumes
  patches faster than a few CPU cores can augment them, so the tf.data
  pipeline yields raw patches and `bratskeras.data.pipeline.augment_batch` runs inside
  the compiled train step. Both paths use the same per-patch transform
  (`data.augment_patch`), so the distribution of transforms is the same; only
  the random stream differs (seeded here by the optimizer's step counter).
- Multi-worker logs: Keras 3.15 reduces a step's logs across workers with
  strategy.reduce("MEAN", v, axis=0), which fails on scalars; giving each log
  a length-1 axis lets that reduce return the mean as a scalar.

Only the functional `network` is ever saved; this wrapper lives for training.
"""

import keras

from bratskeras.data import pipeline as data


class TrainingModel(keras.Model):
    """Trains `network`; calling it is calling the network.

    Args:
        network: the functional model being trained.
        seed: base seed of the stateless device-augmentation stream.
        augmentation: data.Augmentation to apply in the train step, or None.
        multi_worker: True under MultiWorkerMirroredStrategy.
    """

    def __init__(self, network, seed=0, augmentation=None, multi_worker=False, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.seed = int(seed)
        self.augmentation = augmentation
        self.multi_worker = multi_worker

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def train_step(self, batch):
        import tensorflow as tf

        if self.augmentation is not None:
            x, y = batch
            step = tf.cast(self.optimizer.iterations, tf.int64)
            seed = tf.stack([tf.constant(self.seed, tf.int64), step])
            batch = data.augment_batch(x, y, seed, self.augmentation)
        logs = super().train_step(batch)
        if self.multi_worker:
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs
