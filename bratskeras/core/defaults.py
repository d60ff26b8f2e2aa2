"""Defaults that more than one stage uses, each written once.

Elsewhere: the four modalities are core.labels.ALL_MODALITIES; the FLAIR
paper's crop is the flair-unet row's (core.model_presets.FLAIR_PAPER_CROP).

Training (training.config, training.losses, data.pipeline), prediction
(predict.model_setup) and export import them from here.
"""

from types import MappingProxyType

# The lightweight2020 preset's training patch (d, h, w): TrainConfig's and PipelineConfig's default,
# and predict's window for a model whose contract names no patch size.
PATCH_SIZE = (128, 128, 128)
# The lightweight paper's Dice + cross-entropy weights (training.losses.DiceCELoss, the lightweight2020 preset).
DICE_CE_WEIGHTS = MappingProxyType({"ce_weight": 0.3, "dice_weight": 0.7})
