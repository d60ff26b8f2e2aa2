"""What a user expects of `bratskeras export` (issue #25, item 3).

A missing optional extra is one line naming the pip command, before the model
loads; --format and --quantize are click choices (a typo is a usage error);
every format names its input `image`, its output `probabilities` and (ONNX)
its free dimensions batch, depth, height, width; an export announces its
stages, prints none of the converters' known noise, and checks a large
LiteRT export on a small twin instead of running it at full size.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.data.contract import InputContract
from bratskeras.export import exporter as export
from bratskeras.export.formats import FORMATS
from bratskeras.export.litert import litert_twin_shape
from bratskeras.models import build_model
from bratskeras.models.saving import save_model
from bratskeras.platform import extras

CONTRACT = InputContract(modalities=("flair", "t1", "t1ce", "t2"), target="classes", spacing=(3, 3, 3),
                         patch_size=(16, 16, 16), input_multiple=4)
# Larger than bratskeras.export.litert.LITERT_CHECK_SPATIAL on one axis: checked through a 64x64x64 twin.
TFLITE_SHAPE = (80, 64, 64, 4)
# What TensorFlow, LiteRT and Keras' tf2onnx patch printed during an export before #25.
NOISE = ("W0000", "FutureWarning", "deprecated", "XNNPACK", "Traceback")


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    """A tiny size-free lightweight-unet (base_filters 4) saved as .keras with its contract."""
    path = tmp_path_factory.mktemp("model") / "light.keras"
    save_model(build_model("lightweight-unet", base_filters=4), path, CONTRACT)
    return path


@pytest.fixture(scope="module")
def exported(light, tmp_path_factory):
    """Exports `light` as ONNX and LiteRT (TFLITE_SHAPE) with the CLI in one fresh process.

    (SavedModel's signature names are held by tests/test_export.py; its export printed no noise.)

    The process runs as a user's would: TF_CPP_MIN_LOG_LEVEL unset (conftest sets 2, which hides
    TensorFlow's W lines), stdout and stderr as one stream.

    Returns:
        (folder, {format: the command's output}).
    """
    pytest.importorskip("onnx")
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ai_edge_litert")
    folder = tmp_path_factory.mktemp("exports")
    runs = {
        "onnx": ["--format", "onnx", "--out", folder / "m.onnx"],
        "tflite": ["--format", "tflite", "--out", folder / "m.tflite",
                   "--input-shape", ",".join(map(str, TFLITE_SHAPE))],
    }
    script = textwrap.dedent("""
        import sys
        from bratskeras.cli import cli
        for line in sys.stdin.read().splitlines():
            format, *args = line.split("\\t")
            print(f"=== begin {format}", flush=True)
            try:
                cli.main(args=args, prog_name="bratskeras")
            except SystemExit as stop:
                print(f"=== exit {stop.code}", flush=True)
    """)
    lines = "\n".join("\t".join([name, "export", str(light), *map(str, args)]) for name, args in runs.items())
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], input=lines, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    outputs, current = {"start-up": ""}, "start-up"
    for line in result.stdout.splitlines(keepends=True):
        if line.startswith("=== begin "):
            current = line.split()[-1]
            outputs[current] = ""
        else:
            outputs[current] += line
    assert set(outputs) == {"start-up", *runs}, result.stdout
    for name in runs:
        assert "=== exit 0" in outputs[name], outputs[name]
    return folder, outputs


# ------------------------------------------------------------------ extras


@pytest.mark.parametrize("format,extra,module", [
    ("onnx", "onnx", "tf2onnx"),
    ("onnx", "onnx", "onnx"),
    ("onnx", "onnx", "onnxruntime"),
    ("tflite", "litert", "ai_edge_litert"),
])
def test_a_missing_extra_is_one_line_before_the_model_loads(tmp_path, monkeypatch, format, extra, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the extras were checked")

    monkeypatch.setattr(export, "load_model", never)
    result = _invoke(tmp_path / "m.keras", "--format", format, "--out", tmp_path / f"m.{format}")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"needs the '{extra}' extra ({module} is not installed)" in lines[0]
    assert lines[0].endswith(f'pip install "bratskeras[{extra}]"')
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", sorted(extras.EXTRAS))
def test_every_extra_names_its_pip_command(monkeypatch, name):
    module = next(iter(extras.EXTRAS[name]))
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(Exception, match=rf"^doing X needs the '{name}' extra \({module} is not installed\): "
                                        rf'pip install "bratskeras\[{name}\]"$'):
        extras.require_extra(name, "doing X")


def test_every_export_format_names_its_extra_in_the_table():
    for format, row in FORMATS.items():
        assert row.extra is None or row.extra in extras.EXTRAS, format


# ----------------------------------------------------------------- choices


@pytest.mark.parametrize("args,bad", [
    (["--format", "onxx"], "'onxx' is not one of"),
    (["--format", "tflite", "--quantize", "int4"], "'int4' is not one of"),
])
def test_a_mistyped_choice_is_a_usage_error(tmp_path, args, bad):
    result = _invoke(tmp_path / "m.keras", *args)
    assert result.exit_code == 2, result.output
    assert bad in result.output and "Usage:" in result.output


# ------------------------------------------------------------------- names


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_onnx_names_its_input_output_and_dimensions(exported):
    onnx = pytest.importorskip("onnx")
    import onnxruntime

    folder, _ = exported
    graph = onnx.load(str(folder / "m.onnx")).graph
    dims = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in (*graph.input, *graph.output)}
    assert dims == {"image": ["batch", "depth", "height", "width", 4],
                    "probabilities": ["batch", "depth", "height", "width", 4]}
    session = onnxruntime.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_litert_uses_the_same_names(exported):
    from ai_edge_litert.interpreter import Interpreter

    folder, _ = exported
    signatures = Interpreter(model_path=str(folder / "m.tflite")).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["image"], "outputs": ["probabilities"]}}


# --------------------------------------------------- quiet, announced, sized


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
@pytest.mark.parametrize("format", ["onnx", "tflite"])
def test_export_output_is_announced_stages_and_no_noise(exported, format):
    _, outputs = exported
    text = outputs[format]
    for noise in NOISE:
        assert noise not in text, text
    assert "checking on a " in text and "path: " in text, text
    assert f"converting to {FORMATS[format].title}" in text, text


@pytest.mark.slow  # default suite kept under 10 min on 2 AVX2 cores; CI's slow run
def test_a_large_litert_export_is_checked_on_a_small_twin(exported):
    _, outputs = exported
    text = outputs["tflite"]
    assert "converting to LiteRT at 80x64x64..." in text, text
    assert "checking on a 64x64x64 input" in text, text
    assert "check volume (1, 64, 64, 64, 4), on a LiteRT twin converted at that size" in text, text


def test_a_litert_export_within_the_check_size_is_checked_as_it_is():
    model = build_model("lightweight-unet", base_filters=4)
    assert litert_twin_shape(model, (64, 64, 64, 4)) is None
    assert litert_twin_shape(model, (128, 128, 40, 4)) == (64, 64, 40, 4)
    fixed = build_model("flair-unet", input_shape=(32, 32, 30, 1))
    assert litert_twin_shape(fixed, (32, 32, 30, 1)) is None


def test_the_extras_table_matches_setup_cfg():
    """Each extra's modules are the import names of the distributions setup.cfg installs for it."""
    import configparser
    import re
    from pathlib import Path

    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[1] / "setup.cfg")
    declared = config["options.extras_require"]
    for name, modules in extras.EXTRAS.items():
        requirements = [line.strip() for line in declared[name].splitlines() if line.strip()]
        distributions = {re.split(r"[<>=\[ ]", line)[0].lower().replace("-", "_") for line in requirements}
        assert distributions == set(modules), name
