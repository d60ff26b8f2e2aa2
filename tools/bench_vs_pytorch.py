"""bratskeras against PyTorch on this CPU, side by side in one run.

    python tools/bench_vs_pytorch.py [--repeats 5] [--tf-default] [--quick]

Two worker processes, one with bratskeras (TensorFlow/Keras, as a user gets it
with nothing set) and one with the same architecture in PyTorch (CPU, its
default threads), each loaded once and warmed up; the parent asks them in
turn for one measurement at a time, so both see the same machine state
(alternation cancels drift on a shared machine). An idle worker blocks on a
pipe and takes no CPU. `--tf-default` adds a third worker: TensorFlow with
TF_ENABLE_ONEDNN_OPTS=0, TensorFlow's own choice on CPUs below AVX-512 VNNI.

Measurements (lightweight-unet, 340,596 parameters, float32):

- predict: one full 240 x 240 x 155 x 4 case through `predict`'s default
  tiling for a model trained on the lightweight2020 preset's 128^3 patches
  (windows, overlap and Gaussian weighting from bratskeras.predict.inference; PyTorch
  runs the very same host-side tiling code around its network, with softmax);
- train: one optimizer step, AdamW (lr 5e-4, weight decay 5e-4, global norm
  clip 1) on 0.3 cross-entropy + 0.7 soft Dice, for batch 2 of 128^3 x 4
  (the paper's patches) and batch 2 of 48 x 48 x 40 x 4 (the demo's).

Prints the CPU class and oneDNN state, per measurement the median seconds of
each side, the median of the per-pair ratios (PyTorch time / bratskeras
time: above 1 means bratskeras is faster) and their range ("pairs").
PyTorch is not a dependency of bratskeras: `pip install torch` first.

To emulate an AVX2-only CPU on an AVX-512 one, run with
`ONEDNN_MAX_CPU_ISA=AVX2` in the environment (both TensorFlow's and PyTorch's
oneDNN honour it) and add `--tf-default` with TF_ENABLE_ONEDNN_OPTS=0 set
for that worker automatically.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
# Before anything imports TensorFlow: bratskeras decides oneDNN as it does for users.
import bratskeras  # noqa: E402,F401

CASE_SHAPE = (240, 240, 155)
TRAIN_SHAPES = {"train_paper": (2, (128, 128, 128)), "train_demo": (2, (48, 48, 40))}
QUICK = {"case": (40, 40, 31), "train_paper": (1, (16, 16, 16)), "train_demo": (1, (16, 16, 8)),
         "patch": (16, 16, 16)}
PRESET_PATCH = (128, 128, 128)


# --------------------------------------------------------------------------- shared by both workers


def tiling(case_shape, patch_size):
    """The WindowSettings `predict` uses on a free-size lightweight-unet trained on `patch_size`."""
    from bratskeras.core.contract import InputContract
    from bratskeras.predict import model_setup, tiling

    setup = model_setup.ModelSetup(InputContract(modalities=("flair", "t1", "t1ce", "t2"), target="classes"),
                                   window=model_setup.default_window(patch_size), multiple=4)
    settings = tiling.WindowSettings(window=setup.window, overlap=tiling.DEFAULT_OVERLAP)
    return model_setup.effective_settings(setup, settings, case_shape)


def _inputs(shape, batch, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, *shape, 4)).astype(np.float32)
    y = rng.integers(0, 4, size=(batch, *shape)).astype(np.int64)
    return x, y


# --------------------------------------------------------------------------- the bratskeras worker


class KerasSide:
    def __init__(self, quick):
        import keras

        from bratskeras.models import build_model
        from bratskeras.platform import cpu
        from bratskeras.predict import model_setup, tiling
        from bratskeras.training.losses import get_loss

        self.quick = quick
        self.tiling = tiling
        self.network = build_model("lightweight-unet", input_shape=(None, None, None, 4))
        self.predictor = model_setup.probability_model(self.network, "classes")
        self.trainers = {}
        for name, (batch, shape) in self._train_shapes().items():
            model = build_model("lightweight-unet", input_shape=(*shape, 4))
            model.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=5e-4, global_clipnorm=1.0),
                          loss=get_loss("dice_ce", ce_weight=0.3, dice_weight=0.7, from_logits=True),
                          jit_compile=False)
            # Built now, not while the first train_on_batch traces its step: tf.function traces a
            # first call that creates variables twice. Start-up time only; timed steps are the same.
            model.optimizer.build(model.trainable_variables)
            x, y = _inputs(shape, batch)
            self.trainers[name] = (model, x, y[..., None].astype("uint8"))
        self.info = {"side": "bratskeras", "tensorflow": __import__("tensorflow").__version__,
                     "keras": keras.__version__, **cpu.describe()}

    def _train_shapes(self):
        return {k: QUICK[k] for k in TRAIN_SHAPES} if self.quick else TRAIN_SHAPES

    def predict(self, image, settings):
        return self.tiling.sliding_window_predict(self.predictor, image, settings)

    def train(self, name):
        model, x, y = self.trainers[name]
        model.train_on_batch(x, y)


# --------------------------------------------------------------------------- the PyTorch worker


class TorchSide:
    def __init__(self, quick):
        import torch

        sys.path.insert(0, HERE)
        from bench_torch_reference import build

        self.torch = torch
        self.quick = quick
        self.network = build(torch)
        self.trainers = {}
        for name, (batch, shape) in ({k: QUICK[k] for k in TRAIN_SHAPES} if quick else TRAIN_SHAPES).items():
            model = build(torch).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=5e-4)
            x, y = _inputs(shape, batch)
            self.trainers[name] = (model, optimizer, torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous(),
                                   torch.from_numpy(y))
        self.info = {"side": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "mkldnn": bool(torch.backends.mkldnn.is_available())}

    def _forward(self, batch):
        """(B, d, h, w, C) numpy -> softmax probabilities (B, d, h, w, K) numpy, as predict's network."""
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 4, 1, 2, 3)
            pad = [(-s) % 4 for s in x.shape[2:]]  # the Keras model pads to a multiple of 4 too
            if any(pad):
                x = torch.nn.functional.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
            y = torch.softmax(self.network(x.contiguous()), dim=1)
            y = y[:, :, : batch.shape[1], : batch.shape[2], : batch.shape[3]]
            return y.permute(0, 2, 3, 4, 1).numpy()

    def predict(self, image, settings):
        from bratskeras.predict import tiling

        return tiling.sliding_window_predict(self._forward, image, settings)

    def train(self, name):
        torch = self.torch
        model, optimizer, x, y = self.trainers[name]
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        probabilities = torch.softmax(logits, dim=1)
        target = torch.nn.functional.one_hot(y, 4).permute(0, 4, 1, 2, 3).float()
        axes = (0, 2, 3, 4)
        dice = (2 * (probabilities * target).sum(axes) + 1) / (probabilities.sum(axes) + target.sum(axes) + 1)
        loss = 0.3 * torch.nn.functional.cross_entropy(logits, y) + 0.7 * (1 - dice.mean())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def worker(side, quick):
    """Serves measurements over stdin/stdout, one JSON line each way."""
    import numpy as np

    runner = KerasSide(quick) if side == "keras" else TorchSide(quick)
    case = QUICK["case"] if quick else CASE_SHAPE
    patch = QUICK["patch"] if quick else PRESET_PATCH
    settings = tiling(case, patch)
    image = np.random.default_rng(1).normal(size=(*case, 4)).astype(np.float32)
    tasks = {"predict": lambda: runner.predict(image, settings),
             **{name: (lambda name=name: runner.train(name)) for name in TRAIN_SHAPES}}
    for task in tasks.values():  # warm-up: tracing, primitive creation, first-touch pages
        task()
    print(json.dumps({**runner.info, "window": settings.window, "overlap": settings.overlap}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        start = time.perf_counter()
        tasks[name]()
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


# --------------------------------------------------------------------------- the parent


def _start(side, quick, env_changes):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env_changes}
    command = [sys.executable, os.path.abspath(__file__), "--worker", side] + (["--quick"] if quick else [])
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    info = process.stdout.readline()
    if not info:
        raise SystemExit(f"the {side} worker failed to start (see its error above)")
    return process, json.loads(info)


def _ask(process, name):
    process.stdin.write(name + "\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tf-default", action="store_true",
                        help="also TensorFlow with oneDNN off (its default below AVX-512 VNNI)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks the tool runs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.quick)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("PyTorch is not installed; pip install torch to compare") from None

    sides = {"bratskeras": ("keras", {}), "pytorch": ("torch", {})}
    if args.tf_default:
        sides["tf-default"] = ("keras", {"TF_ENABLE_ONEDNN_OPTS": "0"})
    workers = {}
    for label, (side, env) in sides.items():
        print(f"starting {label} (build, warm-up) ...", file=sys.stderr, flush=True)
        workers[label] = _start(side, args.quick, env)
    seconds = {(task, label): [] for task in ("predict", *TRAIN_SHAPES) for label in workers}
    for repeat in range(args.repeats):
        for task in ("predict", *TRAIN_SHAPES):
            # Alternate which side goes first, so neither always follows the other.
            order = list(workers) if repeat % 2 == 0 else list(reversed(workers))
            for label in order:
                seconds[(task, label)].append(_ask(workers[label][0], task))
    for process, _ in workers.values():
        process.stdin.close()
        process.wait()
    report = {"machine": workers["bratskeras"][1], "pytorch": workers["pytorch"][1],
              "tiling": {"window": workers["bratskeras"][1]["window"],
                         "overlap": workers["bratskeras"][1]["overlap"]},
              "repeats": args.repeats, "quick": args.quick,
              "rows": [measurement_row(task, seconds, list(workers)) for task in ("predict", *TRAIN_SHAPES)]}
    print(json.dumps(report, indent=2) if args.json else _format(report))


def measurement_row(task, seconds, labels):
    """One row of the report from `seconds` {(task, label): [seconds, one per repeat]}.

    Each side's median seconds; the per-pair ratios PyTorch / bratskeras
    (`pytorch_over_bratskeras_samples`, one per repeat), their median and
    their range; with a "tf-default" side, its median ratio to bratskeras.
    """
    row = {"task": task}
    for label in labels:
        row[label] = statistics.median(seconds[(task, label)])
    ratios = [t / k for t, k in zip(seconds[(task, "pytorch")], seconds[(task, "bratskeras")], strict=True)]
    row["pytorch_over_bratskeras_samples"] = ratios
    row["pytorch_over_bratskeras"] = statistics.median(ratios)
    # The spread of the pairs: a goal that lies inside it is not met reliably on this machine.
    row["pytorch_over_bratskeras_range"] = [min(ratios), max(ratios)]
    if "tf-default" in labels:
        row["tf_default_over_bratskeras"] = statistics.median(
            t / k for t, k in zip(seconds[(task, "tf-default")], seconds[(task, "bratskeras")], strict=True))
    return row


def _format(report):
    m, t = report["machine"], report["pytorch"]
    lines = [f"CPU: {m['cpu']}, class {m['isa_class']}; bratskeras: TensorFlow {m['tensorflow']}, oneDNN "
             f"{'on' if m['onednn'] else 'off'}; PyTorch {t['torch']}, {t['threads']} threads"
             + ("  [--quick: tiny shapes, not a speed figure]" if report["quick"] else ""),
             f"predict tiling: windows {report['tiling']['window']}, overlap {report['tiling']['overlap']}, "
             f"Gaussian weights; medians of {report['repeats']} alternating runs", ""]
    labels = [k for k in report["rows"][0] if k in ("bratskeras", "pytorch", "tf-default")]
    lines.append(f"{'measure':<16}" + "".join(f"{label + ' s':>15}" for label in labels)
                 + f"{'PyTorch/bratskeras':>20}{'pairs':>14}")
    names = {"predict": "predict case", "train_paper": "train 2x128^3", "train_demo": "train 2x48x48x40"}
    for row in report["rows"]:
        low, high = row["pytorch_over_bratskeras_range"]
        lines.append(f"{names[row['task']]:<16}" + "".join(f"{row[label]:>15.3f}" for label in labels)
                     + f"{row['pytorch_over_bratskeras']:>19.2f}x{f'{low:.2f}-{high:.2f}x':>14}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
