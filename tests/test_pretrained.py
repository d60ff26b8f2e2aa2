"""Shipped pretrained models: the catalogue, model cards, `pretrained:NAME` in every command that takes a model.

Two kinds of tests. The mechanics run on a catalogue made here, in a
temporary folder, from a real (tiny, one-epoch) `bratskeras fit`, so they
hold whether or not a model is shipped. The shipped models themselves
(`bratskeras/pretrained/<name>/`) are each checked against their card: the
tests parametrized over SHIPPED, none when the catalogue is empty.
"""

import copy
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from model_cards import example_card

from bratskeras import pretrained
from bratskeras.cli import cli
from bratskeras.core.errors import ModelError
from bratskeras.synth import phantoms as synth

SHIPPED = pretrained.model_names()
NAME = "tiny-test"
SHAPE = (24, 24, 16)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "brats2021"
    synth.write_dataset(root, cases=4, shape=SHAPE, layout="brats2021", seed=3)
    return root


@pytest.fixture(scope="module")
def catalogue_root(data_dir, tmp_path_factory):
    """A catalogue folder holding model NAME: a one-epoch `bratskeras fit` run's best.keras and config.json."""
    from bratskeras.models import load_model

    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = CliRunner().invoke(cli, ["fit", str(data_dir), "--out", str(run_dir), "--epochs", "1",
                                      "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "16,16,16",
                                      "--model-arg", "base_filters=4", "--precision", "float32", "--quiet"])
    assert result.exit_code == 0, result.output
    root = tmp_path_factory.mktemp("catalogue")
    folder = root / NAME
    folder.mkdir()
    for filename in ("best.keras", "config.json"):
        shutil.copy(run_dir / filename, folder / filename)
    card = example_card(NAME, "lightweight-unet", int(load_model(run_dir).count_params()))
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    (root / "__pycache__").mkdir()  # what an import leaves beside the models: not a model
    return root


@pytest.fixture
def shipped(catalogue_root, monkeypatch):
    """The package's catalogue replaced by `catalogue_root` for one test."""
    monkeypatch.setattr(pretrained, "shipped_folder", lambda: catalogue_root)
    return catalogue_root


# ------------------------------------------------------------------- the catalogue


def test_catalogue_reads_each_model_folder_and_its_card(catalogue_root):
    (model,) = pretrained.catalogue(catalogue_root)
    assert model.name == NAME and model.source == f"pretrained:{NAME}"
    assert model.card["architecture"]["model"] == model.config["model"] == "lightweight-unet"
    assert pretrained.resolve(f"pretrained:{NAME}", catalogue_root) == catalogue_root / NAME
    text = pretrained.card_text(model)
    assert text.splitlines()[0].startswith(f"{NAME}: lightweight-unet, ")
    for expected in ("input:", "flair, t1, t1ce, t2 on the source grid", "reproduce:", "synthetic held-out:",
                     "Dice WT 0.100  TC 0.000", "real scans:", "no figures", "not validated on:", "licence:",
                     f"bratskeras predict pretrained:{NAME} CASES OUT"):
        assert expected in text, expected
    # A command stays on one line, whole, to be copied.
    assert any(line.endswith(model.card["training"]["command"]) for line in text.splitlines())


