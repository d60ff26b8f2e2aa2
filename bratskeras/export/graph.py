"""The export graph: `image` -> the trained model -> `probabilities`, and LiteRT's builtin forms of its layers.

Every deployment artefact (SavedModel, LiteRT, ONNX) is written from
`serving_model`: one input and one output with stable names,

    image          float32 (batch, D, H, W, channels), channels last
    probabilities  float32 (batch, D, H, W, classes)

(bratskeras.predict.runtimes' INPUT_NAME and OUTPUT_NAME). Most models end
in logits: the graph appends the activation of the run's training target
(softmax for classes, sigmoid for regions; without a target the output
channels decide), and nothing to a model whose head is already a sigmoid or
softmax (flair-unet); bratskeras.predict.model_setup.output_activation
decides, for predict too. Clients always receive probabilities. D, H, W are
the NIfTI voxel axes i, j, k.

LiteRT has no builtin 3-D pooling, and its MEAN drifts over large slabs; its
graph swaps those layers for exact builtin forms (`BuiltinMaxPool3D`,
`BuiltinInstanceNormalization`) sharing the trained weights.
"""

import keras
from keras import ops

from bratskeras.core.defaults import PATCH_SIZE
from bratskeras.core.errors import ModelError
from bratskeras.predict.model_setup import output_activation
from bratskeras.predict.runtimes import INPUT_NAME, OUTPUT_NAME


class BuiltinMaxPool3D(keras.layers.Layer):
    """2x2x2 max pooling, stride 2, written with LiteRT builtin operators.

    LiteRT has no 3-D max pooling builtin (the converter emits FlexMaxPool3D).
    The max over a 2x2x2 window is the max over D pairs of 2-D 2x2 maxima, so:
    MAX_POOL_2D on (batch * D, H, W, C), then REDUCE_MAX over D pairs. Exact,
    parameter-free, export-only (never saved in a .keras file).

    Shape:
        (batch, D, H, W, C) -> (batch, D / 2, H / 2, W / 2, C); D, H, W static
        and even (the models pad to multiples of 2**poolings).
    """

    def call(self, inputs):
        _, depth, height, width, channels = inputs.shape
        if None in (depth, height, width) or depth % 2 or height % 2 or width % 2:
            raise ModelError(f"{self.name}: builtin 3-D pooling needs static even spatial "
                             f"sizes, got {inputs.shape}")
        half = (depth // 2, height // 2, width // 2)
        x = ops.reshape(inputs, (-1, height, width, channels))
        x = ops.max_pool(x, 2, strides=2, padding="valid")
        x = ops.reshape(x, (-1, 2, half[1] * half[2], channels))
        x = ops.max(x, axis=1)
        return ops.reshape(x, (-1, *half, channels))


class BuiltinInstanceNormalization(keras.layers.Layer):
    """Instance norm without affine, moments reduced one spatial axis at a time.

    LiteRT's MEAN sums a whole (D, H, W) slab in float32 sequentially: over
    128^3 voxels that drifted the exported probabilities by 6e-4 from Keras.
    Reducing W, then H, then D (mathematically the same mean) sums at most a
    few hundred values at a time. Two-pass variance, as the Keras layer.
    Export-only, parameter-free.

    Shape: (batch, D, H, W, C) -> same.
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    @staticmethod
    def _spatial_mean(x):
        for axis in (3, 2, 1):
            x = ops.mean(x, axis=axis, keepdims=True)
        return x

    def call(self, inputs):
        centered = inputs - self._spatial_mean(inputs)
        variance = self._spatial_mean(ops.square(centered))
        return centered * ops.rsqrt(variance + self.epsilon)


def _builtin_layer(layer):
    """clone_model hook for LiteRT: builtin forms of 3-D pooling and instance norm."""
    if isinstance(layer, keras.layers.GroupNormalization) and layer.groups in (-1, layer.input.shape[-1]):
        if layer.center or layer.scale:
            raise ModelError(f"{layer.name}: only instance norm without affine has a builtin form")
        return BuiltinInstanceNormalization(epsilon=layer.epsilon, name=layer.name)
    if isinstance(layer, keras.layers.MaxPooling3D):
        if tuple(layer.pool_size) != (2, 2, 2) or tuple(layer.strides) != (2, 2, 2):
            raise ModelError(f"{layer.name}: only 2x2x2 pooling with stride 2 has a builtin form")
        return BuiltinMaxPool3D(name=layer.name)
    # Returning the layer itself shares its weights: the export graph is the
    # trained model, not a copy that could drift.
    return layer


def _probabilities_activation(model, target=None):
    """The activation that turns the model's output into probabilities (shared with `predict`)."""
    return output_activation(model, target) or "linear"


def serving_model(model, input_shape, builtin_pooling=False, target=None):
    """The export graph: `image` -> model -> `probabilities`, same weights.

    Args:
        model: a bratskeras keras.Model.
        input_shape: (D, H, W, C) of the exported input; sizes may be None
            where the model allows it. The batch is always dynamic.
        builtin_pooling: replace MaxPooling3D by BuiltinMaxPool3D and instance
            norm by BuiltinInstanceNormalization (LiteRT).
        target: the run's training target (targets.TARGETS), which decides
            the activation; None: the output channels decide
            (model_setup.output_activation).

    Returns:
        keras.Model (batch, D, H, W, C) -> (batch, D, H, W, classes)
        probabilities, named layers "image" and "probabilities".
    """
    image = keras.Input(shape=input_shape, name=INPUT_NAME)
    if builtin_pooling:
        logits = keras.models.clone_model(model, input_tensors=image,
                                          clone_function=_builtin_layer).outputs[0]
    else:
        logits = model(image)
    probabilities = keras.layers.Activation(
        _probabilities_activation(model, target), dtype="float32", name=OUTPUT_NAME
    )(logits)
    return keras.Model(image, probabilities, name=model.name)


def resolve_input_shape(model, input_shape=None, static=False):
    """The (D, H, W, C) to export: the model's own, --input-shape, or a default.

    `static` (a format that needs static sizes: LiteRT, whose pad/crop layers
    and the reshapes that express 3-D pooling are resolved at conversion)
    sets the spatial sizes left free to the training patch,
    core.defaults.PATCH_SIZE.

    Raises:
        ModelError: wrong length, a channel count or static size that differs
            from the model's.
    """
    own = tuple(model.inputs[0].shape[1:])
    if input_shape is None:
        shape = own
    else:
        shape = tuple(None if s is None else int(s) for s in input_shape)
        if len(shape) != 4:
            raise ModelError(f"input shape must be (D, H, W, C), got {shape}")
        for given, fixed in zip(shape, own):
            if fixed is not None and given != fixed:
                raise ModelError(f"{model.name} was built for input {own}; "
                                 f"input shape {shape} does not fit it")
    if static:
        shape = tuple(d if s is None else s for s, d in zip(shape[:3], PATCH_SIZE)) + shape[3:]
    return shape


def input_signature(input_shape):
    """The tf.function input signature of the export graph: one float32 `image` (None, D, H, W, C)."""
    import tensorflow as tf

    return [tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)]

