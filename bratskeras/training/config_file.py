"""Reading a run's config.json: every field checked by its TrainConfig rule, then loaded through TrainConfig.

A run's config.json is written by fit, but users edit it by hand and other
tools copy it: every reader (predict, export, fit --resume, --init-from)
goes through `read_config_file`, which checks each field's type and range
with the field's own rule (training.fields), so a bad value is one line
naming the file and field, not a TypeError deep inside whatever reads it
first. `read_run_config` makes the TrainConfig of a run's config.json;
`load_config_file` the one predict needs, from a config.json that may be
hand-written and partial: the missing fields are resolved as fit resolves
them (`resolve_config`: preset, target's loss, task's modalities).
"""

import dataclasses
import json
import os
from dataclasses import dataclass

from bratskeras.core import checks
from bratskeras.core.errors import ConfigError
from bratskeras.core.run_folder import RunFolder
from bratskeras.data.preprocessing import PreprocessSettings
from bratskeras.training.config import DEFAULT_PRESET, PRESETS, TrainConfig, resolve_config, with_task_rule
from bratskeras.training.fields import rule_of


def resume_config(run_dir, overrides=None):
    """The saved configuration of `run_dir` with `overrides` (None values ignored).

    `fit(..., resume=True)` then refuses any override that changes the run
    (anything but a larger epoch budget).

    Raises:
        ConfigError: no config.json in run_dir, a damaged one (naming the
            file and field, `read_run_config`), or an invalid override.
    """
    path = RunFolder(run_dir).config
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir}: nothing to resume (no config.json)")
    values = dataclasses.asdict(read_run_config(path))
    values.update(with_task_rule({k: v for k, v in (overrides or {}).items() if v is not None}))
    return TrainConfig.from_dict(values)


# What each field of a config.json may hold: (check, what it must be). TrainConfig's fields' rules, plus
# the crop margin a hand-written config may give predict (bratskeras.core.contract reads it).
FIELD_RULES = {**{item.name: rule_of(item) for item in dataclasses.fields(TrainConfig)},
               "margin": checks.integer_from(0)}


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


@dataclass(frozen=True)
class RunConfigFile:
    """A config.json as predict reads it: a TrainConfig, and what the file itself said.

    Attributes:
        path: the file.
        config: its TrainConfig; the fields the file lacks resolved as fit
            resolves them (`load_config_file`).
        given: the names of the fields the file holds.
        margin: the crop margin a hand-written config may add (voxels;
            default PreprocessSettings').
    """

    path: str
    config: TrainConfig
    given: frozenset
    margin: int = PreprocessSettings().margin

    @classmethod
    def of(cls, config, where):
        """The RunConfigFile fit writes for `config` (every field given)."""
        return cls(where, config, frozenset(f.name for f in dataclasses.fields(config)))

    def values(self):
        """{field: JSON value} of the fields the file holds, as it holds them (checked)."""
        values = json.loads(self.config.to_json())
        return {name: values[name] for name in self.given if name in values}


def load_config_file(path, default_modalities=None):
    """A run's (or a hand-written) config.json read through TrainConfig (`config_from_values`).

    Raises:
        ConfigError: one line naming `path` and the field that is wrong.
        OSError: the file cannot be read (the CLI names it).
    """
    return config_from_values(read_config_file(path), os.fspath(path), default_modalities)


def config_from_values(values, where, default_modalities=None):
    """The RunConfigFile of a config.json's dict `values` (`where`: its file, for messages).

    Every field it holds is checked (`check_config_values`); the fields it
    lacks come from `resolve_config` (its preset, default lightweight2020;
    the loss of its target; a task's own modalities), and modalities it
    names neither itself nor through a task are `default_modalities` when
    given (predict: the network's channel count's).

    Raises:
        ConfigError: one line naming `where` and the field that is wrong.
    """
    check_config_values(values, where)
    overrides = {name: value for name, value in values.items() if name != "margin"}
    if "modalities" not in values and values.get("task") is None and default_modalities:
        overrides["modalities"] = tuple(default_modalities)
    # A preset this bratskeras does not know (a newer one) still names the run: its fields are in the file.
    preset = values.get("preset", DEFAULT_PRESET)
    try:
        config = resolve_config(preset if preset in PRESETS else DEFAULT_PRESET, overrides)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return RunConfigFile(where, config, frozenset(values), values.get("margin", RunConfigFile.margin))
