"""The custom layers the model builders share: padding and cropping, instance norm, a Conv3D before it.

U-Nets with k poolings need spatial sizes divisible by 2**k, but BraTS volumes
are 240 x 240 x 155 and the FLAIR paper crops to 192 x 192 x 154. Rather than
resampling, the builders zero-pad the input up to the next multiple and crop
the output back, so the prediction lands voxel-for-voxel on the input grid
(`PadToMultiple`, `CropToReference`). Both work with static and dynamic (None) spatial sizes, so a model
built with `input_shape=(None, None, None, C)` accepts any volume.

`InstanceNormalization` is `GroupNormalization(groups=-1)` computed with one
fused kernel per sample (see its docstring). `NormalizedConv3D` is a Conv3D
for layers an instance norm follows: same weights and outputs, but its bias
gradient, identically zero there, is not computed in training.

Backends: every layer runs on any Keras backend, so a bratskeras `.keras`
file loads and predicts under JAX too. Each has a portable `keras.ops` path
and, under the TensorFlow backend, keeps the TensorFlow kernels it was tuned
with (the oneDNN-safe concatenation, the fused instance norm, the bias
without gradient); the two paths agree to float round-off (tests/
test_backends.py). TensorFlow is imported only on the TensorFlow path.

Layout everywhere: (batch, D, H, W, channels); D, H, W are the NIfTI voxel
axes i, j, k in that order.
"""

import functools

import keras
from keras import ops


def _on_tensorflow():
    """True under Keras' TensorFlow backend, where the layers use their tuned TensorFlow kernels."""
    return keras.backend.backend() == "tensorflow"


