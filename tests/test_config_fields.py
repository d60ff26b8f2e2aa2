"""Each TrainConfig field written once: its rule, message and flag in its metadata; one resolution; a run folder."""

import dataclasses
import json
import os

import click
import pytest

from bratskeras.config import fields
from bratskeras.config.config_file import FIELD_RULES, check_config_values, load_config_file, resume_config
from bratskeras.config.train_config import TrainConfig, resolve_config
from bratskeras.core import defaults, labels
from bratskeras.core.errors import ConfigError
from bratskeras.core.run_folder import RunFolder
from bratskeras.data.pipeline import PipelineConfig


def test_every_field_has_a_rule_that_accepts_its_default():
    config = TrainConfig()
    for item in dataclasses.fields(TrainConfig):
        check, what = fields.rule_of(item)
        assert check(json.loads(config.to_json())[item.name]), (item.name, what)
        assert FIELD_RULES[item.name] is fields.rule_of(item)  # config.json's reader uses the same rule


def test_the_fit_command_offers_exactly_the_flagged_fields():
    from bratskeras.cli.train import _KINDS, TRAINING_FLAGS, fit_command

    assert set(_KINDS) == set(fields.CLI_KINDS)  # every kind of flag has its parser

    flagged = {name: flag.name for name, flag in fields.cli_fields(TrainConfig)}
    options = {param.name: param.opts[0] for param in fit_command.params if isinstance(param, click.Option)}
    assert all(options[name] == flag for name, flag in flagged.items())
    assert dict((name, flag.name) for name, flag in TRAINING_FLAGS) == flagged
    # The flags of today, each from its field (the rest are the command's own: --out, --resume, ...).
    assert set(flagged.values()) == {
        "--preset", "--model", "--model-arg", "--init-from", "--target", "--task", "--postprocess", "--loss", "--learning-rate",
        "--epochs", "--steps-per-epoch", "--batch-size", "--patch-size", "--spacing", "--augment-on", "--augment",
        "--folds", "--fold", "--precision", "--strategy", "--seed", "--deterministic"}


def test_cli_options_become_overrides_by_their_field_names():
    from bratskeras.cli.train import TRAINING_FLAGS, _overrides

    given = {name: None for name, _ in TRAINING_FLAGS}
    given.update(patch_size="32,16,16", spacing="2", deterministic=False, model_overrides=("a=4",),
                 augmentation="nnunet", postprocess=("et_enhancement:percentile=60", "major_components"))
    overrides = _overrides(given)
    assert overrides["postprocess"] == ({"name": "et_enhancement", "percentile": 60}, {"name": "major_components"})
    assert overrides["patch_size"] == (32, 16, 16) and overrides["spacing"] == (2.0, 2.0, 2.0)
    assert overrides["deterministic"] is None and overrides["model_overrides"] == {"a": 4}
    assert overrides["augmentation"] == "nnunet" and overrides["epochs"] is None


