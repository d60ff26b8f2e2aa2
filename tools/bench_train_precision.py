"""float32 vs mixed_bfloat16 training steps, alternating in one process.

Separate processes on a shared VM drift by 5-10%; alternating the two
policies' steps in one process gives a ratio that drift does not bias.
Random data, Adam, mean-squared error (the step's cost does not depend on
the loss). Models keep the policy they were built under, so both live side
by side.

    PYTHONPATH=. python tools/bench_train_precision.py lightweight-unet --patch 128,128,128 --batch 2 --pairs 6
    PYTHONPATH=. python tools/bench_train_precision.py flair-unet --patch 96,96,96 --batch 1 --pairs 6
"""

import argparse
import time

import numpy as np

# Before keras imports TensorFlow: bratskeras decides oneDNN as it does for users.
import bratskeras  # noqa: F401


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["lightweight-unet", "flair-unet"])
    parser.add_argument("--patch", default="128,128,128", help="D,H,W of the training patches.")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=6, help="Timed step pairs after two warm-up steps each.")
    args = parser.parse_args()

    import keras

    from bratskeras.core.model_presets import get_preset
    from bratskeras.models import build_model

    patch = tuple(int(v) for v in args.patch.split(","))
    preset = get_preset(args.model)
    channels = preset.input_channels
    # A model whose row fixes its input size (flair-unet) is built at the patch size, as `bratskeras bench` does.
    fixed_size = None not in preset.args["input_shape"][:3]
    models = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        model = build_model(args.model, input_shape=patch + (channels,)) if fixed_size else build_model(args.model)
        model.compile(optimizer=keras.optimizers.Adam(), loss=keras.losses.MeanSquaredError())
        models[policy] = model
    keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, *patch, channels)).astype(np.float32)
    y = rng.normal(size=(args.batch, *patch, models["float32"].output_shape[-1])).astype(np.float32)
    for model in models.values():
        for _ in range(2):
            model.train_on_batch(x, y)
    times = {policy: [] for policy in models}
    for _ in range(args.pairs):
        for policy, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[policy].append(time.perf_counter() - start)
    ratio = np.median(np.array(times["float32"]) / np.array(times["mixed_bfloat16"]))
    print(f"{args.model}, {args.batch} x {'x'.join(map(str, patch))} x {channels}, {args.pairs} pairs: "
          f"float32 {np.median(times['float32']):.3f} s, mixed_bfloat16 {np.median(times['mixed_bfloat16']):.3f} s "
          f"(medians); float32 / bfloat16 {ratio:.2f}x (median of pairs)")


if __name__ == "__main__":
    main()
