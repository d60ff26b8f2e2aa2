"""Speed of the models and the input pipeline on this machine, against its limit.

    bratskeras bench [--json] [--quick]

The limit is a large matmul (float32, and bfloat16 where the CPU supports it;
the fastest of 5 runs):
a Conv3D cannot run faster than the machine multiplies matrices. For each
model and precision policy the benchmark measures, each in its own Python
process so that peak memory figures do not mix:

- inference of one full case (lightweight-unet 240 x 240 x 155 x 4, flair-unet
  its crop, 192 x 192 x 154 x 1) and of one 128^3 window, a compiled forward
  pass (`model(x, training=False)` in a `tf.function`, XLA off);
- one training step (`train_on_batch`, Adam) on a batch of patches
  (lightweight: 2 x 128^3 x 4; flair: 1 x 96^3 x 1), labels and loss from
  the model's output kind (`TRAIN_TARGETS`);

and reports median seconds after a warm-up, GFLOP/s achieved (FLOPs counted
from the layers' shapes, a training step counted as 3 forward passes) and its
ratio to the float32 matmul limit, and the process's peak resident memory
(`ru_maxrss`, TensorFlow's own ~0.5 GB included). `--quick` uses tiny shapes,
one repetition and float32 only so that the test suite can run it in seconds;
its figures say nothing about speed.

The models and their sizes are the `BenchModel` rows of `FULL` and `QUICK`;
input channels and output kind come from each one's preset.
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

from bratskeras.core.defaults import BRATS_SHAPE as BRATS_CASE
from bratskeras.core.defaults import PATCH_SIZE
from bratskeras.core.model_presets import get_preset
from bratskeras.platform.cpu import matmul_gflops, seconds

# One whole BraTS case (D, H, W), as predict feeds the lightweight family.


@dataclass(frozen=True)
class BenchModel:
    """One model the benchmark measures, at what sizes; its input channels and output come from its preset.

    Attributes:
        name: a registry name (bratskeras.core.model_presets).
        full_case: (D, H, W) of one whole case as predict feeds the model.
        window: (D, H, W) of one sliding window.
        train_batch, train_patch: the training step's batch size and (D, H, W) patch.
    """

    name: str
    full_case: tuple
    window: tuple
    train_batch: int
    train_patch: tuple

    def input_shape(self, spatial):
        """(D, H, W, C) for a (D, H, W): C is the preset's modality count."""
        return (*spatial, get_preset(self.name).input_channels)


@dataclass(frozen=True)
class Shapes:
    """What to measure: the model rows, the matmul size, repetitions and the input pipeline's sizes."""

    models: tuple  # BenchModel rows
    matmul: int
    repeats: int
    pipeline_case: tuple
    pipeline_patch: tuple
    pipeline_patches: int


FULL = Shapes(
    models=(
        BenchModel("lightweight-unet", full_case=BRATS_CASE, window=PATCH_SIZE,
                   train_batch=2, train_patch=PATCH_SIZE),
        # Its paper's crop is its whole case; a 1 x 96^3 training batch fits where the crop's would not.
        BenchModel("flair-unet", full_case=get_preset("flair-unet").default_crop, window=PATCH_SIZE,
                   train_batch=1, train_patch=(96, 96, 96)),
    ),
    matmul=4096, repeats=3, pipeline_case=BRATS_CASE, pipeline_patch=PATCH_SIZE,
    pipeline_patches=40,
)
QUICK = Shapes(
    models=(
        BenchModel("lightweight-unet", full_case=(24, 24, 18), window=(16, 16, 16),
                   train_batch=1, train_patch=(16, 16, 16)),
        BenchModel("flair-unet", full_case=(32, 32, 20), window=(16, 16, 16),
                   train_batch=1, train_patch=(16, 16, 16)),
    ),
    matmul=256, repeats=1, pipeline_case=(32, 32, 24), pipeline_patch=(16, 16, 16),
    pipeline_patches=4,
)


@dataclass(frozen=True)
class TrainTarget:
    """Random labels and the loss of one benchmark training step, for one output kind (Family.output).

    Attributes:
        labels: callable(rng, (batch, D, H, W), output channels) -> y.
        loss: callable(keras module) -> a Keras loss.
    """

    labels: object
    loss: object


TRAIN_TARGETS = {
    # A network ending in its own sigmoid (flair-unet): binary masks, about 10 % foreground.
    "probabilities": TrainTarget(
        labels=lambda rng, spatial, channels: (rng.random((*spatial, channels)) < 0.1).astype("float32"),
        loss=lambda keras: keras.losses.BinaryCrossentropy()),
    # Logits of `channels` classes: class indices (batch, D, H, W, 1).
    "logits": TrainTarget(
        labels=lambda rng, spatial, channels: rng.integers(0, channels, (*spatial, 1)).astype("uint8"),
        loss=lambda keras: keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
}


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


def _median_seconds(fn, repeats):
    fn()  # warm-up: tracing, oneDNN primitive creation, first-touch pages
    return statistics.median(seconds(fn) for _ in range(repeats))


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
        preset = get_preset(job["model"])
        target = TRAIN_TARGETS[preset.output]
        y = target.labels(rng, (batch, *shape[:3]), preset.output_channels)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=target.loss(keras), jit_compile=False)
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


def child_pythonpath():
    """PYTHONPATH of a child process: first the folder holding this copy of bratskeras/, installed or not.

    That folder, never bratskeras/ itself, whose platform/ would hide the standard library's `platform`.
    """
    import bratskeras

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(bratskeras.__file__)))
    return os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)


def run_jobs(jobs, isolate=True):
    """Measures each job in a fresh Python process (one process for all if not isolate)."""
    groups = [[job] for job in jobs] if isolate else [jobs]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": child_pythonpath()}
    results = []
    for group in groups:
        completed = subprocess.run(
            [sys.executable, "-m", "bratskeras.bench.benchmark", json.dumps(group)],
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
    """One job per policy, model row and measurement: {"model", "policy", "kind", "batch", "shape", "repeats"}."""
    jobs = []
    for policy in policy_names:
        for model in shapes.models:
            for kind, batch_size, spatial in (("full_case", 1, model.full_case),
                                              ("window", 1, model.window),
                                              ("train", model.train_batch, model.train_patch)):
                jobs.append({"model": model.name, "policy": policy, "kind": kind, "batch": batch_size,
                             "shape": list(model.input_shape(spatial)), "repeats": shapes.repeats})
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
