"""Models: builders, the registry of presets, the Keras objects they carry (layers, losses, metrics), layer tables, loading and saving.

- flair_unet, unet3d: the two builder families (FLAIR-only U-Net, lightweight 3D U-Net family);
- layers: the custom layers they share;
- registry: builds a preset row of bratskeras.core.model_presets (`build_model`, `model_facts`);
- losses, metrics: the Dice losses and the Keras epoch Dice they are compiled with;
- summary: layer tables and their comparison with the papers' tables;
- saving: `load_model`, `custom_objects`, inference copies.

Importing this package imports Keras and TensorFlow, without TensorFlow's
start-up lines (bratskeras.platform.quiet), and registers the custom layers
(bratskeras.models.layers); the losses and metrics of compiled models are
registered when a model is loaded (`load_model`) or `custom_objects()` is
called. The presets' metadata alone needs no TensorFlow: bratskeras.core.model_presets.
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
