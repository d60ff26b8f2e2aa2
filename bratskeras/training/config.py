"""Training configuration as data: a frozen dataclass, the papers' presets, JSON.

`resolve_config(preset, overrides)` starts from a preset and applies the
user's overrides (CLI flags); the result is saved as `config.json` in every
run directory, and `--resume` refuses a run whose saved configuration differs
from the one asked for.

Each fact is declared once: TrainConfig's defaults are the lightweight2020
preset (PRESETS holds each preset's differences from them); the pipeline's
and the preprocessing's own fields take their defaults from
data.PipelineConfig and preprocessing.PreprocessSettings, and
`pipeline_config`/`preprocess_settings` hand them back as those objects. The
CLI's choices are this module's tables (PRECISIONS, STRATEGIES, LOSS_TARGETS,
PRESETS), data.AUGMENT_ON and targets.NAMES.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field

from bratskeras import labels, targets
from bratskeras.augment import AUGMENTATION_SETS
from bratskeras.data import AUGMENT_ON, PipelineConfig
from bratskeras.errors import ConfigError
from bratskeras.preprocessing import PreprocessSettings

_PIPELINE = PipelineConfig()
_PREPROCESS = PreprocessSettings()
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# Which training target each loss is written for (bratskeras.losses).
LOSS_TARGETS = {
    "dice_ce": ("classes",),
    "soft_dice": ("classes",),
    "cross_entropy": ("classes",),
    "region_dice_bce": ("regions",),
    "flair_dice": ("whole_tumor",),
    "sensitivity_specificity": ("whole_tumor", "regions"),
}
# The loss a target trains with when the preset's loss is written for another one
# (`fit --target regions` alone: nnU-Net's region training, Dice + BCE).
TARGET_LOSSES = {"classes": "dice_ce", "regions": "region_dice_bce", "whole_tumor": "flair_dice"}
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
OPTIMIZERS = ("adamw", "adam")
# The named augmentation sets of bratskeras.augment (fit --augment).
AUGMENTATIONS = tuple(AUGMENTATION_SETS)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; the defaults are the lightweight2020 preset.

    Attributes (groups):
        model, model_overrides: registry name and builder overrides.
        init_from: the model whose weights the run starts from (`fit
            --init-from`, training.init_from): "pretrained:NAME" or the
            absolute path of a run directory or .keras file; None: random
            initialisation.
        modalities, target: network input channels and training target
            ("classes", "regions" or "whole_tumor", see bratskeras.labels).
        task: None (the classic NCR/ED/ET classes) or a labels.TASKS scheme
            whose own classes or regions the target trains (gli: 5 classes
            with RC, or regions WT, TC, ET, RC; menrt: background and GTV, or
            the GTV region, with modalities ("t1ce",)).
        loss, loss_kwargs: a name for `bratskeras.losses.get_loss`.
        optimizer ("adamw" | "adam"), learning_rate, weight_decay,
            clipnorm (global gradient norm; 0 disables).
        epochs, steps_per_epoch, batch_size, patch_size (d, h, w).
        crop ("bbox" | "center" | "none"), crop_size, spacing (mm per voxel
            the network works at, None: the source grid): preprocessing.
        foreground_fraction, augment, augment_on ("cpu" | "device"),
            augmentation (a set of bratskeras.augment: "paper" | "nnunet").
        reduce_lr_factor/patience/min_lr: ReduceLROnPlateau on val_loss
            (patience 0 disables); early_stopping_patience (0 disables).
        checkpoint_every: epochs between checkpoints/epoch-NNNN.keras.
        val_fraction, folds, fold, split_seed: 80/20 split or fold `fold` of
            `folds` (scikit-learn, fixed seed).
        precision, strategy, seed, deterministic, jit_compile ("auto" = XLA
            on GPUs only: it made Conv3D ~20x slower on CPU).
    """

    preset: str = "lightweight2020"
    model: str = "lightweight-unet"
    model_overrides: dict = field(default_factory=dict)
    init_from: str | None = None
    modalities: tuple = ("flair", "t1", "t1ce", "t2")
    target: str = _PIPELINE.target
    task: str | None = None
    loss: str = "dice_ce"
    loss_kwargs: dict = field(default_factory=lambda: {"ce_weight": 0.3, "dice_weight": 0.7})
    optimizer: str = "adamw"
    learning_rate: float = 5e-4
    weight_decay: float = 5e-4
    clipnorm: float = 1.0
    epochs: int = 100
    steps_per_epoch: int = 0  # 0: one pass over the training cases
    batch_size: int = _PIPELINE.batch_size
    patch_size: tuple = _PIPELINE.patch_size
    crop: str = _PREPROCESS.crop
    crop_size: tuple = _PREPROCESS.crop_size
    spacing: tuple | None = _PREPROCESS.spacing
    foreground_fraction: float = _PIPELINE.foreground_fraction
    augment: bool = _PIPELINE.augment
    augment_on: str = _PIPELINE.augment_on
    augmentation: str = "paper"  # the lightweight paper's set (bratskeras.augment.AUGMENTATION_SETS)
    reduce_lr_factor: float = 0.5
    reduce_lr_patience: int = 2
    reduce_lr_min: float = 1e-6
    early_stopping_patience: int = 10
    checkpoint_every: int = 5
    val_fraction: float = 0.2
    folds: int = 0
    fold: int = 0
    split_seed: int = 42
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = _PIPELINE.seed
    deterministic: bool = False
    jit_compile: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        object.__setattr__(self, "crop_size", tuple(int(s) for s in self.crop_size))
        # PreprocessSettings checks and normalises its own fields (crop, crop size, spacing): one check,
        # reported here as a one-line ConfigError instead of when the first case is cached.
        try:
            settings = self.preprocess_settings()
        except ValueError as error:
            raise ConfigError(f"preprocessing: {error}") from None
        object.__setattr__(self, "spacing", settings.spacing)
        _check(self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.strategy in STRATEGIES, f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        _check(self.augment_on in AUGMENT_ON, f"augment_on must be one of {AUGMENT_ON}, got {self.augment_on!r}")
        _check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _check(self.augmentation in AUGMENTATIONS,
               f"--augment must be one of {AUGMENTATIONS}, got {self.augmentation!r}")
        _check(_positive_number(self.learning_rate),
               f"--learning-rate must be a positive finite number, got {self.learning_rate!r}")
        _check(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _check(len(self.patch_size) == 3 and min(self.patch_size) >= 1,
               f"--patch-size must be three positive sizes, got {self.patch_size}")
        _check(self.steps_per_epoch >= 0, f"--steps-per-epoch must be >= 0, got {self.steps_per_epoch}")
        _check(self.folds == 0 or 0 <= self.fold < self.folds,
               f"--fold must be in 0..{self.folds - 1} for --folds {self.folds}, got {self.fold}")
        _check(self.folds != 1, "--folds must be 0 (80/20 split) or >= 2")
        _check(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _check(self.target in targets.TARGETS, f"--target must be one of {targets.NAMES}, got {self.target!r}")
        _check(self.loss in LOSS_TARGETS, f"--loss must be one of {sorted(LOSS_TARGETS)}, got {self.loss!r}")
        _check(self.target in LOSS_TARGETS[self.loss],
               f"--loss {self.loss} trains target {' or '.join(LOSS_TARGETS[self.loss])}, not {self.target}")
        _check(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _check(self.task is None or self.task in labels.TASKS,
               f"--task must be one of {labels.TASKS}, got {self.task!r}")
        _check(self.task is None or self.target in ("classes", "regions"),
               f"--task {self.task} trains its classes or regions: use target classes or regions, not {self.target}")

    def pipeline_config(self):
        """The data.PipelineConfig of this run's training patches."""
        return PipelineConfig(patch_size=self.patch_size, batch_size=self.batch_size,
                              foreground_fraction=self.foreground_fraction, target=self.target,
                              task=self.task, augment=self.augment, augment_on=self.augment_on,
                              augmentation=AUGMENTATION_SETS[self.augmentation], seed=self.seed)

    def preprocess_settings(self):
        """The preprocessing.PreprocessSettings the run caches its cases with."""
        return PreprocessSettings(crop=self.crop, crop_size=self.crop_size, spacing=self.spacing)

    def to_json(self):
        """The configuration as a JSON string (tuples become lists)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        """Builds a config from a dict (e.g. a config.json); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        _check(not unknown, f"unknown configuration keys: {sorted(unknown)}")
        return cls(**values)

    def comparable(self):
        """The fields that must match for `--resume` (the epoch budget may grow)."""
        values = json.loads(self.to_json())
        values.pop("epochs")
        return values


def _positive_number(value):
    """True for a finite number above 0 (not a bool, NaN, inf or a string from a hand-edited config.json)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check(condition, message):
    if not condition:
        raise ConfigError(message)


# The papers' set-ups (docs/reference.md sections 1 and 2), as each one's
# differences from TrainConfig's defaults (which are lightweight2020's). Plain data.
PRESETS = {
    "lightweight2020": {},
    "flair2017": {
        "model": "flair-unet",
        "modalities": ("flair",),
        "target": "whole_tumor",
        "loss": "flair_dice",
        "loss_kwargs": {"form": "negative"},
        "optimizer": "adam",
        "learning_rate": 1e-4,
        "weight_decay": 0.0,
        "clipnorm": 0.0,
        "batch_size": 1,
        "crop": "center",
        "crop_size": (192, 192, 154),
        "patch_size": (192, 192, 154),
        "foreground_fraction": 0.0,
        "augment": False,
        "reduce_lr_patience": 0,
        "early_stopping_patience": 0,
    },
}


def resolve_config(preset="lightweight2020", overrides=None):
    """A preset with `overrides` applied (None values are ignored).

    A target the preset's loss is not written for, with no loss named,
    trains with TARGET_LOSSES[target] (its own defaults).

    Raises:
        ConfigError: unknown preset or key, or an invalid value.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of: {', '.join(PRESETS)}")
    values = {"preset": preset, **PRESETS[preset]}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    preset_loss = values.get("loss", TrainConfig.loss)
    target = overrides.get("target", values.get("target", TrainConfig.target))
    if "loss" not in overrides and target in TARGET_LOSSES and target not in LOSS_TARGETS[preset_loss]:
        overrides["loss"] = TARGET_LOSSES[target]
    if "loss" in overrides and "loss_kwargs" not in overrides and overrides["loss"] != preset_loss:
        values["loss_kwargs"] = {}  # the preset's options belong to the preset's loss
    values.update(overrides)
    return TrainConfig.from_dict(values)


def resume_config(run_dir, overrides=None):
    """The saved configuration of `run_dir` with `overrides` (None values ignored).

    `fit(..., resume=True)` then refuses any override that changes the run
    (anything but a larger epoch budget).

    Raises:
        ConfigError: no config.json in run_dir, or an invalid value.
    """
    import os

    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir}: nothing to resume (no config.json)")
    with open(path) as stream:
        values = json.load(stream)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(values)

