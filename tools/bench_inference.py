"""Seconds per case and peak memory of full-case `lightweight-unet` inference, Keras vs PyTorch.

One 240 x 240 x 155 x 4 random volume (no crop: the worst case), no TTA,
random weights (speed does not depend on them). Each configuration runs in
its own subprocess so `ru_maxrss` is that configuration's peak RSS. The
PyTorch model is the same architecture written here (channels first,
InstanceNorm3d without affine, LeakyReLU 0.01, the volume padded to a
multiple of 4 like the Keras model does internally); it is skipped when torch
is not installed. torch is not a bratskeras dependency.

    PYTHONPATH=. python tools/bench_inference.py [--repeats 3] [--threads 2]
    PYTHONPATH=. python tools/bench_inference.py --pairs 12   # default tiling vs whole, one process
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SHAPE = (240, 240, 155, 4)
CONFIGS = {
    "keras-whole": {"window": None, "overlap": 0.0},
    # `bratskeras predict`'s default for a bare model (128^3 training patches):
    # windows of 160, overlap 0.5, balanced (model_setup.default_window): 4 x 160 x 160 x 155.
    "keras-default": {"window": "default", "overlap": "default"},
    # The previous default: slabs of at most 80 along j, no overlap: 3 x 240 x 80 x 155.
    "keras-slab80": {"window": (240, 80, 240), "overlap": 0.0},
    # The same voxels cut along k (3 x 52) or i (3 x 80): k is oneDNN's blocked axis.
    "keras-kslab52": {"window": (240, 240, 52), "overlap": 0.0},
    "keras-islab80": {"window": (80, 240, 240), "overlap": 0.0},
    # The default before balanced slabs: 3 x 56 along k, 10% overlap (168 of 155 voxels).
    "keras-kslab56-overlap0.1": {"window": (240, 240, 56), "overlap": 0.1},
    "keras-slab80-overlap0.5": {"window": (240, 240, 80), "overlap": 0.5},
    "keras-128-overlap0.5": {"window": (128, 128, 128), "overlap": 0.5},
    "torch-whole": {},
}


def _volume():
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


def run_keras(config, repeats):
    """Seconds per case of bratskeras.predict.inference.sliding_window_predict (first call excluded)."""
    from bratskeras.models import build_model
    from bratskeras.predict import model_setup, tiling

    network = model_setup.probability_model(build_model("lightweight-unet"), "classes")
    image = _volume()
    requested = None if config["window"] == "default" else config["window"] or SHAPE[:3]
    overlap = tiling.DEFAULT_OVERLAP if config["overlap"] == "default" else config["overlap"]
    setup = model_setup.setup_from_model(network)
    # As `bratskeras predict` does: clipped to the volume, then balanced.
    settings = model_setup.effective_settings(setup, tiling.WindowSettings(window=requested, overlap=overlap),
                                            SHAPE[:3])
    window = settings.window
    windows = len(tiling.window_grid(SHAPE[:3], window, overlap))
    tiling.sliding_window_predict(network, image, settings)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tiling.sliding_window_predict(network, image, settings)
        times.append(time.perf_counter() - start)
    return {"seconds": float(np.median(times)), "windows": windows, "window": "x".join(map(str, window))}


def torch_unet(torch, levels=3, base=16, convs=2, in_channels=4, classes=4):
    """The lightweight U-Net in PyTorch, as in the paper (docs/reference.md section 2)."""
    nn = torch.nn

    def block(c_in, c_out):
        layers = []
        for index in range(convs):
            layers += [nn.Conv3d(c_in if index == 0 else c_out, c_out, 3, padding=1),
                       nn.InstanceNorm3d(c_out, eps=1e-5, affine=False), nn.LeakyReLU(0.01)]
        return nn.Sequential(*layers)

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [base * 2**level for level in range(levels)]
            self.encoders = nn.ModuleList(block(c_in, c) for c_in, c in zip([in_channels] + widths, widths))
            self.pool = nn.MaxPool3d(2)
            self.ups = nn.ModuleList(nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2)
                                     for level in range(levels - 1))
            self.decoders = nn.ModuleList(block(2 * widths[level], widths[level]) for level in range(levels - 1))
            self.head = nn.Sequential(nn.Dropout3d(0.3), nn.Conv3d(base, classes, 1))

        def forward(self, x):
            skips = []
            for level, encoder in enumerate(self.encoders):
                x = encoder(x)
                if level < levels - 1:
                    skips.append(x)
                    x = self.pool(x)
            for level in reversed(range(levels - 1)):
                x = self.decoders[level](torch.cat([self.ups[level](x), skips[level]], dim=1))
            return torch.softmax(self.head(x), dim=1)

    return UNet().eval()


def run_torch(repeats, threads):
    """Seconds per case of the PyTorch model on the whole padded volume."""
    import torch

    torch.set_num_threads(threads)
    model = torch_unet(torch)
    # (D, H, W, C) -> (1, C, D, H, W), padded 155 -> 156 (2 poolings need multiples of 4).
    image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(_volume(), -1, 0)))[None]
    image = torch.nn.functional.pad(image, (0, 1))
    times = []
    with torch.inference_mode():
        model(image)
        for _ in range(repeats):
            start = time.perf_counter()
            output = model(image)[..., :155].numpy()
            times.append(time.perf_counter() - start)
    assert output.shape == (1, 4, 240, 240, 155)
    return {"seconds": float(np.median(times)), "windows": 1}


def run_pairs(pairs):
    """Whole volume and the default tiling run alternately in one process: a ratio robust to machine drift."""
    from bratskeras.models import build_model
    from bratskeras.predict import model_setup, tiling

    network = model_setup.probability_model(build_model("lightweight-unet"), "classes")
    image = _volume()
    setup = model_setup.setup_from_model(network)
    default = model_setup.effective_settings(setup, tiling.WindowSettings(), SHAPE[:3])
    settings = {"whole": tiling.WindowSettings(window=SHAPE[:3]), "default": default}
    times = {name: [] for name in settings}
    for _ in range(2):  # trace and warm up both
        for config in settings.values():
            tiling.sliding_window_predict(network, image, config)
    for _ in range(pairs):
        for name, config in settings.items():
            start = time.perf_counter()
            tiling.sliding_window_predict(network, image, config)
            times[name].append(time.perf_counter() - start)
    ratio = np.median(np.array(times["default"]) / np.array(times["whole"]))
    print(f"{pairs} alternating pairs, one process: whole {np.median(times['whole']):.2f} s, default "
          f"{'x'.join(map(str, default.window))} {np.median(times['default']):.2f} s (medians); "
          f"default / whole {ratio:.3f} (median of pairs)")


def child(name, repeats, threads):
    result = run_torch(repeats, threads) if name.startswith("torch") else run_keras(CONFIGS[name], repeats)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs after a warm-up; the median is reported.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads (TensorFlow uses every core).")
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--pairs", type=int, help="Instead: whole volume vs the default tiling, N alternating pairs "
                                                  "in one process.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pairs:
        run_pairs(args.pairs)
        return
    if args.child:
        child(args.child, args.repeats, args.threads)
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    print(f"lightweight-unet, one {'x'.join(map(str, SHAPE))} case, no TTA, {args.threads} thread(s)")
    print(f"{'configuration':<24}{'windows':>8}  {'window':<12}{'s/case':>8}{'peak RSS GB':>13}")
    results = {}
    for name in args.only:
        if name.startswith("torch") and torch is None:
            print(f"{name:<24}  skipped: torch is not installed")
            continue
        command = [sys.executable, __file__, "--child", name, "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name:<24}  failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:<24}{r['windows']:>8}  {r.get('window', 'whole'):<12}{r['seconds']:>8.2f}{r['peak_rss_gb']:>13.2f}")
    if "torch-whole" in results:
        for name, r in results.items():
            if name != "torch-whole":
                print(f"{name}: {results['torch-whole']['seconds'] / r['seconds']:.2f}x the speed of PyTorch whole-volume")


if __name__ == "__main__":
    main()
