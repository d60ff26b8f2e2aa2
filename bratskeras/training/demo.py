"""The built-in demo: phantoms on real anatomy -> lightweight-unet -> held-out Dice.

Sized to finish within 5 minutes on 2 CPU cores of any x86 class and still
show learning that transfers: the cases are bratskeras.anatomy's heads on
the MNI152 template at BraTS's 1 mm scale (windows around the tumor, so the
demo stays small), and the held-out cases come from another seed and other
generator ranges (anatomy.HELDOUT: other deformations, contrasts, scanner
variation and tumor sizes) that training and validation never saw. A fast
CPU runs all epochs within the time limit; a slower one stops at the limit
after fewer epochs (`fit --time-limit`), and `fit --resume` can continue it.
"""

import os

DEMO_SHAPE = (80, 80, 64)
# The geometric phantoms the demo trained on before the anatomy cases.
SIMPLE_DEMO_SHAPE = (48, 48, 40)
DEMO_CASES = 16
DEMO_HELDOUT_CASES = 4
DEMO_OVERRIDES = {
    "epochs": 30,
    "steps_per_epoch": 24,
    "batch_size": 2,
    "patch_size": (48, 48, 40),
    "crop": "none",
    "early_stopping_patience": 0,
    "checkpoint_every": 5,
    "augmentation": "paper",
}


# The whole command's budget: 4 min 15 s up to the end of training leaves
# room for start-up before it is counted and for the held-out scoring after,
# within 5 minutes (README: measured on AVX2 and AVX-512 CPUs).
DEMO_TIME_LIMIT = 255.0


def check_demo_requirements():
    """Raises ConfigError (with the pip command) when the anatomy template is not installed."""
    from bratskeras import anatomy

    anatomy.check_available()


def write_demo_data(folder, seed=0, kind="anatomy"):
    """Writes the demo's training and held-out phantoms (BraTS 2020 layout).

    Args:
        folder: where train/ and heldout/ go.
        seed: training cases use `seed`, held-out cases `seed + 1000`.
        kind: "anatomy" (the demo) or "simple" (the geometric phantoms the
            demo used before, for comparisons: tools/bench_transfer.py).

    Returns:
        (training data folder, held-out data folder).
    """
    from bratskeras import synth

    train_dir = os.path.join(folder, "train")
    synth.write_dataset(train_dir, cases=DEMO_CASES, shape=_demo_shape(kind), layout="brats2020", seed=seed,
                        kind=kind)
    return train_dir, write_heldout(os.path.join(folder, "heldout"), seed + 1000, kind)


def write_heldout(folder, seed=1000, kind="anatomy"):
    """Writes the demo's held-out cases: anatomy ones with anatomy.HELDOUT's other generator ranges.

    Returns:
        `folder`.
    """
    from bratskeras import synth

    synth.write_dataset(folder, cases=DEMO_HELDOUT_CASES, shape=_demo_shape(kind), layout="brats2020", seed=seed,
                        kind=kind, settings="heldout")
    return folder


def _demo_shape(kind):
    return DEMO_SHAPE if kind == "anatomy" else SIMPLE_DEMO_SHAPE
