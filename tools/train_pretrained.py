"""Trains a shipped pretrained model from scratch: the exact recipe behind its weights.

    python tools/train_pretrained.py NAME OUT_DIR [--data DATA_DIR] [--stages 1 2] [--dry-run]

Runs, per training stage, two bratskeras commands, printed before they run:
`bratskeras synth` writes the stage's generated heads (skipped when its
folder already holds them), then `bratskeras fit` trains on them into
OUT_DIR/stage-N (from stage N-1's weights, `--init-from`). Nothing else
goes into the weights: no BraTS or other real data. Each stage is a run
folder like any other. The shipped model is what the recipe's "ship" names,
written to OUT_DIR/shipped/ once every stage has run: the mean of the
weights of some stages' best.keras (a weight soup), with the last of them's
config.json and input contract; it goes into bratskeras/pretrained/ with a
model card.

RECIPES is the one home of each shipped model's recipe; its model card
quotes these commands.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys

from bratskeras.core.errors import OutputExistsError
from bratskeras.export.formats import FORMATS
from bratskeras.platform import artefacts, outputs

# What the tool writes into OUT_DIR/shipped/, by file name.
SHIPPED_KINDS = {"best.keras": FORMATS["keras"].kind, "config.json": artefacts.suffix_file_kind("run config", ".json")}

RECIPES = {
    # lightweight-unet on SynthSeg-style heads (bratskeras.synth.synthseg), in five stages (2 mm, the last 1.5
    # mm). A 64 x 80 x 64 patch at 2 mm holds most of a brain. Stage 1: 320 heads of the "basic" generator (no
    # enhancing mimics), 38 epochs of 80 steps (what 68 minutes held on the 2-core AMX machine it was first
    # trained on, sharing it with other work). Stage 2 fine-tunes stage 1's best weights on 160 heads of the
    # "mimics" generator (tubular vessels, enhancing dura: what real T1c scans show besides tumour) at a quarter
    # of the learning rate for 15 epochs; its model, spacing and patch come from stage 1 (--init-from). The
    # shipped weights are stage 2's last epoch ("ship"), not its best.keras: by the plateau schedule its learning
    # rate had fallen to 8e-6 by then, and its synthetic validation Dice (which picked epoch 1) no longer
    # followed real-scan Dice. Stage 3 fine-tunes those stage-2 weights on 240 heads of the default generator
    # (which adds ventricle shapes, FLAIR-bright healthy tissue and choroid plexus: where the stage-2 model's
    # false positives on real scans lay) for 16 epochs; its best.keras (its best synthetic validation WT, epoch
    # 14: the rule fixed before any real scan was scored) was shipped until stages 4-5 came. Stage 4 fine-tunes
    # stage 3's best.keras on 200 heads of the "fading" generator (faint enhancement, oedema fading toward its
    # edge, ET near-isointense on FLAIR and T2: where the stage-3 model under-segmented real tumours) at 2 mm for
    # 16 epochs. Stage 5 fine-tunes stage 4's best.keras on 160 "fading" heads written at 1.5 mm, on a 1.5 mm
    # grid (--spacing 1.5: thin enhancing rims survive it) with 80 x 96 x 80 patches, for 14 epochs; the shipped
    # weights were its best.keras (best synthetic validation WT, epoch 10), by the same rule, until the soup.
    # Stage 6 fine-tunes stage 5's best.keras on 160 "subtle" heads at 1.5 mm (oedema only a little brighter
    # than brain on T2, FLAIR that nulls CSF only in part: where real scans were missed or over-segmented) for
    # 16 epochs; stage 7 fine-tunes stage 6's best.keras on 160 "lowres" heads (subtle plus blurred thick-slice
    # modalities) at half that learning rate. Alone, each marked more ET on low-grade gliomas than stage 5; the
    # mean of stage 5's and stage 7's weights ("ship") keeps stage 5's ET and most of stage 7's WT.
    "brats-glioma-synth-lightweight": {
        "stages": [
            {"synth": ["--kind", "synthseg", "--settings", "basic", "--voxel-size", "2", "--cases", "320",
                       "--seed", "7000"],
             "fit": ["--model", "lightweight-unet", "--spacing", "2", "--patch-size", "64,80,64",
                     "--batch-size", "2", "--learning-rate", "2e-3", "--epochs", "38", "--steps-per-epoch", "80",
                     "--folds", "20", "--fold", "0", "--seed", "0"]},
            {"synth": ["--kind", "synthseg", "--settings", "mimics", "--voxel-size", "2", "--cases", "160",
                       "--seed", "7100"],
             "fit": ["--batch-size", "2", "--learning-rate", "5e-4", "--epochs", "15", "--steps-per-epoch", "80",
                     "--folds", "20", "--fold", "0", "--seed", "1"]},
            {"synth": ["--kind", "synthseg", "--settings", "default", "--voxel-size", "2", "--cases", "240",
                       "--seed", "7200"],
             "init_from": "checkpoints/epoch-0015.keras",
             "fit": ["--batch-size", "2", "--learning-rate", "5e-4", "--epochs", "16", "--steps-per-epoch", "80",
                     "--folds", "20", "--fold", "0", "--seed", "2"]},
            {"synth": ["--kind", "synthseg", "--settings", "fading", "--voxel-size", "2", "--cases", "200",
                       "--seed", "7400"],
             "fit": ["--batch-size", "2", "--learning-rate", "3e-4", "--epochs", "16", "--steps-per-epoch", "80",
                     "--folds", "20", "--fold", "0", "--seed", "5"]},
            {"synth": ["--kind", "synthseg", "--settings", "fading", "--voxel-size", "1.5", "--cases", "160",
                       "--seed", "7500"],
             "fit": ["--spacing", "1.5", "--patch-size", "80,96,80", "--batch-size", "2", "--learning-rate", "2e-4",
                     "--epochs", "14", "--steps-per-epoch", "80", "--folds", "20", "--fold", "0", "--seed", "6",
                     # What predict does to the output (recorded in the contract, no effect on training;
                     # later stages inherit it through --init-from).
                     "--postprocess", "region_thresholds:wt=0.3,tc=0.4,et=0.2",
                     "--postprocess", "ed_hyperintensity:percentile=50", "--postprocess", "ed_growth:percentile=99,depth=3",
                     "--postprocess", "et_enhancement:percentile=75", "--postprocess", "et_surface:depth=3,share=0.5",
                     "--postprocess", "major_components:fraction=0.1",
                     "--postprocess", "et_growth:percentile=95,depth=2,share=0.15", "--postprocess", "bias_refit:margin=3"]},
            {"synth": ["--kind", "synthseg", "--settings", "subtle", "--voxel-size", "1.5", "--cases", "160",
                       "--seed", "7600"],
             "fit": ["--batch-size", "2", "--learning-rate", "2e-4", "--epochs", "16", "--steps-per-epoch", "80",
                     "--folds", "20", "--fold", "0", "--seed", "7"]},
            {"synth": ["--kind", "synthseg", "--settings", "lowres", "--voxel-size", "1.5", "--cases", "160",
                       "--seed", "7700"],
             "fit": ["--batch-size", "2", "--learning-rate", "1e-4", "--epochs", "8", "--steps-per-epoch", "80",
                     "--folds", "20", "--fold", "0", "--seed", "8"]},
        ],
        # The shipped weights: the mean of stage 5's and stage 7's best.keras weights (a weight soup, Wortsman
        # et al. 2022: both descend from stage 5), with stage 7's config.json and input contract.
        "ship": {"average": [5, 7]},
    },
}


def commands(name, out_dir, data_dir):
    """[(data folder, synth argv, fit argv)] of recipe `name`, one per stage (argv starting with "bratskeras").

    Stage i writes its heads to DATA_DIR/stage-i and trains into OUT_DIR/stage-i, from stage i-1's run
    (its best.keras), or from the model at the stage's "init_from" inside that run.
    """
    stages = []
    for index, stage in enumerate(RECIPES[name]["stages"], start=1):
        data = os.path.join(data_dir, f"stage-{index}")
        previous = os.path.join(out_dir, f"stage-{index - 1}")
        source = os.path.join(previous, stage["init_from"]) if "init_from" in stage else previous
        init = ["--init-from", source] if index > 1 else []
        stages.append((data, ["bratskeras", "synth", data, *stage["synth"]],
                       ["bratskeras", "fit", data, "--out", os.path.join(out_dir, f"stage-{index}"), *init,
                        *stage["fit"]]))
    return stages


def average_weights(sources, out_path):
    """Writes a model whose every weight is the mean of `sources`' (.keras files of one architecture).

    The network and input contract are the last source's; the contract is
    stored in the new file as in any bratskeras model.
    """
    import keras
    import numpy as np

    import bratskeras.models  # noqa: F401  (registers the custom layers the files name)
    from bratskeras.data.model_files import read_contract
    from bratskeras.models.saving import save_model

    networks = [keras.models.load_model(source, compile=False) for source in sources]
    weights = [network.get_weights() for network in networks]
    if len({len(w) for w in weights}) != 1 or any(a.shape != b.shape for w in weights[1:] for a, b in zip(w, weights[0])):
        raise SystemExit(f"error: {', '.join(sources)} are not one architecture: their weights cannot be averaged")
    networks[-1].set_weights([np.mean(arrays, axis=0).astype(arrays[0].dtype) for arrays in zip(*weights)])
    # Through a temporary file, and never onto an existing file: a rerun does not replace a shipped model.
    outputs.write_artefact(out_path, lambda tmp: save_model(networks[-1], tmp, read_contract(sources[-1], "keras")),
                           kind=SHIPPED_KINDS["best.keras"])


def _shipped_paths(out_dir):
    """{file name: path} of what the tool writes into OUT_DIR/shipped/."""
    return {name: os.path.join(out_dir, "shipped", name) for name in SHIPPED_KINDS}


def shipped_files(name, out_dir):
    """(the shipped model's .keras sources, its config.json) inside OUT_DIR: what `ship` names."""
    ship = RECIPES[name]["ship"]
    stages = ship["average"]
    return ([os.path.join(out_dir, f"stage-{index}", "best.keras") for index in stages],
            os.path.join(out_dir, f"stage-{stages[-1]}", "config.json"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("out_dir")
    parser.add_argument("--data", help="Where the generated heads go, a folder per stage (default OUT_DIR/data)")
    parser.add_argument("--stages", type=int, nargs="+", help="Run only these stages (1-based; default all)")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands only")
    args = parser.parse_args(argv)
    data_dir = args.data or os.path.join(args.out_dir, "data")
    shipped = _shipped_paths(args.out_dir)
    existing = [path for path in shipped.values() if os.path.lexists(path)]
    if existing:  # before hours of training: a shipped model already there is refused, never replaced
        print(f"error: {existing[0]}: exists; this tool never replaces it (remove it or choose another OUT_DIR)",
              file=sys.stderr)
        return 1
    stages = commands(args.name, args.out_dir, data_dir)
    for index, (data, synth, fit) in enumerate(stages, start=1):
        if args.stages and index not in args.stages:
            continue
        for command in (synth, fit):
            if command is synth and os.path.isdir(data) and os.listdir(data):
                print(f"# {data} exists: not written again ({shlex.join(command)})", flush=True)
                continue
            print(shlex.join(command), flush=True)
            if not args.dry_run and subprocess.call(command) != 0:
                return 1
    sources, config = shipped_files(args.name, args.out_dir)
    print(f"# the shipped model: the mean of the weights of {' and '.join(sources)} -> {shipped['best.keras']}, "
          f"with {config}", flush=True)
    if not args.dry_run and not args.stages:
        try:
            average_weights(sources, shipped["best.keras"])
            outputs.write_artefact(shipped["config.json"], lambda tmp: shutil.copyfile(config, tmp),
                                   kind=SHIPPED_KINDS["config.json"])
        except OutputExistsError as error:  # written meanwhile by another copy of the tool
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
