"""A trained model as SavedModel, LiteRT, ONNX or .keras, with its contract inside, verified."""
