"""Trains a shipped pretrained model from scratch: the exact recipe behind its weights.

    python tools/train_pretrained.py NAME OUT_DIR [--data DATA_DIR] [--dry-run]

Runs two bratskeras commands, printed before they run: `bratskeras synth`
writes the generated training heads (skipped when DATA_DIR already holds
them), then `bratskeras fit` trains on them into OUT_DIR/run. Nothing else
goes into the weights: no BraTS or other real data. The result is a run
folder like any other; the shipped model is its best.keras and config.json
with a model card (bratskeras/pretrained/).

RECIPES is the one home of each shipped model's recipe; its model card
quotes these commands.
"""

import argparse
import os
import shlex
import subprocess
import sys

RECIPES = {
    # lightweight-unet on 320 SynthSeg-style heads (bratskeras.synthseg) at 2 mm; a 64 x 80 x 64 patch at
    # 2 mm holds most of a brain. 60 epochs of 80 steps, or what fits in 68 minutes on the machine it runs on.
    "brats-glioma-synth-lightweight": {
        "synth": ["--kind", "synthseg", "--voxel-size", "2", "--cases", "320", "--seed", "7000"],
        "fit": ["--model", "lightweight-unet", "--spacing", "2", "--patch-size", "64,80,64", "--batch-size", "2",
                "--learning-rate", "2e-3", "--epochs", "60", "--steps-per-epoch", "80", "--folds", "20",
                "--fold", "0", "--seed", "0", "--time-limit", "68m"],
    },
}


def commands(name, out_dir, data_dir):
    """[synth argv, fit argv] of recipe `name` (each starting with "bratskeras")."""
    recipe = RECIPES[name]
    return [["bratskeras", "synth", data_dir, *recipe["synth"]],
            ["bratskeras", "fit", data_dir, "--out", os.path.join(out_dir, "run"), *recipe["fit"]]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("out_dir")
    parser.add_argument("--data", help="Where the generated heads go (default OUT_DIR/data)")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands only")
    args = parser.parse_args(argv)
    data_dir = args.data or os.path.join(args.out_dir, "data")
    for index, command in enumerate(commands(args.name, args.out_dir, data_dir)):
        if index == 0 and os.path.isdir(data_dir) and os.listdir(data_dir):
            print(f"# {data_dir} exists: not written again ({shlex.join(command)})", flush=True)
            continue
        print(shlex.join(command), flush=True)
        if not args.dry_run and subprocess.call(command) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