def _padded_size(size, multiple):
    return -(-size // multiple) * multiple


@keras.saving.register_keras_serializable(package="bratskeras")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads the three spatial axes up to a multiple of `multiple`.

    The padding is split as evenly as possible, the extra voxel going after
    the volume (the same convention as `CropToReference` undoes).

    Args:
        multiple: int, the required divisor of each spatial size (2**poolings).

    Shape:
        (batch, D, H, W, C) -> (batch, D', H', W', C), D' = ceil(D / m) * m.
    """

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        if int(multiple) < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}")
        self.multiple = int(multiple)

    def call(self, inputs):
        return self._call_tensorflow(inputs) if _on_tensorflow() else self._call_portable(inputs)

    def _call_portable(self, inputs):
        """keras.ops form: the sizes are static under JAX (traced per shape)."""
        x = inputs
        for axis in (1, 2, 3):
            total = (self.multiple - ops.shape(x)[axis] % self.multiple) % self.multiple
            width = [[0, 0]] * 5
            width[axis] = [total // 2, total - total // 2]
            x = ops.pad(x, width)
        return x

    def _call_tensorflow(self, inputs):
        import tensorflow as tf

        # Zeros are concatenated rather than added with tf.pad: TF 2.21's
        # oneDNN grappler pass fuses Pad -> Conv3D(padding="same") into one
        # conv that drops the SAME padding (a 12^3 input came out 10^3) or
        # fails in Conv3DTranspose ("could not create a primitive descriptor"),
        # and concatenation is not matched by that fusion.
        x = inputs
        for axis in (1, 2, 3):
            size = inputs.shape[axis] if inputs.shape[axis] is not None else tf.shape(x)[axis]
            # Both operands non-negative: ONNX's Mod rounds a negative one differently.
            total = (self.multiple - size % self.multiple) % self.multiple
            before, after = total // 2, total - total // 2
            x = tf.concat([self._zeros_like_slab(x, axis, before), x,
                           self._zeros_like_slab(x, axis, after)], axis=axis)
        return x

    @staticmethod
    def _zeros_like_slab(x, axis, width):
        """Zeros shaped like `x` except `width` along `axis` (width may be 0)."""
        import tensorflow as tf

        shape = tf.unstack(tf.shape(x))
        shape[axis] = width
        return tf.zeros(tf.stack(shape), dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else _padded_size(s, self.multiple) for s in input_shape[1:4]]
        return (input_shape[0], *spatial, input_shape[4])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="bratskeras")
class CropToReference(keras.layers.Layer):
    """Crops the spatial axes of `inputs[0]` back to the size of `inputs[1]`.

    Inverse of `PadToMultiple`: removes total // 2 voxels before and the rest
    after on each spatial axis.

    Shape:
        [(batch, D', H', W', C), (batch, D, H, W, any)] -> (batch, D, H, W, C).
    """

    def call(self, inputs):
        return self._call_tensorflow(inputs) if _on_tensorflow() else self._call_portable(inputs)

    @staticmethod
    def _call_portable(inputs):
        """keras.ops form: the sizes are static under JAX (traced per shape)."""
        tensor, reference = inputs
        big, small = ops.shape(tensor), ops.shape(reference)
        starts = [0] + [(big[a] - small[a]) // 2 for a in (1, 2, 3)] + [0]
        return ops.slice(tensor, starts, [big[0], small[1], small[2], small[3], big[4]])

    @staticmethod
    def _call_tensorflow(inputs):
        import tensorflow as tf

        tensor, reference = inputs
        big = tf.shape(tensor)
        small = tf.shape(reference)
        starts = [0] + [(big[a] - small[a]) // 2 for a in (1, 2, 3)] + [0]
        sizes = [big[0], small[1], small[2], small[3], big[4]]
        return tf.slice(tensor, tf.stack(starts), tf.stack(sizes))

    def compute_output_shape(self, input_shapes):
        tensor_shape, reference_shape = input_shapes
        return (tensor_shape[0], *reference_shape[1:4], tensor_shape[4])


@keras.saving.register_keras_serializable(package="bratskeras")
class InstanceNormalization(keras.layers.GroupNormalization):
    """Instance norm: `GroupNormalization(groups=-1)`, one fused kernel per sample.

    y = (x - mean) / sqrt(var + epsilon), statistics per sample and channel
    over D, H, W (biased variance), then the optional affine of the parent.
    Same weights, config and numerics (to float round-off) as the parent,
    which reshapes to groups, upcasts and makes several passes over the
    tensor; here each sample is one `FusedBatchNormV3` in training mode on a
    (D, H, W, C) view, whose statistics are exactly that sample's per-channel
    moments: about half the parent's forward time and a fifth of its
    backward (docs/benchmarks.md, "Figures behind code choices").
    Other backends (and non-5-D inputs) run the parent's keras.ops code.

    Shape: (batch, D, H, W, C) -> same.
    """

    def __init__(self, epsilon=1e-5, center=False, scale=False, **kwargs):
        kwargs.pop("groups", None)
        kwargs.pop("axis", None)
        super().__init__(groups=-1, axis=-1, epsilon=epsilon, center=center, scale=scale, **kwargs)

    def call(self, inputs):
        if len(inputs.shape) != 5 or not _on_tensorflow():
            return super().call(inputs)
        import tensorflow as tf

        inputs = tf.cast(inputs, self.compute_dtype)  # as the parent's output dtype
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)

        def normalize(sample):  # (D, H, W, C): D plays the role of the batch axis
            out, _, _ = tf.compat.v1.nn.fused_batch_norm(
                sample, gamma, beta, epsilon=self.epsilon, is_training=True, data_format="NHWC")
            return out

        if inputs.shape[0] is not None:
            # Unstacking along the batch axis is zero-copy; stacking costs one copy.
            samples = tf.unstack(inputs, axis=0)
            outputs = [normalize(s) for s in samples]
            return outputs[0][None] if len(outputs) == 1 else tf.stack(outputs, axis=0)
        # Dynamic batch (e.g. model.predict): a batch of one is a free reshape;
        # larger batches pay map_fn's copies in and out.
        shape = tf.shape(inputs)
        return tf.cond(shape[0] == 1,
                       lambda: tf.reshape(normalize(tf.reshape(inputs, shape[1:])), shape),
                       lambda: tf.map_fn(normalize, inputs))

    def get_config(self):
        config = super().get_config()
        for key in ("groups", "axis"):
            config.pop(key, None)
        return config


@functools.cache
def _bias_add_without_bias_gradient():
    """A TensorFlow function (x, bias) -> x + bias per channel; the gradient passes to x and is zero for bias.

    Built on first use, so that TensorFlow is imported only under its backend.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def bias_add(x, bias):
        def gradient(dy):
            return dy, tf.zeros_like(bias)

        return tf.nn.bias_add(x, bias), gradient

    return bias_add


@keras.saving.register_keras_serializable(package="bratskeras")
class NormalizedConv3D(keras.layers.Conv3D):
    """`Conv3D` whose output goes straight into an instance norm.

    A per-channel bias is removed by the norm's mean subtraction, so the loss
    does not depend on it and its gradient is identically zero: in training
    this layer returns zeros for it instead of reducing the output gradient
    over every voxel (`BiasAddGrad`, which TensorFlow runs as slow scalar
    code in bfloat16; docs/benchmarks.md, "Figures behind code choices").
    The bias stays a weight (the paper's parameter count includes it) and the
    forward pass is Conv3D's. Without this, Adam turns the bias' rounding-
    noise gradient into full-size steps, a random walk with no effect on the
    output. Other backends run Conv3D as it is (bias gradient included).

    Shape: (batch, D, H, W, C) -> (batch, D, H, W, filters).
    """

    def call(self, inputs, training=None):
        if not (self.use_bias and training and self.data_format == "channels_last" and _on_tensorflow()):
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        outputs = _bias_add_without_bias_gradient()(outputs, ops.cast(self.bias, outputs.dtype))
        return outputs if self.activation is None else self.activation(outputs)
