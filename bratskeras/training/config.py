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
import os
from dataclasses import dataclass, field

from bratskeras.core import labels, targets
from bratskeras.core.errors import ConfigError
from bratskeras.data.augment import AUGMENTATION_SETS
from bratskeras.data.pipeline import AUGMENT_ON, PipelineConfig
from bratskeras.data.preprocessing import CROPS, PreprocessSettings

_PIPELINE = PipelineConfig()
_PREPROCESS = PreprocessSettings()
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# Which training target each loss is written for (bratskeras.training.losses).
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
# config.json's jit_compile: "auto" (XLA on GPUs only, runtime.jit_compile), or XLA on or off.
JIT_COMPILE = ("auto", "true", "false", True, False)
# The named augmentation sets of bratskeras.data.augment (fit --augment).
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
            ("classes", "regions" or "whole_tumor", see bratskeras.core.labels).
        task: None (the classic NCR/ED/ET classes) or a labels.TASKS scheme
            whose own classes or regions the target trains (gli: 5 classes
            with RC, or regions WT, TC, ET, RC; menrt: background and GTV, or
            the GTV region, with modalities ("t1ce",)).
        loss, loss_kwargs: a name for `bratskeras.training.losses.get_loss`.
        optimizer ("adamw" | "adam"), learning_rate, weight_decay,
            clipnorm (global gradient norm; 0 disables).
        epochs, steps_per_epoch, batch_size, patch_size (d, h, w).
        crop ("bbox" | "center" | "none"), crop_size, spacing (mm per voxel
            the network works at, None: the source grid): preprocessing.
        foreground_fraction, augment, augment_on ("cpu" | "device"),
            augmentation (a set of bratskeras.data.augment: "paper" | "nnunet").
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
    augmentation: str = "paper"  # the lightweight paper's set (bratskeras.data.augment.AUGMENTATION_SETS)
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
        ConfigError: no config.json in run_dir, a damaged one (naming the
            file and field, `read_run_config`), or an invalid override.
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir}: nothing to resume (no config.json)")
    values = dataclasses.asdict(read_run_config(path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(values)


# ---------------------------------------------------------------- reading config.json
# A run's config.json is written by fit, but users edit it by hand and other tools copy it: every
# reader (predict, export, fit --resume, --init-from) goes through `read_config_file`, which checks
# each field's type and range, so a bad value is one line naming the file and field, not a TypeError
# deep inside whatever reads it first.

CONFIG_FILE = "config.json"


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sizes(value):
    """Three positive integers (a list in JSON)."""
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_integer(v) and v >= 1 for v in value)


def _is_spacing(value):
    return value is None or (isinstance(value, (list, tuple)) and len(value) == 3
                             and all(_is_number(v) and v > 0 for v in value))


def _is_options(value):
    """A JSON object of builder or loss options: string keys, scalar values."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, (str, bool)) or _is_number(v)) for k, v in value.items())


def _is_modalities(value):
    return (isinstance(value, (list, tuple)) and len(value) >= 1 and len(set(map(str, value))) == len(value)
            and all(isinstance(v, str) and v in labels.ALL_MODALITIES for v in value))


def _one_of(choices):
    return (lambda value: isinstance(value, (str, bool)) and value in choices), f"one of {', '.join(map(str, choices))}"


def _between(low, high, low_open=False, high_open=False):
    def check(value):
        return (_is_number(value) and (value > low if low_open else value >= low)
                and (high is None or (value < high if high_open else value <= high)))
    brackets = ("(" if low_open else "[") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}" + (
        ")" if high_open else "]"))
    return check, f"a number in {brackets}"


def _integer_from(low):
    return (lambda value: _is_integer(value) and value >= low), f"an integer >= {low}"


def _string_or_null(value):
    return value is None or (isinstance(value, str) and value != "")


# What each field of a config.json may hold: (check, what it must be). TrainConfig's fields, plus the
# crop margin a hand-written config may give predict (bratskeras.core.contract reads it).
FIELD_RULES = {
    "preset": (lambda v: isinstance(v, str) and v != "", "a preset name"),
    "model": (lambda v: isinstance(v, str) and v != "", "a registry model name"),
    "model_overrides": (_is_options, "an object of builder options (name: number)"),
    "init_from": (_string_or_null, "null or the model the run was fine-tuned from"),
    "modalities": (_is_modalities, f"a list of distinct modality names ({', '.join(labels.ALL_MODALITIES)})"),
    "target": _one_of(targets.NAMES),
    "task": (lambda v: v is None or v in labels.TASKS, f"null or one of {', '.join(labels.TASKS)}"),
    "loss": _one_of(tuple(LOSS_TARGETS)),
    "loss_kwargs": (_is_options, "an object of loss options (name: number)"),
    "optimizer": _one_of(OPTIMIZERS),
    "learning_rate": _between(0, None),
    "weight_decay": _between(0, None),
    "clipnorm": _between(0, None),
    "epochs": _integer_from(1),
    "steps_per_epoch": _integer_from(0),
    "batch_size": _integer_from(1),
    "patch_size": (_is_sizes, "three positive integers"),
    "crop": _one_of(CROPS),
    "crop_size": (_is_sizes, "three positive integers"),
    "spacing": (_is_spacing, "null (the source grid) or three positive voxel sizes in mm"),
    "margin": _integer_from(0),
    "foreground_fraction": _between(0, 1),
    "augment": (lambda v: isinstance(v, bool), "true or false"),
    "augment_on": _one_of(AUGMENT_ON),
    "augmentation": _one_of(AUGMENTATIONS),
    "reduce_lr_factor": _between(0, 1, low_open=True, high_open=True),
    "reduce_lr_patience": _integer_from(0),
    "reduce_lr_min": _between(0, None),
    "early_stopping_patience": _integer_from(0),
    "checkpoint_every": _integer_from(1),
    "val_fraction": _between(0, 1, low_open=True, high_open=True),
    "folds": (lambda v: _is_integer(v) and (v == 0 or v >= 2), "0 (80/20 split) or an integer >= 2"),
    "fold": _integer_from(0),
    "split_seed": (_is_integer, "an integer"),
    "precision": _one_of(PRECISIONS),
    "strategy": _one_of(STRATEGIES),
    "seed": (_is_integer, "an integer"),
    "deterministic": (lambda v: isinstance(v, bool), "true or false"),
    "jit_compile": (lambda v: isinstance(v, (str, bool)) and v in JIT_COMPILE, '"auto", "true", "false", true or false'),
}


def check_config_values(values, where):
    """Checks the type and range of every field `values` (a config.json's dict) holds.

    Fields it lacks are not required (a hand-written config for predict;
    `TrainConfig.from_dict` fills its defaults); fields no run has are refused.

    Raises:
        ConfigError: "<where>: field <name> must be <what>, got <value>"
            for the first bad field, or naming the first unknown one.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: must hold a JSON object of training settings, found a "
                          f"{type(values).__name__}")
    unknown = sorted(set(values) - set(FIELD_RULES))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (a run's config.json holds TrainConfig's fields)")
    for name, (check, what) in FIELD_RULES.items():
        if name in values and not check(values[name]):
            shown = json.dumps(values[name])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ConfigError(f"{where}: field {name} must be {what}, got {shown}")


def read_config_file(path):
    """A run's config.json as a dict, every field it holds checked (`check_config_values`).

    Raises:
        ConfigError: one line naming `path`: not JSON, not an object, or
            the first field of a wrong type or out of range.
        OSError: the file cannot be read (the CLI names it).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            values = json.load(stream)
    except ValueError as error:  # UnicodeDecodeError included
        raise ConfigError(f"{path}: not valid JSON ({str(error).splitlines()[0] if str(error) else 'empty'})") from None
    check_config_values(values, path)
    return values


def read_run_config(path):
    """The TrainConfig a run's config.json holds (`read_config_file`, then TrainConfig's own checks).

    Raises:
        ConfigError: one line naming `path` and the field that is wrong
            (also fields that contradict each other, e.g. a loss and target).
    """
    values = read_config_file(path)
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
