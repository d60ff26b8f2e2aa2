"""The model presets as rows with metadata (bratskeras.core.model_presets), read without building a model."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core import model_presets, targets
from bratskeras.core.errors import ModelError
from bratskeras.core.labels import ALL_MODALITIES
from bratskeras.core.model_presets import FAMILIES, MODEL_PRESETS, get_preset, load_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_rows_and_the_models_command_need_no_tensorflow():
    code = ("import json, sys\n"
            "from click.testing import CliRunner\n"
            "from bratskeras.cli import cli\n"
            "result = CliRunner().invoke(cli, ['models', '--json'])\n"
            "print(json.dumps({'exit_code': result.exit_code, 'names': [m['name'] for m in json.loads(result.output)],\n"
            "                  'imported': sorted({'tensorflow', 'keras'} & set(sys.modules))}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"exit_code": 0, "names": list(MODEL_PRESETS), "imported": []}


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_every_row_is_consistent(name):
    preset = MODEL_PRESETS[name]
    assert preset.name == name and preset.description and preset.family in FAMILIES
    assert set(preset.modalities) <= set(ALL_MODALITIES) and set(preset.targets) <= set(targets.TARGETS)
    assert preset.args["input_shape"][-1] == preset.input_channels == len(preset.modalities)
    if preset.default_crop is not None:  # the model is built for its crop
        assert preset.args["input_shape"][:3] == preset.default_crop


def test_the_rows_carry_what_differs_between_models():
    facts = {name: (p.output, p.output_channels, p.pooling_multiple, p.default_crop, p.paper)
             for name, p in MODEL_PRESETS.items()}
    assert facts == {
        "flair-unet": ("probabilities", 1, 16, (192, 192, 154), "flair-3d-unet-brats2017"),
        "lightweight-unet": ("logits", 4, 4, None, "lightweight-3d-unet-brats2020"),
        "medium-unet-16": ("logits", 4, 8, None, "lightweight-3d-unet-brats2020"),
        "medium-unet-32": ("logits", 4, 8, None, "lightweight-3d-unet-brats2020"),
        "deep-unet-16": ("logits", 4, 16, None, "lightweight-3d-unet-brats2020"),
        "deep-unet-32": ("logits", 4, 16, None, "lightweight-3d-unet-brats2020"),
    }
    # The FLAIR paper's crop has one home, the flair-unet row.
    assert model_presets.FLAIR_PAPER_CROP is MODEL_PRESETS["flair-unet"].default_crop


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_the_stored_counts_are_the_papers(name):
    """The row's count against its paper table (the built model against both: tests/test_models.py)."""
    preset = MODEL_PRESETS[name]
    table = load_reference(preset.table.file)
    by_compare = {"layers": lambda: table["total_params"], "total": lambda: table["models"][name]["total_params"]}
    assert by_compare[preset.table.compare]() == preset.params
    json.dumps(preset.metadata())  # JSON-able


def test_papers_reported_results_are_keyed_by_the_rows_paper():
    papers = load_reference("paper_results.json")
    assert {p.paper for p in MODEL_PRESETS.values()} <= set(papers)


def test_rows_are_read_only_and_the_spec_is_a_copy():
    from bratskeras.models.registry import model_spec

    preset = get_preset("lightweight-unet")
    with pytest.raises(TypeError):
        preset.args["levels"] = 9
    spec = model_spec("lightweight-unet")
    spec["args"]["levels"] = 9
    assert preset.args["levels"] == 3 and model_spec("lightweight-unet")["args"]["levels"] == 3


def test_an_unknown_name_is_one_error_naming_the_models():
    with pytest.raises(ModelError, match=r"^unknown model 'unet-9000'; expected one of: flair-unet, lightweight-unet, "):
        get_preset("unet-9000")


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_registry_facts_are_the_rows(name):
    from bratskeras.models.registry import BUILDERS, model_facts

    preset, facts = MODEL_PRESETS[name], model_facts(name)
    assert preset.family in BUILDERS
    assert (facts.modalities, facts.targets, facts.output, facts.pooling_multiple, facts.classes_arg) == (
        preset.modalities, preset.targets, preset.output, preset.pooling_multiple, preset.classes_arg)


def test_models_command_shows_the_metadata():
    as_json = CliRunner().invoke(cli, ["models", "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert rows == [preset.metadata() for preset in MODEL_PRESETS.values()]
    flair = rows[0]
    assert (flair["name"], flair["params"], flair["default_crop"], flair["output"], flair["modalities"]) == (
        "flair-unet", 13_522_721, [192, 192, 154], "probabilities", ["flair"])
    assert flair["paper_source"] == "flair-3d-unet-brats2017, Table 1"
    assert flair["paper_table"] == "bratskeras/reference/flair_unet_table1.json"
    text = CliRunner().invoke(cli, ["models"])
    assert text.exit_code == 0
    lines = text.output.splitlines()
    assert len(lines) == 2 * len(MODEL_PRESETS)
    assert lines[0].startswith("flair-unet") and "13,522,721 parameters" in lines[0]
    assert MODEL_PRESETS["flair-unet"].description in lines[0]
    assert "default crop 192x192x154" in lines[1] and "sizes multiple of 16" in lines[1]
    assert "output 4 channels of logits" in lines[3]


def _fake_model(params):
    return types.SimpleNamespace(name="fake", count_params=lambda: params)


def test_summary_compares_a_row_by_its_paper_table():
    from bratskeras.models.summary import COMPARISONS, compare_with_paper

    assert {p.table.compare for p in MODEL_PRESETS.values()} <= set(COMPARISONS)
    lines, ok, expected = compare_with_paper("medium-unet-16", _fake_model(2_867_956))
    assert ok and expected == 2_867_956 and lines[0]["paper"]["name"] == "4-level, small"
    lines, ok, _ = compare_with_paper("medium-unet-16", _fake_model(2_867_957))
    assert not ok and lines[0]["status"] == "MISMATCH"


def test_benchmark_jobs_and_training_targets_come_from_the_rows():
    from bratskeras.bench import benchmark

    assert {family.output for family in FAMILIES.values()} <= set(benchmark.TRAIN_TARGETS)
    for shapes in (benchmark.FULL, benchmark.QUICK):
        jobs = benchmark.jobs_for(shapes, ["float32"])
        assert [job["model"] for job in jobs] == [model.name for model in shapes.models for _ in range(3)]
        assert all(job["shape"][-1] == get_preset(job["model"]).input_channels for job in jobs)
    flair_full = next(job for job in benchmark.jobs_for(benchmark.FULL, ["float32"])
                      if job["model"] == "flair-unet" and job["kind"] == "full_case")
    assert flair_full["shape"] == [192, 192, 154, 1]
    rng = np.random.default_rng(0)
    masks = benchmark.TRAIN_TARGETS["probabilities"].labels(rng, (2, 4, 4, 4), 1)
    classes = benchmark.TRAIN_TARGETS["logits"].labels(rng, (2, 4, 4, 4), 4)
    assert masks.shape == classes.shape == (2, 4, 4, 4, 1)
    assert set(np.unique(masks)) <= {0.0, 1.0} and set(np.unique(classes)) <= {0, 1, 2, 3}
