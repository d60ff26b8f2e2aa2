"""Model builders: the FLAIR-only U-Net and the lightweight 3D U-Net family.

Importing this package imports Keras and TensorFlow, without TensorFlow's
start-up lines (bratskeras.platform.quiet), and registers the custom layers, losses
and metrics `.keras` files of bratskeras models need (`custom_objects`).
"""

from bratskeras.platform.quiet import import_tensorflow_quietly

import_tensorflow_quietly()

# isort: split
from bratskeras.models.flair_unet import build_flair_unet  # noqa: E402
from bratskeras.models.layers import CropToReference, PadToMultiple  # noqa: E402
from bratskeras.models.registry import build_model, list_models, model_facts, model_spec  # noqa: E402
from bratskeras.models.saving import custom_objects, inference_model, load_model  # noqa: E402
from bratskeras.models.unet3d import build_unet3d  # noqa: E402

__all__ = [
    "CropToReference",
    "PadToMultiple",
    "build_flair_unet",
    "build_model",
    "build_unet3d",
    "custom_objects",
    "inference_model",
    "list_models",
    "load_model",
    "model_facts",
    "model_spec",
]
