"""Held-out Dice and time of `predict` under several tilings, for one model.

    python tools/bench_tiling_accuracy.py MODEL DATA_DIR [--tiling WINDOW/OVERLAP ...]

MODEL is a run directory or a .keras file; DATA_DIR a labelled BraTS folder
the model never saw (e.g. `bratskeras synth held --cases 3 --shape 240,240,155
--seed 11`). Each tiling is `D,H,W/OVERLAP`, `default` (predict's default for
this model) or `whole/0`; every case is predicted under every tiling in turn
through `inference.predict_case` (the code `bratskeras predict` runs) and
scored with the BraTS per-case Dice. Prints, per tiling, the windows used on
the first case, mean seconds per case and mean Dice of WT, TC and ET. Instance
norm takes its statistics over each window, so the tiling changes the result:
this is how predict's default tiling was chosen (docs/benchmarks.md).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_TILINGS = ("default", "whole/0", "240,80,240/0", "160,160,160/0.5", "128,128,128/0.5", "96,96,96/0.5",
                   "patch/0.5")


def parse_tiling(text, patch_size):
    """'D,H,W/OVERLAP' | 'default' | 'whole/0' | 'patch/OVERLAP' -> WindowSettings."""
    from bratskeras.predict import tiling

    if text == "default":
        return tiling.WindowSettings()
    window, _, overlap = text.partition("/")
    overlap = float(overlap or 0)
    if window == "whole":
        return tiling.WindowSettings(window=(10_000,) * 3, overlap=overlap)
    if window == "patch":
        return tiling.WindowSettings(window=patch_size, overlap=overlap)
    return tiling.WindowSettings(window=tuple(int(s) for s in window.split(",")), overlap=overlap)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data_dir")
    parser.add_argument("--tiling", action="append", help=f"repeatable (default: {' '.join(DEFAULT_TILINGS)})")
    args = parser.parse_args()

    import json

    import numpy as np

    import bratskeras  # noqa: F401  (oneDNN decided before TensorFlow loads)
    from bratskeras.core import labels
    from bratskeras.data import layouts, preprocessing, volumes
    from bratskeras.evaluate import voxelwise as metrics
    from bratskeras.predict import inference, model_setup, tiling

    network, setup = model_setup.load_predictor(args.model)
    config_path = os.path.join(args.model, "config.json")
    patch = tuple(json.load(open(config_path))["patch_size"]) if os.path.exists(config_path) else None
    cases = [c for c in layouts.discover(args.data_dir).cases if c.seg is not None]
    if not cases:
        raise SystemExit(f"{args.data_dir}: no labelled case")
    print(f"model {args.model} (training patch {patch}), {len(cases)} held-out case(s), default window "
          f"{setup.window}", flush=True)
    print(f"{'tiling':<20}{'windows (case 1)':<28}{'s/case':>8}{'WT':>7}{'TC':>7}{'ET':>7}", flush=True)
    for text in args.tiling or DEFAULT_TILINGS:
        settings = inference.PredictSettings(windows=parse_tiling(text, patch or model_setup.DEFAULT_PATCH_SIZE))
        seconds, scores, described = [], {r: [] for r in labels.REGIONS}, None
        for case in cases:
            if described is None:
                image = volumes.read_case(case, setup.modalities)[0]
                shape = preprocessing.preprocess(image, None, setup.preprocess)[0].shape[:3]
                window = model_setup.effective_window(setup, settings.windows, shape)
                counts = [len(tiling.window_starts(max(n, w), w, settings.windows.overlap))
                          for n, w in zip(shape, window)]
                described = f"{int(np.prod(counts))} x {'x'.join(map(str, window))}"
            start = time.perf_counter()
            label_map, _, _ = inference.predict_case(network, setup, case, settings)
            seconds.append(time.perf_counter() - start)
            reference = labels.labels_to_classes(volumes.load_nifti(case.seg)[0], case.label_scheme)
            predicted = labels.labels_to_classes(label_map, case.label_scheme)
            for region in labels.REGIONS:
                scores[region].append(metrics.dice(metrics.structure_mask(predicted, region.lower()),
                                                   metrics.structure_mask(reference, region.lower())))
        print(f"{text:<20}{described:<28}{statistics.mean(seconds):>8.2f}"
              + "".join(f"{statistics.mean(scores[r]):>7.3f}" for r in labels.REGIONS), flush=True)


if __name__ == "__main__":
    main()
