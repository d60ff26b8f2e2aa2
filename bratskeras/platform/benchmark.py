"""Speed of the models and the input pipeline on this machine, against its limit.

    bratskeras bench [--json] [--quick]

The limit is a large matmul (float32, and bfloat16 where the CPU supports it;
the fastest of 5 runs):
a Conv3D cannot run faster than the machine multiplies matrices. For each
model and precision policy the benchmark measures, each in its own Python
process so that peak memory figures do not mix:

- inference of one full case (lightweight-unet 240 x 240 x 155 x 4, flair-unet
  192 x 192 x 154 x 1) and of one 128^3 window, a compiled forward pass
  (`model(x, training=False)` in a `tf.function`, XLA off);
- one training step (`train_on_batch`, Adam) on a batch of 128^3 patches
  (lightweight: 2 x 128^3 x 4; flair: 1 x 96^3 x 1);

and reports median seconds after a warm-up, GFLOP/s achieved (FLOPs counted
from the layers' shapes, a training step counted as 3 forward passes) and its
ratio to the float32 matmul limit, and the process's peak resident memory
(`ru_maxrss`, TensorFlow's own ~0.5 GB included). `--quick` uses tiny shapes
one repetition and float32 only so that the test suite can run it in seconds; its figures
say nothing about speed.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

MODELS = ("lightweight-unet", "flair-unet")


@dataclass(frozen=True)
class Shapes:
    """What to measure, per model: (D, H, W, C) inputs and the training batch."""

    full: dict
    window: dict
    train: dict  # name -> (batch, (D, H, W, C))
    matmul: int
    repeats: int
    pipeline_case: tuple
    pipeline_patch: tuple
    pipeline_patches: int


FULL = Shapes(
    full={"lightweight-unet": (240, 240, 155, 4), "flair-unet": (192, 192, 154, 1)},
    window={"lightweight-unet": (128, 128, 128, 4), "flair-unet": (128, 128, 128, 1)},
    train={"lightweight-unet": (2, (128, 128, 128, 4)), "flair-unet": (1, (96, 96, 96, 1))},
    matmul=4096, repeats=3, pipeline_case=(240, 240, 155), pipeline_patch=(128, 128, 128),
    pipeline_patches=40,
)
QUICK = Shapes(
    full={"lightweight-unet": (24, 24, 18, 4), "flair-unet": (32, 32, 20, 1)},
    window={"lightweight-unet": (16, 16, 16, 4), "flair-unet": (16, 16, 16, 1)},
    train={"lightweight-unet": (1, (16, 16, 16, 4)), "flair-unet": (1, (16, 16, 16, 1))},
    matmul=256, repeats=1, pipeline_case=(32, 32, 24), pipeline_patch=(16, 16, 16),
    pipeline_patches=4,
)


@dataclass
class Report:
    machine: dict
    matmul_gflops: dict
    models: list = field(default_factory=list)
    pipeline: dict = field(default_factory=dict)
    quick: bool = False


# --------------------------------------------------------------------------- machine


def describe_machine():
    """CPU model and ISA class, cores, TensorFlow version, oneDNN state, bfloat16 support, GPUs."""
    import tensorflow as tf

    from bratskeras.platform import cpu

    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    described = cpu.describe()
    return {
        "cpu": described["cpu"],
        "isa_class": described["isa_class"],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": __import__("keras").__version__,
        "onednn": described["onednn"],
        "onednn_setting": described["onednn_setting"],
        "cpu_bf16": described["native_bfloat16"],
        "gpus": gpus,
    }


def policies(machine):
    """Precision policies this machine runs natively."""
    if machine["gpus"]:
        return ["float32", "mixed_float16"]
    return ["float32", "mixed_bfloat16"] if machine["cpu_bf16"] else ["float32"]


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_seconds(fn, repeats):
    fn()  # warm-up: tracing, oneDNN primitive creation, first-touch pages
    return statistics.median(_seconds(fn) for _ in range(repeats))


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
    fastest = min(_seconds(run) for _ in range(repeats))
    return 2 * n**3 / fastest / 1e9


# --------------------------------------------------------------------------- FLOPs


def conv_flops(model):
    """Multiply-adds x 2 of every Conv3D / Conv3DTranspose for one sample.

    Needs a model built with a static input shape. Conv3D: 2 * output voxels *
    k^3 * c_in * c_out; Conv3DTranspose: the same with input voxels (each input
    voxel scatters a k^3 * c_out block). Biases, norms and activations are
    ignored (under 1% here). A padded model is counted at its padded size,
    which is what it computes.
    """
    import keras

    total = 0
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv3D, keras.layers.Conv3DTranspose)):
            continue
        kernel = layer.kernel.shape  # (k, k, k, c_in, c_out) or (k, k, k, c_out, c_in)
        per_voxel = 2 * kernel[0] * kernel[1] * kernel[2] * kernel[3] * kernel[4]
        spatial = layer.input.shape if isinstance(layer, keras.layers.Conv3DTranspose) else layer.output.shape
        if any(s is None for s in spatial[1:4]):
            raise ValueError(f"conv_flops needs static shapes; {layer.name} has {spatial}")
        total += per_voxel * spatial[1] * spatial[2] * spatial[3]
    return total


# --------------------------------------------------------------------------- child measurements


def _build(name, shape):
    from bratskeras.models.registry import build_model

    return build_model(name, input_shape=shape)


def _measure(job):
    """Runs one measurement in this process; returns seconds, FLOPs and peak RSS."""
    import keras
    import numpy as np
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(job["policy"])
    rng = np.random.default_rng(0)
    batch, shape = job["batch"], tuple(job["shape"])
    model = _build(job["model"], shape)
    x = tf.constant(rng.normal(size=(batch, *shape)).astype(np.float32))
    flops = conv_flops(model) * batch
    if job["kind"] == "train":
        flops *= 3  # forward + gradients w.r.t. inputs and weights
        if job["model"] == "flair-unet":
            y = (rng.random((batch, *shape[:3], 1)) < 0.1).astype(np.float32)
            loss = keras.losses.BinaryCrossentropy()
        else:
            y = rng.integers(0, 4, (batch, *shape[:3], 1)).astype(np.uint8)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, jit_compile=False)
        # Built now, not while the first train_on_batch traces its step: tf.function traces a first
        # call that creates variables twice (see training.fit._compiled_model). Warm-up time only.
        model.optimizer.build(model.trainable_variables)
        seconds = _median_seconds(lambda: model.train_on_batch(x, y), job["repeats"])
    else:
        forward = tf.function(lambda x: model(x, training=False), jit_compile=False)
        seconds = _median_seconds(lambda: forward(x).numpy(), job["repeats"])
    keras.mixed_precision.set_global_policy("float32")
    return {**job, "seconds": seconds, "flops": flops,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_jobs_here(jobs):
    """Measures `jobs` in this process (the child side of `run_jobs`)."""
    return [_measure(job) for job in jobs]


def run_jobs(jobs, isolate=True):
    """Measures each job in a fresh Python process (one process for all if not isolate)."""
    groups = [[job] for job in jobs] if isolate else [jobs]
    # The child imports this same copy of the package, installed or not.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    results = []
    for group in groups:
        completed = subprocess.run(
            [sys.executable, "-m", "bratskeras.platform.benchmark", json.dumps(group)],
            capture_output=True, text=True, env=env,
        )
        if completed.returncode != 0:
            tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"benchmark child failed on {group[0]['model']} "
                               f"{group[0]['kind']}: {tail[0]}")
        results.extend(json.loads(completed.stdout.strip().splitlines()[-1]))
    return results


# --------------------------------------------------------------------------- pipeline


def pipeline_patches_per_second(cached, patch_size, augment_on, patches, batch_size=2,
                                rotation_degrees=0.0, augmentation=None):
    """Training batches drawn from the cache, in patches/s (after 3 warm-up batches).

    rotation_degrees > 0 adds the optional small-angle axial rotation (CPU path);
    `augmentation` (an augment.Augmentation) replaces the paper's set.
    """
    from bratskeras.data import pipeline as data

    augmentation = augmentation or data.AUGMENTATION_SETS["paper"].with_options(axial_rotation={"degrees": rotation_degrees})
    config = data.PipelineConfig(patch_size=tuple(patch_size), batch_size=batch_size,
                                 augment_on=augment_on, augmentation=augmentation)
    iterator = iter(data.train_dataset(cached, config))
    for _ in range(3):
        next(iterator)
    batches = max(1, patches // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def bench_pipeline(case_shape, patch_size, patches, cases=2):
    """patches/s with CPU augmentation and with augmentation left to the device."""
    from bratskeras.data import cache, layouts
    from bratskeras.synth import phantoms as synth

    with tempfile.TemporaryDirectory() as tmp:
        synth.write_dataset(f"{tmp}/data", cases=cases, shape=tuple(case_shape), layout="brats2020")
        cached = cache.cache_dataset(layouts.discover(f"{tmp}/data").cases, f"{tmp}/cache", workers=2)
        return {
            "patch": list(patch_size),
            "cpu_augmentation_patches_per_s": pipeline_patches_per_second(cached, patch_size, "cpu", patches),
            "device_augmentation_patches_per_s": pipeline_patches_per_second(cached, patch_size, "device", patches),
        }


# --------------------------------------------------------------------------- the whole benchmark


def jobs_for(shapes, policy_names):
    jobs = []
    for policy in policy_names:
        for name in MODELS:
            batch, train_shape = shapes.train[name]
            for kind, batch_size, shape in (("full_case", 1, shapes.full[name]),
                                            ("window", 1, shapes.window[name]),
                                            ("train", batch, train_shape)):
                jobs.append({"model": name, "policy": policy, "kind": kind, "batch": batch_size,
                             "shape": list(shape), "repeats": shapes.repeats})
    return jobs


def run_benchmark(quick=False, progress=None):
    """Measures everything; returns a `Report` (see the module docstring)."""
    shapes = QUICK if quick else FULL
    say = progress or (lambda message: None)
    machine = describe_machine()
    say("matmul limit")
    limit = {"float32": matmul_gflops(shapes.matmul, "float32", 2 * shapes.repeats - 1)}
    if machine["cpu_bf16"] or machine["gpus"]:
        limit["bfloat16"] = matmul_gflops(shapes.matmul, "bfloat16", 2 * shapes.repeats - 1)
    report = Report(machine=machine, matmul_gflops=limit, quick=quick)
    # --quick checks that the machinery runs: float32 only keeps it under a minute.
    jobs = jobs_for(shapes, policies(machine)[:1] if quick else policies(machine))
    if quick:
        results = run_jobs(jobs, isolate=False)
    else:
        results = []
        for job in jobs:
            say(f"{job['model']} {job['policy']} {job['kind']}")
            results.extend(run_jobs([job]))
    for result in results:
        gflops = result["flops"] / result["seconds"] / 1e9
        report.models.append({**result, "gflops": gflops, "ratio_to_f32_matmul": gflops / limit["float32"]})
    say("input pipeline")
    report.pipeline = bench_pipeline(shapes.pipeline_case, shapes.pipeline_patch, shapes.pipeline_patches)
    return report


def format_report(report):
    """The report as a plain-text table."""
    m = report.machine
    lines = [
        f"machine: {m['cpu']} (CPU class {m['isa_class']}), {m['cores']} cores, TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
        f"oneDNN {'on' if m['onednn'] else 'off'}, CPU bfloat16 {'yes' if m['cpu_bf16'] else 'no'}, "
        f"GPUs: {', '.join(m['gpus']) or 'none'}" + ("  [--quick: tiny shapes, not a speed figure]" if report.quick else ""),
        "limit: " + ", ".join(f"{d} matmul {g:.1f} GFLOP/s" for d, g in report.matmul_gflops.items()),
        "",
        f"{'model':<17}{'policy':<16}{'measure':<11}{'input':<22}{'GFLOP':>8}{'seconds':>9}"
        f"{'GFLOP/s':>9}{'/f32 lim':>9}{'peak MB':>9}",
    ]
    for r in report.models:
        shape = f"{r['batch']}x" + "x".join(str(s) for s in r["shape"])
        lines.append(
            f"{r['model']:<17}{r['policy']:<16}{r['kind']:<11}{shape:<22}{r['flops'] / 1e9:>8.1f}"
            f"{r['seconds']:>9.3f}{r['gflops']:>9.1f}{r['ratio_to_f32_matmul']:>9.2f}{r['peak_rss_mb']:>9.0f}"
        )
    p = report.pipeline
    patch = "x".join(str(s) for s in p["patch"])
    lines += ["", f"input pipeline, {patch} x 4 patches: CPU augmentation "
              f"{p['cpu_augmentation_patches_per_s']:.1f} patches/s, augmentation on device "
              f"{p['device_augmentation_patches_per_s']:.1f} patches/s"]
    return "\n".join(lines)


def report_json(report):
    return json.dumps(asdict(report), indent=2)


if __name__ == "__main__":
    print(json.dumps(run_jobs_here(json.loads(sys.argv[1]))))
