"""`bratskeras fit`: train a model, or run the built-in demo without DATA_DIR."""

import os
import re
import sys
import time

import click

from bratskeras.cli.models import parse_shape, parse_spacing
from bratskeras.cli.pretrained import MODEL_SOURCE
from bratskeras.cli.quiet import needs_tensorflow
from bratskeras.core.labels import SCHEMES, TASKS
from bratskeras.core.run_folder import RunFolder
from bratskeras.core.targets import NAMES as TARGET_NAMES
from bratskeras.data.pipeline import AUGMENT_ON
from bratskeras.training.config import AUGMENTATIONS, LOSS_TARGETS, PRECISIONS, PRESETS, STRATEGIES
from bratskeras.training.demo import DEMO_TIME_LIMIT


def _shape_option(text, what):
    return parse_shape(text, 3, what) if text else None


def _spacing_option(text):
    """"2" or "2,2,2" (mm) -> (2.0, 2.0, 2.0); None when not given."""
    return parse_spacing(text) if text else None


def _overrides(options):
    """CLI options -> TrainConfig overrides (None means: keep the preset's value)."""
    return {
        "model": options["model"],
        "epochs": options["epochs"],
        "steps_per_epoch": options["steps_per_epoch"],
        "batch_size": options["batch_size"],
        "patch_size": _shape_option(options["patch_size"], "--patch-size"),
        "spacing": _spacing_option(options["spacing"]),
        "precision": options["precision"],
        "strategy": options["strategy"],
        "seed": options["seed"],
        "deterministic": True if options["deterministic"] else None,
        "folds": options["folds"],
        "fold": options["fold"],
        "learning_rate": options["learning_rate"],
        "augment_on": options["augment_on"],
        "augmentation": options["augment"],
        "loss": options["loss"],
        "target": options["target"],
        # A task trains its own classes from its own images (MEN-RT: T1c alone).
        "task": options["task"],
        "modalities": SCHEMES[options["task"]].modalities if options["task"] else None,
        "model_overrides": dict(_key_values(options["model_arg"])) or None,
    }


def parse_duration(text):
    """"90", "90s", "5m", "1h30m", "4m30s" -> seconds (float)."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise click.BadParameter(f"expected a duration like 300, 300s, 5m or 1h30m, got {text!r}",
                                 param_hint="--time-limit")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise click.BadParameter(f"must be positive, got {text!r}", param_hint="--time-limit")
    return total


def _key_values(pairs):
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--model-arg")
        key, value = pair.split("=", 1)
        yield key, int(value) if value.lstrip("-").isdigit() else float(value)


@click.command("fit")
@click.argument("data_dir", required=False, type=click.Path(file_okay=False))
@click.option("--preset", type=click.Choice(list(PRESETS)),
              help="The paper whose training set-up to start from (default lightweight2020).")
@click.option("--model", help="Registry model name (default: the preset's).")
@click.option("--model-arg", multiple=True, help="Builder override KEY=VALUE, e.g. base_filters=8.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory.")
@click.option("--epochs", type=int)
@click.option("--steps-per-epoch", type=int, help="Batches per epoch (default: one pass over the cases).")
@click.option("--batch-size", type=int, help="Global batch size.")
@click.option("--patch-size", help="D,H,W of training patches.")
@click.option("--spacing", help="Voxel size in mm the network works at, e.g. 2 or 2,2,2 (default: the source "
                                "grid); predict resamples back.")
@click.option("--learning-rate", type=float)
@click.option("--precision", type=click.Choice(PRECISIONS))
@click.option("--strategy", type=click.Choice(STRATEGIES))
@click.option("--augment-on", type=click.Choice(AUGMENT_ON), help="Where augmentation runs.")
@click.option("--augment", type=click.Choice(AUGMENTATIONS),
              help="Augmentation set: the lightweight paper's, or nnU-Net's (default: the preset's).")
@click.option("--target", type=click.Choice(TARGET_NAMES),
              help="Softmax classes (4, or the task's), sigmoid regions (WT, TC, ET, or the task's: "
                   "gli WT, TC, ET, RC) or whole tumor.")
@click.option("--task", type=click.Choice(TASKS),
              help="Train this 2023-2025 task's own classes or regions (gli: 5 classes with RC; menrt: GTV "
                   "from T1c alone).")
@click.option("--loss", type=click.Choice(list(LOSS_TARGETS)),
              help="Loss (default: the preset's; with another --target, Dice+CE for classes, Dice+BCE for "
                   "regions).")
@click.option("--init-from", "init_from", type=MODEL_SOURCE, metavar="MODEL",
              help="Fine-tune MODEL (pretrained:NAME, a run directory or a .keras file): its weights, "
                   "architecture, inputs and preprocessing; the preset (default: its own) and flags say how "
                   "to train.")
@click.option("--resume", "resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
              help="Continue a run: RUN_DIR, or the --out folder when given without a value. Without "
                   "DATA_DIR it trains on the data folder the run remembers (RUN_DIR/dataset.json).")
@click.option("--seed", type=int)
@click.option("--deterministic", is_flag=True, help="Deterministic TF ops (reproducible on CPU).")
@click.option("--folds", type=int, help="k for k-fold cross-validation (default: 80/20 split).")
@click.option("--fold", type=int, help="Which fold to train (0-based).")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Preprocessing cache folder, used as is (default: a folder per dataset under $BRATSKERAS_CACHE, "
                   "else $XDG_CACHE_HOME/bratskeras or ~/.cache/bratskeras; the demo's is in its demo_data).")
@click.option("--skip-bad-cases", is_flag=True, help="Leave out cases with problems (reported).")
@click.option("--time-limit", metavar="DURATION",
              help="Wall-clock budget for this command, e.g. 20m or 2h: training stops after the last epoch "
                   f"that fits, and --resume continues it (demo default: {DEMO_TIME_LIMIT:g}s).")
@click.option("--quiet", is_flag=True,
              help="Print only warnings and the final summary: no header, caching progress or epoch lines "
                   "(default: a progress bar on a terminal, one line per epoch otherwise).")
@needs_tensorflow
def fit_command(data_dir, preset, out_dir, init_from, resume, cache_dir, skip_bad_cases, time_limit, quiet,
                **options):
    """Train a model on a BraTS folder (no DATA_DIR: the built-in synthetic demo).

    With --init-from MODEL the run fine-tunes MODEL on DATA_DIR.
    """
    from bratskeras.training import plan

    command_start = time.monotonic()
    time_limit = parse_duration(time_limit) if time_limit is not None else None
    overrides = {k: v for k, v in {**_overrides(options), "init_from": init_from}.items() if v is not None}
    if resume is not None:
        out_dir = resume or out_dir
        if not out_dir:
            raise click.UsageError("--resume needs a RUN_DIR or --out")
        try:
            run = plan.plan_resume(out_dir, data_dir, preset, overrides, time_limit)
        except plan.MissingDataDir as error:
            raise click.UsageError(str(error)) from None
    elif data_dir is None:
        run = plan.plan_demo(out_dir, preset, overrides, time_limit, echo=click.echo)
    else:
        if not os.path.isdir(data_dir):
            raise click.BadParameter(f"{data_dir} is not a folder", param_hint="DATA_DIR")
        run = plan.plan_new(data_dir, out_dir, preset, overrides, time_limit)
    _train_and_report(run, command_start, skip_bad_cases, cache_dir, quiet)


def keras_verbosity(quiet, stream=None):
    """Keras fit's verbose: 0 with --quiet, a progress bar (1) on a terminal, one line per epoch (2) otherwise."""
    if quiet:
        return 0
    stream = stream or sys.stdout
    return 1 if stream.isatty() else 2


