"""Defaults that more than one stage uses, each written once (the label schemes' modalities: core.labels).

Training (training.config, data.pipeline), prediction (predict.model_setup),
export and the models import them from here.
"""

# The lightweight2020 preset's training patch (d, h, w): TrainConfig's and PipelineConfig's default,
# and predict's window for a model whose contract names no patch size.
PATCH_SIZE = (128, 128, 128)
# The FLAIR paper's centre crop (d, h, w): the flair2017 preset's crop and patch, flair-unet's input.
FLAIR_PAPER_CROP = (192, 192, 154)
# The lightweight paper's Dice + cross-entropy weights (training.losses.DiceCELoss, the lightweight2020 preset).
DICE_CE_WEIGHTS = {"ce_weight": 0.3, "dice_weight": 0.7}