def test_an_empty_or_absent_catalogue_lists_nothing(tmp_path, monkeypatch):
    (tmp_path / "__pycache__").mkdir()
    assert pretrained.catalogue(tmp_path) == ()
    assert pretrained.catalogue(tmp_path / "absent") == ()
    with pytest.raises(ModelError, match="unknown pretrained model 'x' .none are shipped"):
        pretrained.resolve("pretrained:x", tmp_path)
    monkeypatch.setattr(pretrained, "shipped_folder", lambda: tmp_path)
    listed = CliRunner().invoke(cli, ["pretrained"])
    assert listed.exit_code == 0 and listed.output == "no pretrained models are shipped with this bratskeras\n"
    as_json = CliRunner().invoke(cli, ["pretrained", "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output) == []


def test_the_package_folder_is_this_module_s_own():
    assert pretrained.shipped_folder() == pretrained.shipped_folder().parent / "pretrained"
    assert (pretrained.shipped_folder() / "__init__.py").is_file()


def test_other_sources_pass_through_resolve_unchanged(tmp_path):
    assert pretrained.resolve(str(tmp_path)) == str(tmp_path)
    assert pretrained.resolve(tmp_path) == tmp_path
    assert pretrained.pretrained_name("pretrained:abc") == "abc" and pretrained.pretrained_name("runs/x") is None


def _broken(change):
    card = example_card(NAME, "lightweight-unet", 100)
    change(card)
    return card


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("licence"), "no field licence"),
    (lambda c: c["training"].pop("command"), "no field training.command"),
    (lambda c: c.update(licence=""), "licence must be a non-empty string"),
    (lambda c: c.update(extra=1), "unknown field extra"),
    (lambda c: c["training"].update(gpu="none"), "unknown field training.gpu"),
    (lambda c: c["architecture"].update(parameters=0), "architecture.parameters must be a positive integer"),
    (lambda c: c["training"].update(duration_s="4 min"), "training.duration_s must be a positive number"),
    (lambda c: c.update(limits=[]), "limits must be a non-empty list"),
    (lambda c: c["evaluation"]["synthetic_heldout"].update(figures={"WT": 83}), r"Dice values in \[0, 1\]"),
    (lambda c: c["evaluation"]["real_scans"].pop("note"), "real_scans has no figures, so its note must say why"),
    (lambda c: c["evaluation"]["synthetic_heldout"].pop("command"), "synthetic_heldout gives figures, so it needs "
                                                                     "its command"),
    (lambda c: c["evaluation"].pop("real_scans"), "no field evaluation.real_scans"),
    (lambda c: c.update(name="other"), "name 'other' is not its folder's name 'tiny-test'"),
    (lambda c: c["architecture"].update(model="deep-unet-16"), "is not config.json's model 'lightweight-unet'"),
    (lambda c: c.update(card_version=2), "card_version 2 is not 1"),
])
def test_card_problems_are_one_line_errors_naming_the_field(change, message):
    with pytest.raises(ModelError, match=message) as caught:
        pretrained.check_card(_broken(change), NAME, {"model": "lightweight-unet"}, where="x/card.json")
    assert str(caught.value).startswith("x/card.json: ") and "\n" not in str(caught.value)
    pretrained.check_card(example_card(NAME, "lightweight-unet", 100), NAME, {"model": "lightweight-unet"})


def test_a_folder_without_its_files_or_with_bad_json_is_refused(catalogue_root, tmp_path):
    folder = tmp_path / NAME
    shutil.copytree(catalogue_root / NAME, folder)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match="card.json: not valid JSON"):
        pretrained.catalogue(tmp_path)
    (folder / "card.json").unlink()
    with pytest.raises(ModelError, match="no card.json; a pretrained model folder holds best.keras, config.json"):
        pretrained.catalogue(tmp_path)
    with pytest.raises(ModelError, match="no card.json"):
        pretrained.resolve(f"pretrained:{NAME}", tmp_path)
    shutil.rmtree(folder)
    (tmp_path / "Bad Name").mkdir()
    with pytest.raises(ModelError, match="folder name must match"):
        pretrained.catalogue(tmp_path)


# ------------------------------------------------------------------- the commands


