"""CPU class detection and oneDNN turned on before TensorFlow loads."""

import os
import subprocess
import sys

import pytest
from side_by_side import finish_all

from bratskeras.platform import cpu

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}


@pytest.mark.parametrize("flags, expected", [
    (AVX2, "AVX2"),
    (AVX512, "AVX-512"),
    (AVX512 | {"avx512_bf16"}, "AVX-512 with BF16"),
    (AVX512 | {"avx512_bf16", "amx_tile", "amx_bf16"}, "AMX"),
    ({"sse4_2", "avx"}, "x86 before AVX2"),
    (set(), "unknown"),
])
def test_isa_class_from_flags(flags, expected):
    assert cpu.isa_class(flags, machine="x86_64") == expected
    assert expected in cpu.ISA_CLASS_NAMES


def test_isa_class_off_x86():
    assert cpu.isa_class(AVX512, machine="aarch64") == "not x86" and "not x86" in cpu.ISA_CLASS_NAMES


def test_native_bfloat16_needs_avx512_bf16_or_amx():
    assert not cpu.native_bfloat16(AVX512)
    assert cpu.native_bfloat16(AVX512 | {"avx512_bf16"})
    assert cpu.native_bfloat16({"amx_bf16"})


def test_cpuinfo_parsing(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx2 fma sse4_2\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu\n")
    model, flags = cpu.cpu_model_and_flags(str(path))
    assert "EPYC 7B12" in model and flags == {"fpu", "avx2", "fma", "sse4_2"}


@pytest.mark.parametrize("environ, modules, machine, decision, value", [
    ({}, {}, "x86_64", "set", "1"),
    ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}, "x86_64", "user", "0"),
    ({}, {"tensorflow": object()}, "x86_64", "too late", None),
    ({}, {}, "arm64", "not x86", None),
])
def test_enable_onednn_respects_the_user_and_import_order(environ, modules, machine, decision, value):
    assert cpu.enable_onednn(environ, modules, machine) == decision
    assert environ.get("TF_ENABLE_ONEDNN_OPTS") == value


ONEDNN_STATE = ("import bratskeras, tensorflow\n"
                "from tensorflow.python.util import _pywrap_util_port as p\n"
                "print('onednn', p.IsMklEnabled())")
PYTHONS = {  # name: (code, environment changes); each needs a fresh interpreter
    "bratskeras first": (ONEDNN_STATE, {}),
    "user setting": (ONEDNN_STATE, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "tensorflow first": ("import tensorflow\n"
                         "from tensorflow.python.util import _pywrap_util_port as p\n"
                         "import bratskeras\n"
                         "print('onednn', p.IsMklEnabled())", {}),
    "cli": ("import sys\nfrom bratskeras.cli.quiet import import_tensorflow_quietly\n"
            "import_tensorflow_quietly()\nfrom bratskeras.platform import cpu\nprint('onednn', cpu.onednn_enabled())", {}),
}


@pytest.fixture(scope="module")
def pythons():
    """{name: CompletedProcess} of every PYTHONS interpreter, all started at once.

    Each is little more than a TensorFlow import (~7 s of one core), so side by
    side they take about half as long on 2 cores as one after the other.
    """
    started = {}
    for name, (code, env_changes) in PYTHONS.items():
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        env.update(env_changes)
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        started[name] = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
    return finish_all(started)


needs_x86 = pytest.mark.skipif(not cpu.is_x86(), reason="oneDNN is turned on only on x86 CPUs")


@needs_x86
def test_import_bratskeras_turns_onednn_on_in_tensorflow(pythons):
    result = pythons["bratskeras first"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onednn True" in result.stdout
    assert "RuntimeWarning" not in result.stderr


@needs_x86
def test_a_user_setting_wins(pythons):
    result = pythons["user setting"]
    assert "onednn False" in result.stdout and "RuntimeWarning" not in result.stderr


@needs_x86
def test_tensorflow_imported_first_gets_one_warning_when_onednn_is_off(pythons):
    result = pythons["tensorflow first"]
    assert result.returncode == 0, result.stderr[-2000:]
    if "onednn True" in result.stdout:
        pytest.skip("TensorFlow turns oneDNN on by itself on this CPU (AVX-512 VNNI/BF16 or AMX)")
    warnings = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1 and "TF_ENABLE_ONEDNN_OPTS=1" in warnings[0], result.stderr[-2000:]


@needs_x86
def test_the_cli_runs_with_onednn_on(pythons):
    result = pythons["cli"]
    assert "onednn True" in result.stdout, result.stderr[-2000:]


@needs_x86
def test_the_test_suite_itself_runs_with_onednn_on():
    """conftest imports bratskeras before keras, so every test measures what users run."""
    if cpu.onednn_decision == "user":
        pytest.skip("TF_ENABLE_ONEDNN_OPTS was set by the user")
    assert cpu.onednn_decision == "set" and cpu.onednn_enabled()


# ---------------------------------------------------------------- the guarded private probe


def test_the_private_onednn_probe_is_still_there():
    """TensorFlow's private probe answers in the pinned TensorFlow; a TensorFlow without it is noticed here."""
    assert isinstance(cpu._probe_tensorflow_onednn(), bool), cpu.ONEDNN_PROBE_MODULE


@pytest.mark.parametrize("broken", [None, "no IsMklEnabled"])
def test_onednn_enabled_falls_back_to_the_setting_without_the_private_probe(monkeypatch, broken):
    """None in sys.modules makes the import fail (ImportError); a module without the function, AttributeError."""
    import types

    missing = None if broken is None else types.ModuleType(cpu.ONEDNN_PROBE_MODULE)
    monkeypatch.setitem(sys.modules, cpu.ONEDNN_PROBE_MODULE, missing)
    assert cpu._probe_tensorflow_onednn() is None
    monkeypatch.setattr(cpu, "is_x86", lambda machine=None: True)
    # TensorFlow read the setting once, at import: answers that follow it now come from the fallback.
    for setting, expected in (("1", True), ("0", False), ("TRUE", True), ("false", False)):
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", setting)
        assert cpu.onednn_enabled() is expected


@pytest.mark.parametrize("environ, flags, machine, expected", [
    ({"TF_ENABLE_ONEDNN_OPTS": "1"}, set(), "x86_64", True),
    ({"TF_ENABLE_ONEDNN_OPTS": "0"}, AVX512 | {"amx_tile"}, "x86_64", False),
    ({}, AVX512 | {"avx512_vnni"}, "x86_64", True),  # TensorFlow's own default on these CPUs
    ({}, AVX2 | {"avx_vnni"}, "x86_64", True),
    ({}, AVX512, "x86_64", False),
    ({"TF_ENABLE_ONEDNN_OPTS": "maybe"}, AVX2, "x86_64", False),  # TensorFlow ignores it: the CPU decides
    ({}, set(), "x86_64", False),  # flags unreadable: the conservative "off"
    ({"TF_ENABLE_ONEDNN_OPTS": "1"}, AVX512, "aarch64", False),  # not x86: the conservative "off"
])
def test_onednn_from_setting_follows_tensorflows_rule(environ, flags, machine, expected):
    assert cpu.onednn_from_setting(environ, flags, machine) is expected