@pytest.mark.parametrize("changes,message", [
    ({"epochs": 0}, "--epochs must be >= 1, got 0"),
    ({"learning_rate": 0}, "--learning-rate must be a positive finite number"),
    ({"weight_decay": -1}, r"weight_decay must be a number in \[0, inf\), got -1"),
    ({"reduce_lr_factor": 1.5}, "reduce_lr_factor must be a number in"),
    ({"modalities": ("flair", "pd")}, "modalities must be a list of distinct modality names"),
    ({"postprocess": "et_enhancement"}, "postprocess must be a list of post-processing steps"),
])
def test_a_field_breaking_its_rule_is_refused_with_its_message(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_the_pipeline_shares_the_fields_rules():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        PipelineConfig(batch_size=0)
    with pytest.raises(ValueError, match="foreground_fraction must be a number in"):
        PipelineConfig(foreground_fraction=2)
    assert PipelineConfig().patch_size == defaults.PATCH_SIZE == TrainConfig().patch_size


@pytest.mark.parametrize("task", [task for task in labels.TASKS if labels.SCHEMES[task].modalities
                                  != labels.ALL_MODALITIES])
def test_a_library_user_naming_a_task_gets_its_modalities(task):
    expected = tuple(labels.SCHEMES[task].modalities)
    assert resolve_config("lightweight2020", {"task": task}).modalities == expected
    assert TrainConfig(task=task).modalities == expected
    # Modalities named outright are kept (the rule fills in, it does not overrule).
    assert resolve_config("lightweight2020", {"task": task, "modalities": ("t1ce", "flair")}).modalities == \
        ("t1ce", "flair")


def test_there_is_a_task_with_other_modalities():
    assert resolve_config("lightweight2020", {"task": "menrt"}).modalities == ("t1ce",)
    assert resolve_config().modalities == labels.ALL_MODALITIES


def test_resume_keeps_the_task_rule(tmp_path):
    config = resolve_config("lightweight2020", {"task": "menrt"})
    folder = RunFolder(tmp_path)
    with open(folder.config, "w") as stream:
        stream.write(config.to_json())
    assert resume_config(tmp_path, {"task": "menrt"}) == config


def test_a_partial_config_json_is_resolved_through_train_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"target": "whole_tumor", "modalities": ["flair"], "margin": 3}))
    loaded = load_config_file(path)
    assert loaded.config.loss == "flair_dice" and loaded.margin == 3 and loaded.given == {"target", "modalities",
                                                                                           "margin"}
    assert loaded.values() == {"target": "whole_tumor", "modalities": ["flair"]}
    path.write_text(json.dumps({"task": "menrt", "target": "classes"}))
    assert load_config_file(path, default_modalities=("flair",)).config.modalities == ("t1ce",)
    path.write_text(json.dumps({"target": "classes"}))
    assert load_config_file(path, default_modalities=("flair",)).config.modalities == ("flair",)
    path.write_text(json.dumps({"preset": "a-newer-one", "target": "classes"}))  # kept, its fields in the file
    assert load_config_file(path).config.preset == "a-newer-one"
    full = resolve_config("flair2017", {"epochs": 3})
    path.write_text(full.to_json())
    assert load_config_file(path).config == full and load_config_file(path).values() == json.loads(full.to_json())
    with pytest.raises(ConfigError, match="field epochs must be an integer >= 1"):
        check_config_values({"epochs": 0}, "x")


def test_run_folder_names_each_file_once(tmp_path):
    folder = RunFolder(tmp_path / "run")
    paths = [folder.config, folder.best_model, folder.dataset, folder.runtime, folder.splits, folder.environment,
             folder.preset_changes, folder.results, folder.history, folder.curves, folder.tensorboard,
             folder.checkpoints, folder.state, folder.marker, folder.demo_data]
    assert len(set(paths)) == len(paths) and all(os.path.dirname(p) == folder.path for p in paths)
    assert folder.checkpoint(7) == os.path.join(folder.checkpoints, "epoch-0007.keras")
    assert RunFolder.of_model_file(folder.checkpoint(7)) == folder
    assert RunFolder.of_model_file(folder.best_model) == folder
    assert os.path.dirname(folder.demo_cache) == folder.demo_data
    assert not folder.has_config()


def test_every_strategy_choice_has_a_maker():
    """config's --strategy choices and training.runtime's makers name the same strategies ("auto" picks one)."""
    from bratskeras.config.train_config import STRATEGIES
    from bratskeras.training import runtime

    assert set(runtime._STRATEGIES) | {"auto"} == set(STRATEGIES)


def test_every_optimizer_and_crop_choice_has_its_maker():
    from bratskeras.config.train_config import OPTIMIZERS
    from bratskeras.data import preprocessing
    from bratskeras.training.fit import OPTIMIZER_MAKERS

    assert set(OPTIMIZER_MAKERS) == set(OPTIMIZERS)
    assert set(preprocessing._CROP_BOXES) == set(preprocessing.CROPS)


def test_fit_refuses_postprocessing_its_model_could_not_take_before_any_work(tmp_path):
    from cli_checks import only_line
    from click.testing import CliRunner

    from bratskeras.cli import cli

    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(cli, ["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--task",
                                      "menrt", "--postprocess", "et_enhancement"])
    assert "step 'et_enhancement' needs ET and NCR classes" in only_line(result)
    assert not (tmp_path / "run").exists()
