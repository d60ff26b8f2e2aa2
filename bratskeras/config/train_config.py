"""Training configuration as data: a frozen dataclass whose fields carry their own rules and flags.

Each field is written once (training.fields.setting): its type, default,
rule, message and `bratskeras fit` flag; TrainConfig checks itself with the
rules, config.json's reader (`check_config_values`) with the same rules, and
bratskeras.cli.train makes its options from the flags (`fields.cli_fields`).

`resolve_config(preset, overrides)` is the one resolution shared by the
library and the CLI: a preset, the user's overrides, the loss a target
trains with (TARGET_LOSSES) and the task rule (a task trains on its own
modalities, `task_modalities`). The result is saved as `config.json` in every
run directory, and `--resume` refuses a run whose saved configuration differs
from the one asked for.

Each default is declared once: TrainConfig's defaults are the lightweight2020
preset (PRESETS holds each preset's differences from them); the pipeline's
and the preprocessing's own fields take their defaults (and the pipeline's
their rules) from data.pipeline and preprocessing.PreprocessSettings, and
`pipeline_config`/`preprocess_settings` hand them back as those objects.
"""

import dataclasses
import json
from dataclasses import dataclass

from bratskeras.config.fields import Flag, problem, setting
from bratskeras.core import checks, labels, targets
from bratskeras.core.defaults import DICE_CE_WEIGHTS
from bratskeras.core.errors import ConfigError
from bratskeras.core.model_presets import FLAIR_PAPER_CROP
from bratskeras.data.augment import AUGMENTATION_SETS
from bratskeras.data.contract import is_steps
from bratskeras.data.pipeline import AUGMENT_ON, RULES, PipelineConfig
from bratskeras.data.preprocessing import CROPS, PreprocessSettings

_PIPELINE = PipelineConfig()
_PREPROCESS = PreprocessSettings()
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# Which training target each loss is written for (bratskeras.models.losses).
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
DEFAULT_PRESET = "lightweight2020"

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
        "crop_size": FLAIR_PAPER_CROP,
        "patch_size": FLAIR_PAPER_CROP,
        "foreground_fraction": 0.0,
        "augment": False,
        "reduce_lr_patience": 0,
        "early_stopping_patience": 0,
    },
}


def _is_spacing(value):
    return value is None or (isinstance(value, (list, tuple)) and len(value) == 3
                             and all(checks.is_number(v) and v > 0 for v in value))


