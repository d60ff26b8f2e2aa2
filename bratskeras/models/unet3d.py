"""The lightweight multiclass 3D U-Net family of the BraTS 2020 paper.

One parameterised builder gives the paper's selected model (3 levels, base 16,
2 convs per block: 340,596 parameters) and its four larger siblings.

Block: [Conv3D k3 'same' (bias) -> InstanceNorm (no affine, eps 1e-5) ->
LeakyReLU(0.01)] x convs; channels base * 2**level; MaxPooling3D(2) between
encoder levels; decoder Conv3DTranspose(k2, s2) to the skip's width, concat
[up, skip], block(2c -> c); head SpatialDropout3D then a 1x1x1 Conv3D to
`num_classes` logits (softmax lives in the loss).
"""

import keras

from bratskeras.models.flair_unet import needs_padding
from bratskeras.models.layers import CropToReference, InstanceNormalization, NormalizedConv3D, PadToMultiple

LEAKY_SLOPE = 0.01


def kaiming_normal():
    """Kaiming normal as the paper's text states: var = 2 / ((1 + a^2) fan_in).

    Untruncated, with a the LeakyReLU slope (Keras' `he_normal` truncates).
    """
    return keras.initializers.VarianceScaling(
        scale=2.0 / (1.0 + LEAKY_SLOPE**2), mode="fan_in", distribution="untruncated_normal"
    )


def conv_block(x, filters, convs, name):
    """[Conv3D k3 -> InstanceNorm -> LeakyReLU(0.01)] x convs.

    Shape: (batch, D, H, W, c_in) -> (batch, D, H, W, filters).
    """
    for index in range(convs):
        # NormalizedConv3D: a Conv3D that skips its bias gradient, zero under the norm.
        x = NormalizedConv3D(
            filters, 3, padding="same", kernel_initializer=kaiming_normal(),
            bias_initializer="zeros", name=f"{name}_conv{index}",
        )(x)
        # Instance norm = GroupNormalization(groups=-1): one group per channel,
        # statistics over D, H, W; the subclass computes it with a fused kernel.
        x = InstanceNormalization(
            center=False, scale=False, epsilon=1e-5, name=f"{name}_norm{index}"
        )(x)
        x = keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_act{index}")(x)
    return x


def build_unet3d(
    input_shape=(None, None, None, 4),
    levels=3,
    base_filters=16,
    convs_per_block=2,
    dropout=0.3,
    num_classes=4,
    name="unet3d",
):
    """Builds a member of the lightweight 3D U-Net family.

    Args:
        input_shape: (D, H, W, C); spatial sizes may be None (any volume).
        levels: resolution levels (levels - 1 poolings).
        base_filters: channels at the top level; level l has base * 2**l.
        convs_per_block: convolutions per encoder and decoder block.
        dropout: SpatialDropout3D rate before the head (paper: 0.3).
        num_classes: output channels (4: background, NCR, ED, ET).
        name: model name.

    Returns:
        A functional `keras.Model`: (batch, D, H, W, C) -> (batch, D, H, W,
        num_classes) logits, float32 under any policy.
    """
    multiple = 2 ** (levels - 1)
    inputs = keras.Input(shape=input_shape, name="image")
    padded = needs_padding(input_shape[:3], multiple)
    x = PadToMultiple(multiple, name="pad")(inputs) if padded else inputs

    skips = []
    for level in range(levels):
        x = conv_block(x, base_filters * 2**level, convs_per_block, f"enc{level}")
        if level < levels - 1:
            skips.append(x)
            x = keras.layers.MaxPooling3D(2, name=f"pool{level}")(x)

    for level in reversed(range(levels - 1)):
        filters = base_filters * 2**level
        x = keras.layers.Conv3DTranspose(
            filters, 2, strides=2, kernel_initializer=kaiming_normal(),
            bias_initializer="zeros", name=f"up{level}",
        )(x)
        x = keras.layers.Concatenate(axis=-1, name=f"concat{level}")([x, skips[level]])
        x = conv_block(x, filters, convs_per_block, f"dec{level}")

    if padded:
        x = CropToReference(name="crop")([x, inputs])
    x = keras.layers.SpatialDropout3D(dropout, name="head_dropout")(x)
    outputs = keras.layers.Conv3D(
        num_classes, 1, kernel_initializer=kaiming_normal(), bias_initializer="zeros",
        dtype="float32", name="head",
    )(x)
    return keras.Model(inputs, outputs, name=name)
