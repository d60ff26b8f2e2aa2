"""The export formats and quantization modes: one table for `bratskeras export`'s choices and export_model.

Kept apart from bratskeras.export.exporter, which imports Keras, so the CLI builds its
click.Choice options without importing TensorFlow (`bratskeras --help` stays
instant).
"""

# format -> (the optional extra it needs (bratskeras.platform.extras.EXTRAS), or None; its name in messages).
FORMATS = {
    "saved_model": (None, "SavedModel"),
    "tflite": ("litert", "LiteRT"),
    "onnx": ("onnx", "ONNX"),
    "keras": (None, ".keras"),
}
# Weight quantization of a tflite export (the other formats take "none" only).
QUANTIZE = ("none", "float16", "dynamic-int8")