def _is_options(value):
    """A JSON object of builder or loss options: string keys, scalar values."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, (str, bool)) or checks.is_number(v))
        for k, v in value.items())


def _is_modalities(value):
    return (isinstance(value, (list, tuple)) and len(value) >= 1 and len(set(map(str, value))) == len(value)
            and all(isinstance(v, str) and v in labels.ALL_MODALITIES for v in value))


def _name(what):
    return (lambda v: isinstance(v, str) and v != ""), what


_OPTIONS = (_is_options, "an object of builder options (name: number)")


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
            Modalities left None are the task's (`task_modalities`).
        task: None (the classic NCR/ED/ET classes) or a labels.TASKS scheme
            whose own classes or regions the target trains (gli: 5 classes
            with RC, or regions WT, TC, ET, RC; menrt: background and GTV, or
            the GTV region, with modalities ("t1ce",)).
        loss, loss_kwargs: a name for `bratskeras.models.losses.get_loss`.
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

    preset: str = setting(DEFAULT_PRESET, rule=_name("a preset name"), flag=Flag(
        "--preset", "choice", choices=tuple(PRESETS),
        help="The paper whose training set-up to start from (default lightweight2020)."))
    model: str = setting("lightweight-unet", rule=_name("a registry model name"), flag=Flag(
        "--model", help="Registry model name (default: the preset's)."))
    model_overrides: dict = setting(factory=dict, rule=_OPTIONS, flag=Flag(
        "--model-arg", "key_values", help="Builder override KEY=VALUE, e.g. base_filters=8."))
    init_from: str | None = setting(None, rule=(
        lambda v: v is None or (isinstance(v, str) and v != ""), "null or the model the run was fine-tuned from"),
        flag=Flag("--init-from", "model", metavar="MODEL", help=(
            "Fine-tune MODEL (pretrained:NAME, a run directory or a .keras file): its weights, architecture, "
            "inputs and preprocessing; the preset (default: its own) and flags say how to train.")))
    modalities: tuple | None = setting(None, rule=(
        _is_modalities, f"a list of distinct modality names ({', '.join(labels.ALL_MODALITIES)})"))
    target: str = setting(_PIPELINE.target, rule=RULES["target"],
                          refuse=f"--target must be one of {targets.NAMES}, got {{value!r}}", flag=Flag(
        "--target", "choice", choices=targets.NAMES, help=(
            "Softmax classes (4, or the task's), sigmoid regions (WT, TC, ET, or the task's: gli WT, TC, ET, "
            "RC) or whole tumor.")))
    task: str | None = setting(None, rule=(
        lambda v: v is None or v in labels.TASKS, f"null or one of {', '.join(labels.TASKS)}"),
        refuse=f"--task must be one of {labels.TASKS}, got {{value!r}}", flag=Flag(
        "--task", "choice", choices=labels.TASKS, help=(
            "Train this 2023-2025 task's own classes or regions (gli: 5 classes with RC; menrt: GTV from T1c "
            "alone).")))
    postprocess: tuple = setting((), rule=(is_steps, 'a list of post-processing steps ({"name": ..., option: value})'),
                                 flag=Flag("--postprocess", "steps", metavar="STEP", help=(
        "Post-processing that predict applies to this model, recorded in its input contract: "
        "NAME[:KEY=VALUE,...] as predict --postprocess takes it, repeatable (default: none; a fine-tuned "
        "run keeps its source's).")))
    loss: str = setting("dice_ce", rule=checks.one_of(tuple(LOSS_TARGETS)),
                        refuse=f"--loss must be one of {sorted(LOSS_TARGETS)}, got {{value!r}}", flag=Flag(
        "--loss", "choice", choices=tuple(LOSS_TARGETS), help=(
            "Loss (default: the preset's; with another --target, Dice+CE for classes, Dice+BCE for regions).")))
    loss_kwargs: dict = setting(factory=lambda: dict(DICE_CE_WEIGHTS), rule=(
        _is_options, "an object of loss options (name: number)"))
    optimizer: str = setting("adamw", rule=checks.one_of(OPTIMIZERS),
                             refuse=f"optimizer must be one of {OPTIMIZERS}, got {{value!r}}")
    learning_rate: float = setting(5e-4, rule=checks.between(0, None, low_open=True),
                                   refuse="--learning-rate must be a positive finite number, got {value!r}",
                                   flag=Flag("--learning-rate", "float"))
    weight_decay: float = setting(5e-4, rule=checks.between(0, None))
    clipnorm: float = setting(1.0, rule=checks.between(0, None))
    epochs: int = setting(100, rule=checks.integer_from(1), refuse="--epochs must be >= 1, got {value}",
                          flag=Flag("--epochs", "int"))
    # 0: one pass over the training cases.
    steps_per_epoch: int = setting(0, rule=checks.integer_from(0), refuse="--steps-per-epoch must be >= 0, got {value}",
                                   flag=Flag("--steps-per-epoch", "int",
                                             help="Batches per epoch (default: one pass over the cases)."))
    batch_size: int = setting(_PIPELINE.batch_size, rule=RULES["batch_size"],
                              refuse="--batch-size must be >= 1, got {value}",
                              flag=Flag("--batch-size", "int", help="Global batch size."))
    patch_size: tuple = setting(_PIPELINE.patch_size, rule=RULES["patch_size"],
                                refuse="--patch-size must be three positive sizes, got {value}",
                                flag=Flag("--patch-size", "sizes", help="D,H,W of training patches."))
    crop: str = setting(_PREPROCESS.crop, rule=checks.one_of(CROPS))
    crop_size: tuple = setting(_PREPROCESS.crop_size, rule=checks.SIZES)
    spacing: tuple | None = setting(_PREPROCESS.spacing, rule=(
        _is_spacing, "null (the source grid) or three positive voxel sizes in mm"), flag=Flag(
        "--spacing", "spacing", help=("Voxel size in mm the network works at, e.g. 2 or 2,2,2 (default: the "
                                      "source grid); predict resamples back.")))
    foreground_fraction: float = setting(_PIPELINE.foreground_fraction, rule=RULES["foreground_fraction"])
    augment: bool = setting(_PIPELINE.augment, rule=checks.BOOLEAN)
    augment_on: str = setting(_PIPELINE.augment_on, rule=RULES["augment_on"],
                              refuse=f"augment_on must be one of {AUGMENT_ON}, got {{value!r}}", flag=Flag(
        "--augment-on", "choice", choices=AUGMENT_ON, help="Where augmentation runs."))
    # The lightweight paper's set (bratskeras.data.augment.AUGMENTATION_SETS).
    augmentation: str = setting("paper", rule=checks.one_of(AUGMENTATIONS),
                                refuse=f"--augment must be one of {AUGMENTATIONS}, got {{value!r}}", flag=Flag(
        "--augment", "choice", choices=AUGMENTATIONS,
        help="Augmentation set: the lightweight paper's, or nnU-Net's (default: the preset's)."))
    reduce_lr_factor: float = setting(0.5, rule=checks.between(0, 1, low_open=True, high_open=True))
    reduce_lr_patience: int = setting(2, rule=checks.integer_from(0))
    reduce_lr_min: float = setting(1e-6, rule=checks.between(0, None))
    early_stopping_patience: int = setting(10, rule=checks.integer_from(0))
    checkpoint_every: int = setting(5, rule=checks.integer_from(1), refuse="checkpoint_every must be >= 1, got {value}")
    val_fraction: float = setting(0.2, rule=checks.between(0, 1, low_open=True, high_open=True),
                                  refuse="val_fraction must be in (0, 1), got {value}")
    folds: int = setting(0, rule=(lambda v: checks.is_integer(v) and (v == 0 or v >= 2),
                                  "0 (80/20 split) or an integer >= 2"),
                         refuse="--folds must be 0 (80/20 split) or >= 2", flag=Flag(
        "--folds", "int", help="k for k-fold cross-validation (default: 80/20 split)."))
    fold: int = setting(0, rule=checks.integer_from(0), flag=Flag("--fold", "int", help="Which fold to train (0-based)."))
    split_seed: int = setting(42, rule=checks.INTEGER)
    precision: str = setting("auto", rule=checks.one_of(PRECISIONS),
                             refuse=f"--precision must be one of {PRECISIONS}, got {{value!r}}",
                             flag=Flag("--precision", "choice", choices=PRECISIONS))
    strategy: str = setting("auto", rule=checks.one_of(STRATEGIES),
                            refuse=f"--strategy must be one of {STRATEGIES}, got {{value!r}}",
                            flag=Flag("--strategy", "choice", choices=STRATEGIES))
    seed: int = setting(_PIPELINE.seed, rule=checks.INTEGER, flag=Flag("--seed", "int"))
    deterministic: bool = setting(False, rule=checks.BOOLEAN, flag=Flag(
        "--deterministic", "switch", help="Deterministic TF ops (reproducible on CPU)."))
    jit_compile: str = setting("auto", rule=(lambda v: isinstance(v, (str, bool)) and v in JIT_COMPILE,
                                             '"auto", "true", "false", true or false'))

    def __post_init__(self):
        if self.modalities is None:
            object.__setattr__(self, "modalities", task_modalities(self.task))
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        object.__setattr__(self, "crop_size", tuple(int(s) for s in self.crop_size))
        if is_steps(self.postprocess):
            object.__setattr__(self, "postprocess", tuple(dict(step) for step in self.postprocess))
        # PreprocessSettings checks and normalises its own fields (crop, crop size, spacing): one check,
        # reported here as a one-line ConfigError instead of when the first case is cached.
        try:
            settings = self.preprocess_settings()
        except ValueError as error:
            raise ConfigError(f"preprocessing: {error}") from None
        object.__setattr__(self, "spacing", settings.spacing)
        for item in dataclasses.fields(self):  # each field's own rule and message (training.fields)
            message = problem(item, getattr(self, item.name))
            _check(message is None, message)
        # The rules that tie fields together.
        _check(self.folds == 0 or self.fold < self.folds,
               f"--fold must be in 0..{self.folds - 1} for --folds {self.folds}, got {self.fold}")
        _check(self.target in LOSS_TARGETS[self.loss],
               f"--loss {self.loss} trains target {' or '.join(LOSS_TARGETS[self.loss])}, not {self.target}")
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


def task_modalities(task):
    """The task rule: the modalities a run of `task` trains on unless it names its own.

    A task's scheme names its images (MEN-RT: T1c alone); None, or a name
    that is not a task (refused by TrainConfig's own check), gets the four
    classic modalities.
    """
    scheme = labels.SCHEMES.get(task) if task in labels.TASKS else None
    return tuple(scheme.modalities) if scheme is not None else labels.ALL_MODALITIES


def _check(condition, message):
    if not condition:
        raise ConfigError(message)


def resolve_config(preset=DEFAULT_PRESET, overrides=None):
    """A preset with `overrides` applied (None values are ignored): the library's and the CLI's resolution.

    A target the preset's loss is not written for, with no loss named,
    trains with TARGET_LOSSES[target] (its own defaults). A task named
    without modalities trains on the task's own (`task_modalities`), in
    place of the preset's.

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
    values.update(with_task_rule(overrides))
    return TrainConfig.from_dict(values)


def with_task_rule(overrides):
    """`overrides` with the task's modalities added when they name a task and no modalities."""
    if overrides.get("task") is not None and overrides.get("modalities") is None:
        return {**overrides, "modalities": task_modalities(overrides["task"])}
    return overrides