def test_pretrained_command_lists_the_cards(shipped):
    listed = CliRunner().invoke(cli, ["pretrained"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.startswith(f"{NAME}: lightweight-unet, ") and "licence:" in listed.output
    as_json = CliRunner().invoke(cli, ["pretrained", "--json"])
    assert json.loads(as_json.output) == [json.loads((shipped / NAME / "card.json").read_text())]


def test_an_unknown_name_is_one_line_listing_the_shipped_ones(shipped, data_dir, tmp_path):
    with pytest.raises(ModelError, match=f"unknown pretrained model 'nope' .shipped: {NAME}; "):
        pretrained.resolve("pretrained:nope")
    result = CliRunner().invoke(cli, ["predict", "pretrained:nope", str(data_dir), str(tmp_path / "out")])
    assert result.exit_code == 2
    # predict takes several models (an ensemble): click names the argument MODEL...
    assert f"Error: Invalid value for 'MODEL...': unknown pretrained model 'nope' (shipped: {NAME};" in result.output
    exported = CliRunner().invoke(cli, ["export", "pretrained:nope", "--format", "keras"])
    assert exported.exit_code == 1 and exported.output.startswith("Error: unknown pretrained model 'nope'")
    assert not (tmp_path / "out").exists()


def test_load_model_and_predict_take_a_pretrained_name(shipped, data_dir, tmp_path):
    import bratskeras
    from bratskeras.models import load_model

    loaded = bratskeras.load_model(f"pretrained:{NAME}")
    for ours, theirs in zip(loaded.get_weights(), load_model(shipped / NAME).get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    out = tmp_path / "predictions"
    result = CliRunner().invoke(cli, ["predict", f"pretrained:{NAME}", str(data_dir), str(out)])
    assert result.exit_code == 0, result.output
    # Its run folder's contract: config.json, which the best.keras' embedded one agrees with.
    assert "contract source: run config.json, agreeing with the embedded contract" in result.output
    assert "no input contract" not in result.output
    assert sorted(os.listdir(out)) == sorted(f"{case}.nii.gz" for case in os.listdir(data_dir)
                                             if (data_dir / case).is_dir() and not case.startswith("."))


def test_export_names_its_outputs_after_the_pretrained_model(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["export", f"pretrained:{NAME}", "--format", "saved_model"])
    assert result.exit_code == 0, result.output
    assert f"path: saved_models/{NAME}/1" in result.output
    assert (tmp_path / "saved_models" / NAME / "1" / "saved_model.pb").is_file()
    keras_file = CliRunner().invoke(cli, ["export", f"pretrained:{NAME}", "--format", "keras"])
    assert keras_file.exit_code == 0, keras_file.output
    assert (tmp_path / f"{NAME}.inference.keras").is_file()
    # Both carry the shipped run's input contract, read back like any export's.
    from bratskeras.data.model_files import read_contract
    from bratskeras.predict.model_setup import RUN_CONFIG_AND_EMBEDDED

    expected = read_contract(f"pretrained:{NAME}")
    assert expected is not None and expected == read_contract(shipped / NAME / "best.keras")
    for output in (result.output, keras_file.output):
        assert f"contract: {expected.describe()} (source: {RUN_CONFIG_AND_EMBEDDED})" in output
        assert "no input contract" not in output
    for artefact in (tmp_path / "saved_models" / NAME / "1", tmp_path / f"{NAME}.inference.keras"):
        assert read_contract(artefact).needs() == expected.needs(), artefact
    assert sorted(os.listdir(shipped / NAME)) == ["best.keras", "card.json", "config.json"]  # nothing written there


def test_summary_takes_a_pretrained_name(shipped):
    card = json.loads((shipped / NAME / "card.json").read_text())
    table = CliRunner().invoke(cli, ["summary", f"pretrained:{NAME}", "--json"])
    assert table.exit_code == 0, table.output
    assert json.loads(table.output)["params"] == card["architecture"]["parameters"]
    # Its paper's lightweight-unet has 16 base filters, this one 4: the comparison says so.
    compared = CliRunner().invoke(cli, ["summary", f"pretrained:{NAME}", "--compare"])
    assert compared.exit_code == 1 and "MISMATCH" in compared.output and "paper 340,596" in compared.output
    shaped = CliRunner().invoke(cli, ["summary", f"pretrained:{NAME}", "--input-shape", "32,32,32,4"])
    assert shaped.exit_code == 1 and "--input-shape builds a registry model" in shaped.output


# ------------------------------------------------------------------- the shipped models


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_matches_its_card_and_config(name):
    """Every model in bratskeras/pretrained/: a valid card, a config that loads, the card's figures its model's."""
    from bratskeras.config.train_config import TrainConfig
    from bratskeras.models import load_model
    from bratskeras.predict.model_setup import load_predictor, setup_from_model

    (model,) = [m for m in pretrained.catalogue() if m.name == name]
    config = TrainConfig.from_dict(copy.deepcopy(model.config))
    assert config.model == model.card["architecture"]["model"]
    network = load_model(f"pretrained:{name}")
    assert network.count_params() == model.card["architecture"]["parameters"]
    setup = setup_from_model(network, model.config)
    assert setup.modalities == config.modalities and setup.target == config.target
    probabilities, _ = load_predictor(f"pretrained:{name}")
    window = tuple(max(16, setup.multiple) for _ in range(3))
    output = np.asarray(probabilities(np.zeros((1, *window, len(setup.modalities)), np.float32)))
    assert output.shape[:4] == (1, *window) and np.all(np.isfinite(output))
    assert pretrained.card_text(model).startswith(f"{name}: ")


@pytest.mark.parametrize("name", SHIPPED)
def test_readme_gives_each_shipped_models_card_figures(name):
    """The README's section on a shipped model quotes its card's headline figures, so the two cannot drift apart.

    The card is the figures' home (`bratskeras pretrained` prints it); the
    README's table repeats them as 'WT / TC / ET' to three decimals. Skipped
    where the package runs without its source tree (an installed wheel).
    """
    readme = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
    if not os.path.exists(readme):
        pytest.skip("no README.md beside the tests")
    with open(readme, encoding="utf-8") as handle:
        text = handle.read()
    heading = f"### Shipped: `{name}`"
    assert heading in text, f"README.md has no section {heading!r}"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    (model,) = [m for m in pretrained.catalogue() if m.name == name]
    for key, entry in model.card["evaluation"].items():
        figures = entry.get("figures")
        if figures:
            quoted = " / ".join(f"{figures[region]:.3f}" for region in ("WT", "TC", "ET") if region in figures)
            assert quoted in section, f"README.md's {heading} does not give the card's {key} figures {quoted}"
