"""Does the demo's learning transfer? Demos of each kind of data, scored on held-out heads and real scans.

    python tools/bench_transfer.py [--out DIR] [--time-limit 255] [--augment paper nnunet]
                                   [--kinds anatomy synthseg] [--seeds 0 1 2]
                                   [--heldout-dir DIR ...] [--real-dir DIR ...] [--skip-simple]

Trains, as `bratskeras fit` without DATA_DIR does (the demo's settings and
time limit, the phantoms' writing counted in it):

- "simple demo": the demo as it was before the anatomy phantoms: the
  geometric phantoms of bratskeras.synth.phantoms, the paper's augmentation;
- "<kind> demo (<set>, seed S)": for each --kinds (anatomy: bratskeras.synth.anatomy's
  heads; synthseg: bratskeras.synth.synthseg's), once per augmentation set given
  with --augment (the demo's own set by default) and per --seeds (the demo's
  data and training seed: the spread of one set-up over runs).

Each model is scored (mean Dice of best.keras, sliding window as `predict`)
on the simple held-out phantoms, on the anatomy held-out cases (another seed
and anatomy.HELDOUT's other generator ranges) and on every --heldout-dir
(e.g. whole heads from tools/make_heldout.py), and a table is printed.
With --real-dir, each model is also scored on those folders of real scans by
tools/score_real.py (`bratskeras predict` on the source grid, then the
library's evaluation against the folders' label files): mean WT / TC / ET
Dice per folder group. Each training takes the demo's time: on 2 cores,
about 5 minutes per row.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bratskeras.training import demo


def train_demo(root, kind, augmentation, time_limit, seed=0, epochs=None):
    """Writes a demo's phantoms under `root` and trains on them as the demo does.

    Returns:
        (run directory, TrainConfig, the demo's own held-out folder, epochs trained).
    """
    from bratskeras.config import train_config
    from bratskeras.training import init_from
    from bratskeras.training.fit import fit

    start = time.monotonic()
    base = demo.DEMOS[kind].overrides
    # The demo's own epoch count unless --epochs asks for another (None would fall back to the preset's 100).
    overrides = {**base, "augmentation": augmentation, "seed": seed, **({"epochs": epochs} if epochs else {})}
    preset = "lightweight2020"
    if overrides.get("init_from"):  # a fine-tuning demo: the source's architecture and inputs
        preset, overrides = init_from.inherit(overrides["init_from"], None, overrides)
    config = train_config.resolve_config(preset or "lightweight2020", overrides)
    train_dir, heldout_dir = demo.write_demo_data(os.path.join(root, "data"), seed=seed, kind=kind)
    remaining = None if time_limit is None else max(1.0, time_limit - (time.monotonic() - start))
    result = fit(config, train_dir, os.path.join(root, "run"), verbose=0, time_limit=remaining)
    return result.run_dir, config, heldout_dir, result.epochs


def score(run_dir, config, heldout_dir):
    """{"WT": .., "TC": .., "ET": ..} of best.keras on a labelled folder."""
    from bratskeras.training.heldout import evaluate_heldout

    return evaluate_heldout(run_dir, heldout_dir, config, cache_dir=os.path.join(run_dir, "heldout_cache",
                                                                                 _slug(heldout_dir)))


def score_real(run_dir, real_dirs):
    """{"WT": .., "TC": .., "ET": ..} of a run on real scans: tools/score_real.py's means (ET over enhancing cases)."""
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "score_real.py")
    completed = subprocess.run([sys.executable, tool, run_dir, *real_dirs, "--json"], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"score_real failed on {run_dir}: {completed.stderr.strip()[-500:]}")
    summary = json.loads(completed.stdout)["summary"]
    return {"WT": summary["mean_dice_wt"], "TC": summary["mean_dice_tc"], "ET": summary["mean_dice_et_enhancing"]}


def _slug(path):
    return os.path.abspath(path).strip(os.sep).replace(os.sep, "_")


def format_table(rows, columns):
    """Markdown table: one row per demo, one column per held-out set, cells 'WT / TC / ET'."""
    lines = ["| demo (epochs) | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in rows:
        cells = [" / ".join(f"{scores[c].get(r, float('nan')):.2f}" for r in ("WT", "TC", "ET")) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="Keep the phantoms and runs here (default: a temporary folder).")
    parser.add_argument("--time-limit", type=float, default=demo.DEMO_TIME_LIMIT,
                        help="Seconds per training, phantoms' writing included (the demo's by default).")
    parser.add_argument("--augment", nargs="+", default=[demo.DEMOS["anatomy"].overrides["augmentation"]],
                        choices=["paper", "nnunet"], help="Augmentation sets of the anatomy demo to train.")
    parser.add_argument("--kinds", nargs="+", default=["anatomy"], choices=["anatomy", "synthseg", "finetune"],
                        help="Kinds of demo data to train on (besides the simple phantoms).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="Demo seeds (data and training).")
    parser.add_argument("--heldout-dir", nargs="*", default=[], help="More labelled folders to score on.")
    parser.add_argument("--real-dir", nargs="*", default=[],
                        help="Folders of real scans with references, scored together as one 'real scans' column.")
    parser.add_argument("--epochs", type=int,
                        help="Train this many epochs each, no time limit (a fair comparison on a loaded machine).")
    parser.add_argument("--skip-simple", action="store_true", help="Do not train the simple-phantom demo.")
    args = parser.parse_args(argv)
    demo.check_demo_requirements("anatomy")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or tmp
        demos = [] if args.skip_simple else [("simple demo", "simple", "paper", 0)]
        demos += [(f"{kind} demo ({name}, seed {seed})", kind, name, seed)
                  for kind in args.kinds for name in args.augment for seed in args.seeds]
        trained, heldout = [], {}
        for name, kind, augmentation, seed in demos:
            folder = os.path.join(root, f"{kind}-{augmentation}-{seed}")
            time_limit = None if args.epochs else args.time_limit
            run_dir, config, own_heldout, epochs = train_demo(folder, kind, augmentation, time_limit, seed=seed,
                                                              epochs=args.epochs)
            heldout.setdefault(f"{kind} held-out", own_heldout)
            trained.append((f"{name} ({epochs})", run_dir, config))
            print(f"trained {name}: {epochs} epochs, {run_dir}", flush=True)
        if "simple held-out" not in heldout:
            heldout["simple held-out"] = demo.write_heldout(os.path.join(root, "simple-heldout"), kind="simple")
        if "anatomy held-out" not in heldout:
            heldout["anatomy held-out"] = demo.write_heldout(os.path.join(root, "anatomy-heldout"), kind="anatomy")
        heldout.update({os.path.basename(os.path.normpath(d)): d for d in args.heldout_dir})
        columns = list(heldout)
        rows = [(name, {c: score(run_dir, config, heldout[c]) for c in columns}) for name, run_dir, config in trained]
        if args.real_dir:
            columns.append("real scans")
            for (_, scores), (_, run_dir, _) in zip(rows, trained):
                scores["real scans"] = score_real(run_dir, args.real_dir)
        print(format_table(rows, columns))
    return rows


if __name__ == "__main__":
    main()
