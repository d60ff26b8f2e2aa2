"""tools/train_pretrained.py: every shipped model has a recipe whose commands the CLI accepts as written."""

import json
import os

import pytest
from tool_scripts import load_tool

from bratskeras import pretrained
from bratskeras.cli import cli


def _tool():
    return load_tool("train_pretrained")


def test_every_shipped_model_has_a_recipe_quoted_by_its_card():
    recipes = _tool().RECIPES
    for model in pretrained.catalogue():
        assert model.name in recipes
        for _, synth, fit in _tool().commands(model.name, "OUT", "DATA"):
            # the card's command is the recipe's, paths aside
            assert " ".join(synth[3:]) in model.card["training"]["command"]
            assert " ".join(fit[fit.index("--out") + 2:]).replace("--init-from OUT/stage-1 ", "") \
                in model.card["training"]["command"]


@pytest.mark.parametrize("name", sorted(_tool().RECIPES))
def test_recipe_commands_parse_as_the_cli_reads_them(name, tmp_path):
    """Each synth and fit command line is accepted by click as written (no option renamed or misspelt)."""
    stages = _tool().commands(name, str(tmp_path / "out"), str(tmp_path / "data"))
    for index, (data, _, _) in enumerate(stages, start=1):  # the folders and files earlier stages would have made
        os.makedirs(data)
        os.makedirs(tmp_path / "out" / f"stage-{index}" / "checkpoints")
    for stage, (_, _, fit) in zip(_tool().RECIPES[name]["stages"], stages):
        if "init_from" in stage:  # a checkpoint file inside the previous stage's run
            open(fit[fit.index("--init-from") + 1], "w").close()
    for _, synth, fit in stages:
        for argv in (synth, fit):
            command = cli.commands[argv[1]]
            context = command.make_context(argv[1], list(argv[2:]))
            assert context.params  # parsed, nothing run
    sources, config = _tool().shipped_files(name, "OUT")
    assert all(source.startswith("OUT/stage-") and source.endswith("/best.keras") for source in sources)
    assert config == os.path.join(os.path.dirname(sources[-1]), "config.json")


def test_the_shipped_model_carries_the_post_processing_its_recipe_names():
    """The recipe's last --postprocess flags (later stages inherit them) are what the shipped config.json and
    best.keras contract hold."""
    from bratskeras.cli.inference import parse_postprocess
    from bratskeras.data.model_files import read_contract

    for model in pretrained.catalogue():
        fits = [fit for _, _, fit in _tool().commands(model.name, "OUT", "DATA") if "--postprocess" in fit]
        named = tuple(parse_postprocess(fits[-1][i + 1]) for i, arg in enumerate(fits[-1]) if arg == "--postprocess")
        folder = pretrained.resolve(pretrained.PREFIX + model.name)
        with open(os.path.join(folder, "config.json")) as stream:
            assert tuple(json.load(stream).get("postprocess", ())) == named
        assert read_contract(os.path.join(folder, "best.keras"), "keras").postprocess == named


def test_average_weights_writes_the_mean_of_the_sources_weights(tmp_path):
    """The soup step: every weight of the written model is the mean of the sources', the contract the last's."""
    import keras
    import numpy as np

    from bratskeras.data.contract import InputContract
    from bratskeras.data.model_files import read_contract
    from bratskeras.models import build_model
    from bratskeras.models.saving import save_model

    sources = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        network = build_model("lightweight-unet", input_shape=(None, None, None, 4), base_filters=4)
        path = str(tmp_path / f"m{seed}.keras")
        save_model(network, path, InputContract(modalities=("flair", "t1", "t1ce", "t2"), target="classes",
                                                postprocess=({"name": "major_components", "fraction": seed / 10},)))
        sources.append(path)
    _tool().average_weights(sources, str(tmp_path / "soup.keras"))
    weights = [keras.models.load_model(p, compile=False).get_weights() for p in (*sources, tmp_path / "soup.keras")]
    for first, second, soup in zip(*weights):
        np.testing.assert_allclose(soup, (first + second) / 2, rtol=1e-6, atol=1e-7)
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(weights[0], weights[1]))  # the sources differ
    assert read_contract(str(tmp_path / "soup.keras"), "keras").postprocess == (
        {"name": "major_components", "fraction": 0.2},)
    # Written once: a second soup onto the same path is refused and the first stays.
    from bratskeras.core.errors import OutputExistsError

    before = (tmp_path / "soup.keras").read_bytes()
    with pytest.raises(OutputExistsError, match="soup.keras: exists"):
        _tool().average_weights(sources[::-1], str(tmp_path / "soup.keras"))
    assert (tmp_path / "soup.keras").read_bytes() == before


def test_a_shipped_model_already_written_is_refused_not_replaced(tmp_path, capsys):
    """A rerun into the same OUT_DIR stops before any stage runs, naming the file, and leaves it as it was."""
    name = sorted(_tool().RECIPES)[0]
    shipped = tmp_path / "out" / "shipped" / "best.keras"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"the user's model")
    assert _tool().main([name, str(tmp_path / "out"), "--dry-run"]) == 1
    assert capsys.readouterr().err.strip() == (f"error: {shipped}: exists; this tool never replaces it (remove it "
                                               "or choose another OUT_DIR)")
    assert shipped.read_bytes() == b"the user's model"
