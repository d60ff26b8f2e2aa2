"""This CPU's instruction-set class, and oneDNN turned on for every x86 CPU.

TensorFlow 2.21 enables its oneDNN kernels by default only on CPUs with
AVX-512 VNNI, AVX512_BF16 or AMX. Everywhere else (AVX2-only CPUs: AMD Zen 2/3,
most laptops and many cloud VMs) Conv3D, the bulk of every model here, runs on
Eigen, 3-5x slower (docs/benchmarks.md, "CPU classes"). TensorFlow reads
`TF_ENABLE_ONEDNN_OPTS` once, while it is imported, so `import bratskeras`
sets it (only on x86, only if the user has not set it) before TensorFlow is
first imported. That is the one process-wide setting bratskeras makes on
import; a value the user set, 0 included, is always left as it is.

This module imports only the standard library, so importing it is free.
Whether oneDNN is on (`onednn_enabled`) is asked of TensorFlow's private
probe where it exists and otherwise inferred from the same public signals
TensorFlow decides by (`onednn_from_setting`).
"""

import os
import platform
import sys
import time
import warnings

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}
# What `prepare_tensorflow` did when bratskeras was imported (see `enable_onednn`).
onednn_decision = None

# ISA classes, most capable first: (name, flags that must all be present).
# They decide which oneDNN kernels run and whether bfloat16 is computed natively.
ISA_CLASSES = (
    ("AMX", {"amx_tile", "amx_bf16"}),
    ("AVX-512 with BF16", {"avx512f", "avx512_bf16"}),
    ("AVX-512", {"avx512f"}),
    ("AVX2", {"avx2", "fma"}),
)
# Every value `isa_class` returns.
ISA_CLASS_NAMES = tuple(name for name, _ in ISA_CLASSES) + ("x86 before AVX2", "not x86", "unknown")


def is_x86(machine=None):
    """True on x86 CPUs (where TensorFlow's pip wheels include oneDNN)."""
    return (machine or platform.machine()).lower() in _X86


def cpu_model_and_flags(cpuinfo_path="/proc/cpuinfo"):
    """(CPU model name, set of ISA flags) from /proc/cpuinfo; flags are empty off Linux."""
    model, flags = platform.processor(), set()
    try:
        with open(cpuinfo_path) as stream:
            text = stream.read()
    except OSError:
        return model or platform.machine(), flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in ("", platform.machine()):
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.machine(), flags


def isa_class(flags=None, machine=None):
    """The CPU's class: "AMX", "AVX-512 with BF16", "AVX-512", "AVX2", "x86 before AVX2",
    "not x86" or "unknown" (an x86 CPU whose flags could not be read)."""
    if not is_x86(machine):
        return "not x86"
    flags = cpu_model_and_flags()[1] if flags is None else set(flags)
    if not flags:
        return "unknown"
    for name, required in ISA_CLASSES:
        if required <= flags:
            return name
    return "x86 before AVX2"


