"""Model builders: the FLAIR-only U-Net and the lightweight 3D U-Net family."""

from bratskeras.models.flair_unet import build_flair_unet
from bratskeras.models.layers import CropToReference, PadToMultiple
from bratskeras.models.registry import build_model, list_models, model_facts, model_spec
from bratskeras.models.saving import inference_model, load_model
from bratskeras.models.unet3d import build_unet3d

__all__ = [
    "CropToReference",
    "PadToMultiple",
    "build_flair_unet",
    "build_model",
    "build_unet3d",
    "inference_model",
    "list_models",
    "load_model",
    "model_facts",
    "model_spec",
]