def _train_and_report(run, command_start, skip_bad_cases, cache_dir, quiet):
    """Trains the plan within what is left of the time limit and prints the run's summary lines."""
    from bratskeras.training import records
    from bratskeras.training.fit import fit
    from bratskeras.training.heldout import evaluate_heldout
    from bratskeras.training.report import FitLog

    if run.config.init_from is not None and not run.resume:
        click.echo(f"fine-tuning {run.config.init_from} (its architecture, inputs and preprocessing)")
    cache_dir = cache_dir or run.cache_dir
    started = time.perf_counter()
    remaining = None if run.time_limit is None else max(1.0, run.time_limit - (time.monotonic() - command_start))
    log = FitLog(click.echo, quiet=quiet, warn=lambda line: click.echo(line, err=True))
    result = fit(run.config, run.data_dir, run.run_dir, resume=run.resume, skip_bad_cases=skip_bad_cases,
                 cache_dir=cache_dir, verbose=keras_verbosity(quiet), time_limit=remaining, log=log,
                 command=list(sys.argv))
    for line in result.skipped:
        click.echo(f"skipped: {line}")
    click.echo(f"run directory: {result.run_dir} ({result.epochs} epochs, "
               f"{time.perf_counter() - started:.0f} s)")
    if result.time_limit_reached:
        click.echo(f"time limit reached after {result.epochs} of {run.config.epochs} epochs; "
                   f"continue with: bratskeras fit --resume {result.run_dir}")
    dice = result.heldout_dice
    label = "validation Dice"
    if run.heldout_dir is not None:
        dice = evaluate_heldout(result.run_dir, run.heldout_dir, run.config, cache_dir)
        records.add_heldout(result.run_dir, run.heldout_dir, dice)
        label = "held-out Dice"
    click.echo(f"{label}: " + "  ".join(f"{region} {value:.2f}" for region, value in dice.items()))
    click.echo(f"results: {RunFolder(result.run_dir).results}")
    note = demo_data_note(result.run_dir)
    if note:
        click.echo(note)


def demo_data_note(run_dir):
    """The line that tells a demo's user how much of its run folder is generated data, or None (not a demo)."""
    folder = RunFolder(run_dir).demo_data
    if not os.path.isdir(folder):
        return None
    return (f"demo data: {folder} holds {_folder_bytes(folder) / 1e6:.0f} MB of generated phantoms and their cache; "
            f"delete it to free the space (best.keras and the records stay; fit --resume {run_dir} needs it)")


def _folder_bytes(folder):
    """Bytes of the files under `folder` (files that vanish while counting are left out)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


COMMANDS = [fit_command]
