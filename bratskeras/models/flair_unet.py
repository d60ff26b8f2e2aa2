"""The FLAIR-only 5-level 3D U-Net of the BraTS 2017 paper (Table 1).

Reproduces the paper's 28 layers, in order, with their original Keras names
(`conv3d_1` ... `conv3d_10`, `deconvolution3d_1` ...) and parameter counts,
13,522,721 in total. Only the deepest skip (conv3d_4) is concatenated.

Four 2x2x2 poolings (model_presets.FLAIR_UNET_POOLINGS) need spatial sizes
divisible by 16; the paper's crop is 192 x 192 x 154 (the flair-unet preset's
default_crop, model_presets.FLAIR_PAPER_CROP) and a full BraTS volume
240 x 240 x 155. When a size is not
divisible (or not known until run time) the builder adds two parameter-free
layers, `pad_to_16` after the input and `crop_to_input` before the 1x1x1 head,
so the output has exactly the input's spatial shape. The 1x1x1 head is
pointwise, so cropping before it is equivalent to cropping after and cheaper.
"""

import keras

from bratskeras.core.model_presets import FLAIR_PAPER_CROP, FLAIR_UNET_POOLINGS
from bratskeras.models.layers import CropToReference, PadToMultiple


def _conv(filters, name, kernel_size=3, activation="relu", dtype=None):
    return keras.layers.Conv3D(
        filters, kernel_size, padding="same", activation=activation, name=name, dtype=dtype
    )


def _deconv(filters, name):
    return keras.layers.Conv3DTranspose(
        filters, 3, strides=2, padding="same", activation="relu", name=name
    )


def needs_padding(spatial_shape, multiple):
    """True when any spatial size is unknown or not divisible by `multiple`."""
    return any(size is None or size % multiple for size in spatial_shape)


def build_flair_unet(input_shape=(*FLAIR_PAPER_CROP, 1), dropout=0.2, name="flair_unet"):
    """Builds the FLAIR paper's model.

    Args:
        input_shape: (D, H, W, C); spatial sizes may be None. The paper uses
            its crop FLAIR_PAPER_CROP (192, 192, 154) and FLAIR only (C = 1).
        dropout: rate of every Dropout layer (paper: 0.2).
        name: model name.

    Returns:
        A functional `keras.Model`: (batch, D, H, W, C) -> (batch, D, H, W, 1)
        sigmoid probabilities of whole tumor, float32 under any policy.
    """
    multiple = 2**FLAIR_UNET_POOLINGS
    inputs = keras.Input(shape=input_shape, name="image")
    padded = needs_padding(input_shape[:3], multiple)
    x = PadToMultiple(multiple, name="pad_to_16")(inputs) if padded else inputs

    # Encoder: conv -> pool -> dropout, four times, then the bottom conv.
    x = _conv(32, "conv3d_1")(x)
    x = keras.layers.MaxPooling3D(2, name="max_pooling3d_1")(x)
    x = keras.layers.Dropout(dropout, name="dropout_1")(x)
    x = _conv(64, "conv3d_2")(x)
    x = keras.layers.MaxPooling3D(2, name="max_pooling3d_2")(x)
    x = keras.layers.Dropout(dropout, name="dropout_2")(x)
    x = _conv(128, "conv3d_3")(x)
    x = keras.layers.MaxPooling3D(2, name="max_pooling3d_3")(x)
    x = keras.layers.Dropout(dropout, name="dropout_3")(x)
    skip = _conv(256, "conv3d_4")(x)
    x = keras.layers.MaxPooling3D(2, name="max_pooling3d_4")(skip)
    x = keras.layers.Dropout(dropout, name="dropout_4")(x)
    x = _conv(512, "conv3d_5")(x)
    x = keras.layers.Dropout(dropout, name="dropout_5")(x)

    # Decoder: only the deepest level gets a skip connection (Table 1, row 16).
    x = _deconv(256, "deconvolution3d_1")(x)
    x = keras.layers.Concatenate(axis=-1, name="concatenate_1")([x, skip])
    x = keras.layers.Dropout(dropout, name="dropout_6")(x)
    x = _conv(256, "conv3d_6")(x)
    x = _deconv(128, "deconvolution3d_2")(x)
    x = keras.layers.Dropout(dropout, name="dropout_7")(x)
    x = _conv(128, "conv3d_7")(x)
    x = _deconv(64, "deconvolution3d_3")(x)
    x = keras.layers.Dropout(dropout, name="dropout_8")(x)
    x = _conv(64, "conv3d_8")(x)
    x = _deconv(32, "deconvolution3d_4")(x)
    x = keras.layers.Dropout(dropout, name="dropout_9")(x)
    x = _conv(32, "conv3d_9")(x)
    if padded:
        x = CropToReference(name="crop_to_input")([x, inputs])
    # float32 head: probabilities stay float32 under mixed precision.
    outputs = _conv(1, "conv3d_10", kernel_size=1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
