"""What nnU-Net, MONAI and Keras users expect of show, evaluate and the small commands (issue 25).

Tiny synthetic cases (24 x 24 x 16), click's CliRunner in-process, and a
subprocess only where the point is what a fresh process imports or prints.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from cli_checks import invoke

from bratskeras.core import labels
from bratskeras.data import layouts
from bratskeras.evaluate import visualize
from bratskeras.synth import phantoms as synth

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (24, 24, 16)
STARTUP_NOISE = ("absl::InitializeLog", "cuInit", "oneDNN custom operations", "cpu_feature_guard", "cudart_stub")




def _fresh_python(code, env_update=None, drop=(), stdout=subprocess.PIPE):
    """Runs `code` in a fresh interpreter on this checkout; (returncode, stdout or None, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.update(env_update or {})
    for name in drop:
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    """{task: (data dir, predictions dir)}: one ped and one gli case, each predicted as its own reference."""
    root = tmp_path_factory.mktemp("tasks")
    found = {}
    for task in ("ped", "gli"):
        data, predictions = root / task, root / f"{task}-pred"
        synth.write_dataset(data, cases=1, shape=SHAPE, task=task)
        predictions.mkdir()
        for case in layouts.discover(data, task=task).cases:
            shutil.copy(case.seg, predictions / f"{case.id}.nii.gz")
        found[task] = (data, predictions)
    return found


def _column_colours(png, scheme):
    """{structure name: (pixels in the reference column, pixels in the prediction column)} of a show PNG."""
    rgb = mpimg.imread(png)[..., :3]
    half = rgb.shape[1] // 2
    counts = {}
    # A structure's pixel is its colour blended at 60 % over grey, 0.6 c + 0.4 g: the differences
    # between its channels, 0.6 (c_r - c_g, c_g - c_b), do not depend on the grey below.
    differences = np.stack([rgb[..., 0] - rgb[..., 1], rgb[..., 1] - rgb[..., 2]], axis=-1)
    for index, colour in labels.get_scheme(scheme).colours.items():
        expected = 0.6 * np.asarray([colour[0] - colour[1], colour[1] - colour[2]])
        near = np.all(np.abs(differences - expected) <= 0.04, axis=-1)
        counts[labels.get_scheme(scheme).names[index]] = (int(near[:, :half].sum()), int(near[:, half:].sum()))
    return counts


# ------------------------------------------------------------------ item 2: show


def test_every_structure_of_every_scheme_has_its_colour_and_synonyms_share_it():
    for scheme in labels.SCHEMES.values():
        assert sorted(scheme.colours) == list(range(1, len(scheme.labels)))
    assert labels.SCHEMES["ped"].colours[4] == labels.SCHEMES["brats2020"].colours[2]  # ED is ED in every scheme
    assert labels.SCHEMES["gli"].colours[2] == labels.SCHEMES["brats2020"].colours[2]  # SNFH = ED
    assert labels.SCHEMES["ped"].colours[1] == labels.SCHEMES["brats2023"].colours[3]  # ET


def test_show_draws_a_ped_case_in_its_own_structures_with_the_dice_in_the_title(task_data, tmp_path):
    data, predictions = task_data["ped"]
    result = invoke("show", predictions, data, tmp_path / "png")
    assert result.exit_code == 0, result.output
    counts = _column_colours(next((tmp_path / "png").glob("*.png")), "ped")
    # Reference and prediction are the same map: each structure covers the same pixels in both columns,
    # ED (label 4) included, which the classic colours left out of the reference and drew magenta as ET.
    for name in ("ED", "ET", "NETC"):
        reference, prediction = counts[name]
        assert reference > 20 and abs(reference - prediction) <= 0.05 * reference, counts  # axes differ by a pixel
    case = layouts.discover(data).cases[0]
    ref = labels.labels_to_classes(np.asarray(__import__("nibabel").load(case.seg).dataobj), "ped")
    title = visualize.dice_title(case.id, ref, ref, "ped")
    assert title == f"{case.id}\nDice WT 1.00, TC 1.00, ET 1.00, CC 1.00"


def test_show_takes_task_for_post_treatment_glioma(task_data, tmp_path):
    data, predictions = task_data["gli"]
    refused = invoke("show", predictions, data, tmp_path / "refused")
    assert refused.exit_code == 1 and "pass --task gli" in refused.output
    result = invoke("show", predictions, data, tmp_path / "png", "--task", "gli")
    assert result.exit_code == 0, result.output
    counts = _column_colours(next((tmp_path / "png").glob("*.png")), "gli")
    reference, prediction = counts["RC"]  # the cavity, yellow, in both columns
    assert reference > 5 and abs(reference - prediction) <= 0.05 * reference, counts


# ------------------------------------------------------------------ item 4: evaluate


def test_evaluate_refuses_a_post_treatment_glioma_folder_without_task_in_one_line(task_data):
    data, predictions = task_data["gli"]
    result = invoke("evaluate", predictions, data)
    assert result.exit_code == 1
    assert "case(s) scored" not in result.output and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "pass --task gli" in lines[0], result.output


def test_evaluate_writes_summary_json_beside_the_csv_and_keeps_its_tables_narrow(task_data, tmp_path):
    data, predictions = task_data["ped"]
    out = tmp_path / "scores" / "metrics.csv"
    result = invoke("evaluate", predictions, data, "--out", out, "--lesion-wise")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 100, result.output
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    assert summary["format"].startswith("bratskeras-evaluation-summary/")
    assert set(summary["summary"]["dice_wt"]) == {"mean", "std", "median", "p25", "p75", "n"}
    assert summary["summary"]["dice_wt"]["mean"] == 1.0 and summary["cases"][0]["status"] == "ok"
    assert set(summary["summary"]["lesion_wise"]) == {"et", "netc", "cc", "ed", "tc", "wt"}
    # An existing summary is refused before any scoring, and replaced only with --overwrite.
    os.remove(out)
    again = invoke("evaluate", predictions, data, "--out", out)
    assert again.exit_code == 1 and "summary.json: exists" in again.output and not out.exists()
    assert invoke("evaluate", predictions, data, "--out", out, "--overwrite").exit_code == 0
    assert "lesion_wise" not in json.loads((tmp_path / "scores" / "summary.json").read_text())["summary"]


@pytest.fixture(scope="module")
def fresh_cli_run(task_data, tmp_path_factory):
    """What a fresh process imports when it runs evaluate, show and models (one interpreter for all three)."""
    data, predictions = task_data["ped"]
    out = tmp_path_factory.mktemp("fresh")
    code = textwrap.dedent(f"""
        import json, sys
        from click.testing import CliRunner
        from bratskeras.cli import cli
        runs = {{}}
        for name, args in (("evaluate", ["evaluate", {str(predictions)!r}, {str(data)!r}]),
                           ("show", ["show", {str(predictions)!r}, {str(data)!r}, {str(out / "png")!r}]),
                           ("models", ["models"])):
            result = CliRunner().invoke(cli, args)
            runs[name] = {{"exit_code": result.exit_code, "output": result.output,
                           "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules}}
        print(json.dumps(runs))
    """)
    returncode, stdout, stderr = _fresh_python(code)
    assert returncode == 0, stderr[-2000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["evaluate", "show"])
def test_evaluate_and_show_import_no_tensorflow(fresh_cli_run, command):
    run = fresh_cli_run[command]
    assert run["exit_code"] == 0, run["output"]
    assert not run["tensorflow"]


# ------------------------------------------------------------------ item 6: smaller things


def test_models_lists_the_stored_counts_without_tensorflow(fresh_cli_run):
    run = fresh_cli_run["models"]
    assert run["exit_code"] == 0 and not run["tensorflow"]
    assert "lightweight-unet" in run["output"] and "340,596" in run["output"]  # tests/test_models.py checks them


def test_a_reader_closing_the_pipe_is_not_an_error(task_data):
    data, _ = task_data["ped"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -0`: every write to stdout fails with EPIPE
    try:
        returncode, _, stderr = _fresh_python(
            f"from bratskeras.cli import main; main(['inspect', {str(data)!r}])", stdout=write_end)
    finally:
        os.close(write_end)
    assert "Error" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert returncode == 1  # Python's documented status for EPIPE, with nothing printed


def test_summary_compare_columns_hold_their_cells():
    result = invoke("summary", "lightweight-unet", "--compare")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "selected lightweight model  " in lines[1] and "modeltotal" not in result.output
    assert len({line.index("|") for line in lines[:-1]}) == 1  # the two halves line up


def test_a_bratskeras_keras_file_loads_in_plain_keras_with_custom_objects(tmp_path):
    import keras

    import bratskeras

    objects = bratskeras.custom_objects()
    assert {"bratskeras>PadToMultiple", "bratskeras>CropToReference", "bratskeras>DiceScore"} <= set(objects)
    assert all(keras.saving.get_registered_name(obj).startswith("bratskeras>") for obj in objects.values())
    model = bratskeras.build_model("lightweight-unet", base_filters=2)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", custom_objects=objects, compile=False)
    assert loaded.count_params() == model.count_params()
    docs = (ROOT / "docs" / "python-api.md").read_text()
    assert "custom_objects=bratskeras.custom_objects()" in docs and "Could not locate class" in docs


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_the_python_api_imports_tensorflow_without_its_start_up_lines():
    code = ("import os, bratskeras\n"
            "bratskeras.build_model('lightweight-unet', base_filters=2)\n"
            "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    returncode, stdout, stderr = _fresh_python(code, drop=("TF_CPP_MIN_LOG_LEVEL",))
    assert returncode == 0, stderr[-2000:]
    assert not [noise for noise in STARTUP_NOISE if noise in stderr], stderr
    assert stdout.strip().splitlines()[-1] == "1"  # set only because the user had not set it


def test_the_quiet_import_leaves_a_level_alone_once_tensorflow_is_loaded(monkeypatch):
    from bratskeras.platform.quiet import import_tensorflow_quietly

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    import_tensorflow_quietly()  # TensorFlow is loaded (conftest): its settings are the caller's
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


def test_synth_default_seed_is_not_the_demos_and_that_seed_is_flagged(tmp_path):
    from bratskeras.training import demo

    args = ("--cases", "1", "--shape", "16,16,12")
    default = invoke("synth", tmp_path / "default", *args)
    assert default.exit_code == 0 and "warning" not in default.output, default.output
    demo_seed = demo.demo_training_seed()
    same = invoke("synth", tmp_path / "demo", *args, "--seed", demo_seed)
    assert same.exit_code == 0
    warnings = [line for line in same.output.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and f"--seed {demo_seed}" in warnings[0], same.output
    images = [sorted(folder.rglob("*flair*"))[0].read_bytes() for folder in (tmp_path / "default", tmp_path / "demo")]
    assert images[0] != images[1]  # the default seed writes other cases than the demo's training seed
