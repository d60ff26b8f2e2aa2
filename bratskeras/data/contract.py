"""A model's input contract: what it needs around it, stored inside every model file bratskeras writes.

A network alone does not say how its input was made: which modalities in
which channel order, at what voxel spacing, normalised how, cropped how, or
what its output channels stand for. A run keeps that in its config.json; a
`.keras` copied out of the run folder lost it (a 3 mm model was then
predicted at 1 mm). `InputContract` is that knowledge as one small frozen
record, built once from a run's configuration (`InputContract.from_run_config`)
and written into every artefact as the same JSON object (`InputContract.to_dict`,
under the name CONTRACT_KEY): where each model format keeps it, and reading
and writing it there, is bratskeras.data.model_files (`MODEL_FILES`, one row
per format). A damaged contract is a one-line ModelError naming the file; a
missing one is None (the caller guesses, and says so).
"""

import dataclasses
import json
from dataclasses import dataclass

from bratskeras import __version__
from bratskeras.core import labels, targets
from bratskeras.core.errors import ConfigError, ModelError
from bratskeras.data.preprocessing import NORMALISATION, NORMALISATIONS, PreprocessSettings

CONTRACT_KEY = "bratskeras_contract"
CONTRACT_FILE = f"{CONTRACT_KEY}.json"
# Raised when a field is added, renamed or changes meaning; readers refuse newer formats.
# 2 added `postprocess`; a format-1 contract reads as one without post-processing.
FORMAT_VERSION = 2
_ADDED = {"postprocess": (2, ())}  # field: (the format that added it, its value in older contracts)
_DEFAULTS = PreprocessSettings()


