"""The LiteRT (TFLite) format: conversion with builtin operators only, its operators, its smaller check twin.

The converter starts from a SavedModel of the export graph in its builtin
form (bratskeras.export.graph: no Flex 3-D pooling) and is allowed
TFLITE_BUILTINS only, so any op that would need Flex fails the conversion
instead of shipping a model devices cannot run. LiteRT models have static
spatial sizes. The check runs them in ai-edge-litert, the standalone runtime,
which has no Flex delegate, as on devices (TensorFlow's bundled
tf.lite.Interpreter is deprecated and is not used).
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from bratskeras.data import model_files
from bratskeras.export.formats import QUANTIZATIONS
from bratskeras.export.graph import serving_model
from bratskeras.export.writers import save_graph
from bratskeras.platform.quiet import filtered_stderr
from bratskeras.predict.runtimes import LITERT_NOISE, SIGNATURE_KEY

# The largest LiteRT input checked as it is. LiteRT's reference CONV_3D needs
# about 17 GB and 40 s (2 cores) for one 128^3 pass of lightweight-unet, so a
# larger LiteRT export of a size-free model is checked through a twin: the
# same export graph and weights converted with the same settings at this
# size (an axis already smaller keeps its size), run in LiteRT against Keras.
LITERT_CHECK_SPATIAL = (64, 64, 64)


def write_tflite(model, path, input_shape, quantize="none", target=None, contract=None):
    """Writes a LiteRT flatbuffer with builtin operators only, `contract` (if any) in its metadata.

    Args:
        input_shape: (D, H, W, C), all static.
        quantize: a key of bratskeras.export.formats.QUANTIZATIONS (the weights' storage).
    """
    import tensorflow as tf

    quantization = QUANTIZATIONS[quantize]
    with tempfile.TemporaryDirectory() as workdir:
        save_graph(serving_model(model, input_shape, builtin_pooling=True, target=target), workdir, input_shape)
        converter = tf.lite.TFLiteConverter.from_saved_model(workdir, signature_keys=[SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization.optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization.weight_type is not None:
            converter.target_spec.supported_types = [getattr(tf, quantization.weight_type)]
        with filtered_stderr(LITERT_NOISE):
            flatbuffer = converter.convert()
    if contract is not None:
        flatbuffer = model_files.with_tflite_contract(flatbuffer, contract, path)
    Path(path).write_bytes(flatbuffer)


def tflite_ops(path):
    """Sorted operator names in a LiteRT model (custom ops such as FlexMaxPool3D included).

    Read with ai-edge-litert's interpreter (extra `litert`, checked before the export), a thread per core.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
    return tuple(sorted({op["op_name"] for op in interpreter._get_ops_details()}))


def litert_twin_shape(model, input_shape):
    """(D, H, W, C) of the LiteRT twin that checks a LiteRT export too large to run (None: check it as it is).

    Only a size-free model has a twin: a model with fixed sizes has no other size to convert at.
    """
    spatial = input_shape[:3]
    if any(s is not None for s in model.inputs[0].shape[1:4]):
        return None
    if np.prod(spatial) <= np.prod(LITERT_CHECK_SPATIAL):
        return None
    return tuple(min(s, c) for s, c in zip(spatial, LITERT_CHECK_SPATIAL)) + tuple(input_shape[3:])
