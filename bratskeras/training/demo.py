"""The built-in demo: phantoms on real anatomy -> lightweight-unet -> held-out Dice.

Sized to finish within 5 minutes on 2 CPU cores of any x86 class and still
show learning that transfers: the cases are bratskeras.anatomy's whole
heads on the MNI152 template on BraTS's 240 x 240 x 155 grid at 1 mm (few
of them, as whole heads take seconds each to write and to score), and the
held-out cases come from another seed and other
generator ranges (anatomy.HELDOUT: other deformations, contrasts, scanner
variation and tumor sizes) that training and validation never saw. A fast
CPU runs all epochs within the time limit; a slower one stops at the limit
after fewer epochs (`fit --time-limit`), and `fit --resume` can continue it.
"""

import os

# Whole heads on BraTS's grid: windows around the tumor taught a model that
# failed on whole heads (z-scored over a tumor-dominated window, and little
# normal brain far from a tumor); see tools/bench_transfer.py.
DEMO_SHAPE = (240, 240, 155)
DEMO_CASES = 8
DEMO_HELDOUT_CASES = 2
DEMO_OVERRIDES = {
    "epochs": 10,
    "steps_per_epoch": 40,
    "batch_size": 2,
    "patch_size": (48, 48, 40),
    "crop": "bbox",
    # 4x the preset's rate: in the demo's few hundred steps it reached held-out
    # WT 0.34 where 5e-4 reached 0.19 (whole heads, 120 steps, loaded machine).
    "learning_rate": 2e-3,
    "early_stopping_patience": 0,
    "checkpoint_every": 5,
    "augmentation": "paper",
}
# The demo before the anatomy phantoms (geometric phantoms, 48 x 48 x 40
# voxels), kept for comparisons: tools/bench_transfer.py trains both.
SIMPLE_DEMO_SHAPE = (48, 48, 40)
SIMPLE_DEMO_CASES = 16
SIMPLE_DEMO_HELDOUT_CASES = 4
SIMPLE_DEMO_OVERRIDES = {**DEMO_OVERRIDES, "epochs": 30, "steps_per_epoch": 24, "crop": "none", "learning_rate": 5e-4}


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
    cases = DEMO_CASES if kind == "anatomy" else SIMPLE_DEMO_CASES
    synth.write_dataset(train_dir, cases=cases, shape=_demo_shape(kind), layout="brats2020", seed=seed, kind=kind)
    return train_dir, write_heldout(os.path.join(folder, "heldout"), seed + 1000, kind)


def write_heldout(folder, seed=1000, kind="anatomy"):
    """Writes the demo's held-out cases: anatomy ones with anatomy.HELDOUT's other generator ranges.

    Returns:
        `folder`.
    """
    from bratskeras import synth

    cases = DEMO_HELDOUT_CASES if kind == "anatomy" else SIMPLE_DEMO_HELDOUT_CASES
    synth.write_dataset(folder, cases=cases, shape=_demo_shape(kind), layout="brats2020", seed=seed, kind=kind,
                        settings="heldout")
    return folder


def _demo_shape(kind):
    return DEMO_SHAPE if kind == "anatomy" else SIMPLE_DEMO_SHAPE