@dataclass(frozen=True)
class InputContract:
    """What a model needs around it to be run on a case.

    Attributes:
        modalities: canonical modality names (labels.ALL_MODALITIES) in input
            channel order.
        target: what the output channels stand for, a key of targets.TARGETS.
        task: the labels.TASKS scheme whose classes or regions the model
            outputs, or None for the classic NCR/ED/ET classes.
        spacing: (d, h, w) voxel size in mm the network works at, or None for
            the source grid (nnU-Net's target spacing; the demo: 3 mm).
        normalisation: a name of preprocessing.NORMALISATIONS (today the
            per-channel z-score over the brain voxels: not 0, or not the
            constant background, preprocessing.foreground_mask).
        crop, crop_size, margin: preprocessing.PreprocessSettings' crop.
        patch_size: (d, h, w) training patches, or None when unknown; a
            size-free model's default window follows it.
        input_multiple: the network takes spatial sizes that are multiples of
            it without padding (2**poolings); predict's windows are rounded to it.
        postprocess: the post-processing steps predict applies to the model's
            output unless told otherwise (bratskeras.predict.postprocessing's
            step dicts, e.g. {"name": "et_enhancement", "percentile": 75}; checked
            in full there, against the model's task and inputs); () for none.
        bratskeras_version: the bratskeras that wrote the contract.
        format_version: FORMAT_VERSION when it was written.
    """

    modalities: tuple
    target: str
    task: str | None = None
    spacing: tuple | None = None
    normalisation: str = NORMALISATION
    crop: str = _DEFAULTS.crop
    crop_size: tuple = _DEFAULTS.crop_size
    margin: int = _DEFAULTS.margin
    patch_size: tuple | None = None
    input_multiple: int = 1
    postprocess: tuple = ()
    bratskeras_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        """Normalises the types and raises ValueError (one reason) for a contract no model can have."""
        if isinstance(self.modalities, str) or not self.modalities:
            raise ValueError(f"modalities must be a non-empty list, got {self.modalities!r}")
        unknown = [m for m in self.modalities if m not in labels.ALL_MODALITIES]
        if unknown or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names of {labels.ALL_MODALITIES}, got {self.modalities!r}")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.target not in targets.TARGETS:
            raise ValueError(f"target must be one of {targets.NAMES}, got {self.target!r}")
        if self.task is not None and self.task not in labels.TASKS:
            raise ValueError(f"task must be one of {labels.TASKS} or null, got {self.task!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation {self.normalisation!r} is not one this bratskeras applies "
                             f"({', '.join(NORMALISATIONS)})")
        # PreprocessSettings checks crop, crop size, margin and spacing (one check, one message).
        if not _is_int(self.margin):
            raise ValueError(f"margin must be an integer, got {self.margin!r}")
        if self.spacing is not None and not _is_triple(self.spacing, (int, float)):
            raise ValueError(f"spacing must be three voxel sizes in mm or null, got {self.spacing!r}")
        if not _is_triple(self.crop_size, (int,)):
            raise ValueError(f"crop_size must be three integers, got {self.crop_size!r}")
        settings = self.preprocess_settings()
        object.__setattr__(self, "crop_size", settings.crop_size)
        object.__setattr__(self, "spacing", settings.spacing)
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", _positive_sizes(self.patch_size, "patch_size"))
        if not _is_int(self.input_multiple) or self.input_multiple < 1:
            raise ValueError(f"input_multiple must be a positive integer, got {self.input_multiple!r}")
        object.__setattr__(self, "postprocess", _steps(self.postprocess))
        if not isinstance(self.bratskeras_version, str):
            raise ValueError(f"bratskeras_version must be a string, got {self.bratskeras_version!r}")
        if not _is_int(self.format_version) or self.format_version < 1:
            raise ValueError(f"format_version must be a positive integer, got {self.format_version!r}")

    def preprocess_settings(self):
        """The preprocessing.PreprocessSettings a case is preprocessed with for this model."""
        return PreprocessSettings(crop=self.crop, crop_size=self.crop_size, margin=self.margin,
                                  spacing=self.spacing)

    def output_channels(self):
        """How many output channels a model with this contract has."""
        return targets.get_target(self.target).channels(self.task)

    def needs(self):
        """The fields that decide how the model is run: all but who wrote the contract and when."""
        values = self.to_dict()
        del values["bratskeras_version"], values["format_version"]
        return values

    def to_dict(self):
        """JSON-ready dict (tuples as lists), every field present."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self):
        """The JSON text stored in model files (sorted keys, so equal contracts are equal bytes)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values, where):
        """The contract stored in `where` (a file, for messages), checked.

        Raises:
            ModelError: one line naming `where`: not an object, a field
                missing, unknown or invalid, or a newer format than this
                bratskeras reads.
        """
        if not isinstance(values, dict):
            raise ModelError(f"{where}: damaged {CONTRACT_KEY} (a JSON object expected, got {type(values).__name__})")
        version = values.get("format_version")
        if _is_int(version) and version > FORMAT_VERSION:
            raise ModelError(f"{where}: {CONTRACT_KEY} format {version} is newer than this bratskeras reads "
                             f"({FORMAT_VERSION}); upgrade bratskeras")
        names = [f.name for f in dataclasses.fields(cls)]
        if _is_int(version):
            values = {**{name: old for name, (added, old) in _ADDED.items() if version < added}, **values}
        missing = [n for n in names if n not in values]
        unknown = sorted(set(values) - set(names))
        if missing or unknown:
            problem = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
            raise ModelError(f"{where}: damaged {CONTRACT_KEY} ({problem})")
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ModelError(f"{where}: damaged {CONTRACT_KEY} ({error})") from None

    @classmethod
    def from_json(cls, text, where):
        """`from_dict` of JSON text; unparsable text is a damaged contract too."""
        try:
            values = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise ModelError(f"{where}: damaged {CONTRACT_KEY} (not JSON: {error})") from None
        return cls.from_dict(values, where)

    @classmethod
    def from_run_config(cls, run_config, input_multiple=1):
        """The contract of a run's configuration, the one resolution.

        Args:
            run_config: a training.config_file.RunConfigFile: `.config` the
                run's TrainConfig (a partial config.json's missing fields
                resolved as fit resolves them), `.given` the fields the file
                names (a patch size it does not name stays unknown, None),
                `.margin` its crop margin, `.path` the file, for messages.
            input_multiple: the network's spatial divisor (model_setup.input_multiple).

        Raises:
            ConfigError: one line naming the file for values no model can have.
        """
        config = run_config.config
        try:
            return cls(modalities=config.modalities, target=config.target, task=config.task,
                       spacing=config.spacing, crop=config.crop, crop_size=config.crop_size,
                       margin=run_config.margin,
                       patch_size=config.patch_size if "patch_size" in run_config.given else None,
                       input_multiple=input_multiple, postprocess=config.postprocess)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{run_config.path}: {error}") from None

    def describe(self):
        """One readable line: modalities in order, spacing, normalisation, crop, target, labels."""
        crop = {"bbox": f"brain box + {self.margin} voxels" if self.margin else "brain box",
                "center": f"centre {'x'.join(map(str, self.crop_size))}", "none": "none"}[self.crop]
        return (f"modalities {','.join(self.modalities)}; spacing {spacing_text(self.spacing)}; "
                f"normalisation {self.normalisation}; crop {crop}; target {self.target}; "
                f"labels {self.task or 'classic (NCR, ED, ET)'}; postprocess {steps_text(self.postprocess)}")


def steps_text(steps):
    """Post-processing steps as --postprocess writes them ("et_enhancement:percentile=75 then ..."), or "none"."""
    return " then ".join(_step_text(step) for step in steps) or "none"


def _step_text(step):
    options = ",".join(f"{key}={value}" for key, value in step.items() if key != "name")
    return f"{step['name']}:{options}" if options else step["name"]


def spacing_text(spacing):
    """"3x3x3 mm", or "source grid" for None."""
    return "source grid" if spacing is None else "x".join(f"{s:g}" for s in spacing) + " mm"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_triple(value, kinds):
    """True for a list or tuple of three numbers of `kinds` (bools are not numbers here)."""
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, kinds) and not isinstance(v, bool) for v in value))


def is_steps(value):
    """True for a list of post-processing step dicts, each with a "name" (bratskeras.predict.postprocessing checks
    the rest: which names, options and values)."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(step, dict) and isinstance(step.get("name"), str) for step in value)


def _steps(steps):
    """`steps` as a tuple of dicts with a "name"; ValueError (one line) for anything else."""
    if not is_steps(steps):
        raise ValueError(f"postprocess must be a list of steps ({{\"name\": ..., option: value}}), got {steps!r}")
    return tuple(dict(step) for step in steps)


def _positive_sizes(sizes, what):
    if not _is_triple(sizes, (int,)) or min(sizes) < 1:
        raise ValueError(f"{what} must be three positive integers, got {sizes!r}")
    return tuple(sizes)
