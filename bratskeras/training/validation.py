"""Validation on whole preprocessed volumes, once per epoch.

Validation runs outside the distributed train step, in a callback that every
worker executes for itself:
- whole BraTS volumes differ in shape after the brain crop, so they cannot be
  batched, and a batch of one cannot be split across replicas;
- every worker computes the same numbers from the same weights, so the
  learning-rate and early-stopping decisions stay identical on all workers
  without any communication.
"""

import keras


class WholeVolumeValidation(keras.callbacks.Callback):
    """Adds `val_loss` and `val_<metric>` to the epoch logs.

    Must come before the callbacks that read those values (ReduceLROnPlateau,
    EarlyStopping, the run files).

    Args:
        network: the functional model being trained.
        dataset: finite tf.data.Dataset of (x (1, D, H, W, C), y) per case.
        loss: a Keras loss object (the training loss).
        metrics: fresh Keras metric objects (the Dice metrics), not the
            ones compiled into the model.
    """

    def __init__(self, network, dataset, loss, metrics):
        super().__init__()
        self.network = network
        self.dataset = dataset
        self.loss = loss
        self.metrics = metrics

    def _predict(self, x):
        from bratskeras.predict.tiling import compiled_forward

        # One static graph per volume shape, all kept: a graph traced for
        # unknown sizes runs 20-40% slower on CPU, and the set is fixed.
        return compiled_forward(self.network, x.shape, keep=None)(x)

    def evaluate(self):
        """{"val_loss": mean loss over cases, "val_<metric>": epoch-pooled value}."""
        for metric in self.metrics:
            metric.reset_state()
        total, count = 0.0, 0
        for x, y in self.dataset:
            prediction = self._predict(x)
            total += float(self.loss(y, prediction))
            count += 1
            for metric in self.metrics:
                metric.update_state(y, prediction)
        results = {"val_loss": total / max(count, 1)}
        results.update({f"val_{m.name}": float(m.result()) for m in self.metrics})
        return results

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.evaluate())


class ReplicaLossReport(keras.callbacks.Callback):
    """Reports the training loss as the mean over the global batch.

    Keras 3.15 logs `loss` multiplied by the number of replicas under
    tf.distribute (its tracker receives the unscaled per-replica loss and then
    sums replicas); the gradients themselves are right. tests/test_distributed
    compares the logged loss with single-device training, so a Keras change
    in either direction is caught.
    """

    def __init__(self, replicas):
        super().__init__()
        self.replicas = replicas

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "loss" in logs and self.replicas > 1:
            logs["loss"] = float(logs["loss"]) / self.replicas