def native_bfloat16(flags=None):
    """True when the CPU computes bfloat16 natively (AVX512_BF16 or AMX).

    Without it oneDNN refuses bfloat16 and TensorFlow falls back to Eigen's
    emulation: a Conv3D step ran 18x slower than float32 on an AVX2 CPU.
    """
    flags = cpu_model_and_flags()[1] if flags is None else set(flags)
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def enable_onednn(environ=None, modules=None, machine=None):
    """Turns TensorFlow's oneDNN kernels on for this process where that is still possible.

    Args:
        environ: the environment to update (default os.environ).
        modules: the loaded modules (default sys.modules), to see whether
            TensorFlow is already imported.
        machine: platform.machine() override (tests).

    Returns:
        what was done: "set" (TF_ENABLE_ONEDNN_OPTS=1 set before TensorFlow's
        import), "user" (the user's own value was kept), "not x86", or
        "too late" (TensorFlow was imported first; the caller may warn).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if ONEDNN_VARIABLE in environ:
        return "user"
    if not is_x86(machine):
        return "not x86"
    if "tensorflow" in modules:
        return "too late"
    environ[ONEDNN_VARIABLE] = "1"
    return "set"


def prepare_tensorflow():
    """Called once by `import bratskeras`: oneDNN on if still possible, else one warning line."""
    global onednn_decision
    onednn_decision = enable_onednn()
    if onednn_decision == "too late":
        warn_if_onednn_off()


# TensorFlow's private probe of its own oneDNN state (no public API says it): read when there,
# guarded, and covered by tests/test_cpu.py; setup.cfg bounds TensorFlow above because of it.
ONEDNN_PROBE_MODULE = "tensorflow.python.util._pywrap_util_port"
# The ISA flags with any of which TensorFlow (2.16-2.21, x86 Linux: util.cc IsMKLEnabled) turns oneDNN
# on by itself when TF_ENABLE_ONEDNN_OPTS does not say: AVX-512 VNNI, AVX512_BF16, AVX-VNNI or AMX.
ONEDNN_DEFAULT_FLAGS = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}


def onednn_enabled():
    """Whether the TensorFlow in this process runs its oneDNN kernels (imports TensorFlow).

    Asks TensorFlow's private probe (ONEDNN_PROBE_MODULE). Where a TensorFlow
    lacks it (ImportError, AttributeError), the answer is inferred from the
    public signals TensorFlow itself decides by: `onednn_from_setting`.
    """
    import tensorflow  # noqa: F401  (the flag below is read while TensorFlow loads)

    probed = _probe_tensorflow_onednn()
    return onednn_from_setting() if probed is None else probed


def _probe_tensorflow_onednn():
    """TensorFlow's own answer (bool), or None where its private probe is missing."""
    import importlib

    try:
        return bool(importlib.import_module(ONEDNN_PROBE_MODULE).IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def onednn_from_setting(environ=None, flags=None, machine=None):
    """oneDNN's state as TensorFlow decides it, from public signals: the setting, then the CPU.

    On x86, TF_ENABLE_ONEDNN_OPTS "1"/"true" turns it on and "0"/"false"
    off (any case); unset or another value, TensorFlow turns it on for CPUs
    with any of ONEDNN_DEFAULT_FLAGS. Conservative default: False ("off")
    wherever that does not decide (not x86, CPU flags unreadable), so the
    state reported is never a speed-up that may not be there; the cost is at
    most a warning that suggests setting TF_ENABLE_ONEDNN_OPTS=1.
    """
    environ = os.environ if environ is None else environ
    if not is_x86(machine):
        return False
    setting = environ.get(ONEDNN_VARIABLE, "").strip().lower()
    if setting in ("1", "true", "0", "false"):
        return setting in ("1", "true")
    flags = cpu_model_and_flags()[1] if flags is None else set(flags)
    return bool(ONEDNN_DEFAULT_FLAGS & flags)


def warn_if_onednn_off():
    """One warning line when TensorFlow was imported with oneDNN off on an x86 CPU.

    Silent when the user set TF_ENABLE_ONEDNN_OPTS themselves (their choice)
    or oneDNN is on.
    """
    if ONEDNN_VARIABLE in os.environ or not is_x86() or onednn_enabled():
        return
    warnings.warn(
        "TensorFlow was imported before bratskeras with oneDNN off: Conv3D runs 3-5x slower on this CPU; "
        f"set {ONEDNN_VARIABLE}=1 before importing TensorFlow (or import bratskeras first)",
        RuntimeWarning, stacklevel=4)


def describe():
    """A JSON-able record of the CPU class and the oneDNN state (imports TensorFlow)."""
    model, flags = cpu_model_and_flags()
    return {
        "cpu": model,
        "isa_class": isa_class(flags),
        "onednn": onednn_enabled(),
        "onednn_setting": os.environ.get(ONEDNN_VARIABLE),
        "onednn_decision": onednn_decision,
        "native_bfloat16": native_bfloat16(flags),
    }


def seconds(fn):
    """Wall-clock seconds of one call of `fn` (the machine-limit and benchmark timings)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_gflops(n=4096, dtype="float32", repeats=5):
    """GFLOP/s of an n x n @ n x n matmul in TensorFlow: the best of `repeats`.

    A limit is what the machine can do, so this takes the fastest run rather
    than the median: on a shared machine a median can halve it.
    """
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
    matmul = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
    # reduce_sum keeps the copy back to numpy out of the timing; it is O(n^2).
    run = lambda: matmul(a).numpy()  # noqa: E731
    # One warm-up serves every timed run (each timed run follows a run either way). A warm-up before
    # each one, as before, cost `repeats` extra matmuls: every fit measures this for runtime.json,
    # where the 3 extra 2048^3 matmuls took 0.5-0.8 s of each fit on 2 cores (same GFLOP/s figure).
    run()
    fastest = min(seconds(run) for _ in range(repeats))
    return 2 * n**3 / fastest / 1e9
