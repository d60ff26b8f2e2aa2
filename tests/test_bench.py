"""`bratskeras bench --quick` runs and prints well-formed figures (no timings asserted)."""

import json
import re
import statistics

import pytest
from click.testing import CliRunner
from tool_scripts import load_tool

from bratskeras.cli import cli
from bratskeras.models.registry import build_model


def test_conv_flops_counts_each_conv_from_its_shapes():
    from bratskeras.bench.benchmark import conv_flops

    model = build_model("lightweight-unet", input_shape=(8, 8, 8, 4), base_filters=2)
    # enc0: 4->2, 2->2 at 8^3; enc1: 2->4, 4->4 at 4^3; enc2: 4->8, 8->8 at 2^3;
    # up1: 8->4 from 2^3; dec1: 8->4, 4->4 at 4^3; up0: 4->2 from 4^3;
    # dec0: 4->2, 2->2 at 8^3; head 2->4 at 8^3 (k=1).
    k3 = 27
    macs = (512 * k3 * (4 * 2 + 2 * 2) + 64 * k3 * (2 * 4 + 4 * 4) + 8 * k3 * (4 * 8 + 8 * 8)
            + 8 * 8 * 8 * 4 + 64 * k3 * (8 * 4 + 4 * 4) + 64 * 8 * 4 * 2
            + 512 * k3 * (4 * 2 + 2 * 2) + 512 * 2 * 4)
    assert conv_flops(model) == 2 * macs


def test_benchmark_children_import_this_copy_of_bratskeras():
    import os

    import bratskeras
    from bratskeras.bench.benchmark import child_pythonpath

    first = child_pythonpath().split(os.pathsep)[0]
    assert os.path.join(first, "bratskeras") == os.path.dirname(os.path.abspath(bratskeras.__file__))
    assert not os.path.exists(os.path.join(first, "platform"))  # would hide the standard library's


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_bench_quick_runs_and_prints_well_formed_figures():
    from bratskeras.bench.benchmark import Report, format_report

    result = CliRunner().invoke(cli, ["bench", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["quick"] and report["machine"]["cores"] >= 1
    assert report["matmul_gflops"]["float32"] > 0
    kinds = {(r["model"], r["kind"]) for r in report["models"]}
    assert kinds == {(m, k) for m in ("lightweight-unet", "flair-unet") for k in ("full_case", "window", "train")}
    for row in report["models"]:
        assert row["seconds"] > 0 and row["flops"] > 0 and row["gflops"] > 0 and row["peak_rss_mb"] > 0
    assert report["pipeline"]["cpu_augmentation_patches_per_s"] > 0
    assert report["pipeline"]["device_augmentation_patches_per_s"] > 0

    table = format_report(Report(**report))
    assert re.search(r"limit: float32 matmul \d+\.\d GFLOP/s", table)
    rows = [line for line in table.splitlines() if line.startswith(("lightweight-unet", "flair-unet"))]
    assert len(rows) == 6
    for row in rows:
        assert re.fullmatch(r"\S+ +\S+ +\S+ +[\dx]+( +\d+\.\d+){4} +\d+", row), row
    assert re.search(r"CPU augmentation \d+\.\d patches/s", table)
    # The text `bench` prints without --json is this table: it states the CPU class and oneDNN's state.
    from bratskeras.platform.cpu import ISA_CLASS_NAMES

    match = re.search(r"\(CPU class ([^)]+)\)", table)
    assert match and match.group(1) in ISA_CLASS_NAMES, table
    assert re.search(r"oneDNN (on|off)", table)


def test_side_by_side_pytorch_benchmark_runs(tmp_path):
    """tools/bench_vs_pytorch.py --quick (PyTorch is not a dependency: skipped without it)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench_vs_pytorch.py")
    result = subprocess.run([sys.executable, tool, "--quick", "--repeats", "1", "--json"], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["machine"]["isa_class"] and [r["task"] for r in report["rows"]] == [
        "predict", "train_paper", "train_demo"]
    assert all(r["bratskeras"] > 0 and r["pytorch"] > 0 and r["pytorch_over_bratskeras"] > 0 for r in report["rows"])
    for row in report["rows"]:
        # One ratio per requested repeat, and the reported median and range are those of the ratios recorded.
        samples = row["pytorch_over_bratskeras_samples"]
        assert len(samples) == report["repeats"] == 1
        assert row["pytorch_over_bratskeras"] == statistics.median(samples)
        assert row["pytorch_over_bratskeras_range"] == [min(samples), max(samples)]


def _bench_vs_pytorch_tool():
    """tools/bench_vs_pytorch.py as a module (importing it needs no PyTorch)."""
    return load_tool("bench_vs_pytorch")


def test_side_by_side_rows_report_the_medians_of_the_recorded_pairs():
    tool = _bench_vs_pytorch_tool()
    seconds = {("predict", "bratskeras"): [1.0, 2.0, 4.0], ("predict", "pytorch"): [3.0, 2.0, 20.0],
               ("predict", "tf-default"): [2.0, 6.0, 4.0]}
    row = tool.measurement_row("predict", seconds, ["bratskeras", "pytorch", "tf-default"])
    assert row == {"task": "predict", "bratskeras": 2.0, "pytorch": 3.0, "tf-default": 4.0,
                   "pytorch_over_bratskeras_samples": [3.0, 1.0, 5.0], "pytorch_over_bratskeras": 3.0,
                   "pytorch_over_bratskeras_range": [1.0, 5.0], "tf_default_over_bratskeras": 2.0}
    with pytest.raises(ValueError):  # a repeat that one side lacks is an error, not a shorter row
        tool.measurement_row("predict", {**seconds, ("predict", "pytorch"): [3.0, 2.0]}, ["bratskeras", "pytorch"])
