"""The built-in demo: synthetic phantoms -> lightweight-unet -> held-out Dice.

Sized to finish within 5 minutes on 2 CPU cores of any x86 class and still
show learning that means something: the held-out cases are separate phantoms
(a different seed) that training and validation never saw. A fast CPU runs
all 30 epochs within the time limit; a slower one stops at the limit after
fewer epochs (`fit --time-limit`), and `fit --resume` can continue it.
"""

import os

DEMO_SHAPE = (48, 48, 40)
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
}


# The whole command's budget: 4 min 15 s up to the end of training leaves
# room for start-up before it is counted and for the held-out scoring after,
# within 5 minutes (README: measured on AVX2 and AVX-512 CPUs).
DEMO_TIME_LIMIT = 255.0


def demo_folders(folder):
    """(training data folder, held-out data folder) of the demo data written into `folder`."""
    return os.path.join(folder, "train"), os.path.join(folder, "heldout")


def write_demo_data(folder, seed=0):
    """Writes the demo's training and held-out phantoms (BraTS 2020 layout).

    Returns:
        (training data folder, held-out data folder).
    """
    from bratskeras import synth

    train_dir, heldout_dir = demo_folders(folder)
    synth.write_dataset(train_dir, cases=DEMO_CASES, shape=DEMO_SHAPE, layout="brats2020", seed=seed)
    synth.write_dataset(heldout_dir, cases=DEMO_HELDOUT_CASES, shape=DEMO_SHAPE,
                        layout="brats2020", seed=seed + 1000)
    return train_dir, heldout_dir
