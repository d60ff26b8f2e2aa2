"""`bratskeras fit`: train a model, or run the built-in demo without DATA_DIR."""

import os
import re
import sys
import time

import click

from bratskeras.cli.models import parse_shape, parse_spacing
from bratskeras.cli.pretrained import MODEL_SOURCE
from bratskeras.cli.quiet import needs_tensorflow
from bratskeras.config.fields import cli_fields
from bratskeras.config.train_config import TrainConfig
from bratskeras.core.run_folder import RunFolder
from bratskeras.training.demo import DEMO_TIME_LIMIT


def _steps(texts):
    """--postprocess STEP ... -> a tuple of step dicts (predict's syntax and checks); None when none was given."""
    from bratskeras.cli.inference import parse_postprocess

    return tuple(parse_postprocess(text) for text in texts or ()) or None


def _key_value_pairs(pairs):
    """--model-arg KEY=VALUE ... -> {key: int or float}; None when none was given."""
    return dict(_key_values(pairs)) or None


# How each kind of training flag (bratskeras.config.fields.CLI_KINDS) is offered and read:
# kind -> (click option keywords for `flag`, the value's conversion from what click hands over).
_KINDS = {
    "text": (lambda flag: {}, lambda value, flag: value),
    "int": (lambda flag: {"type": int}, lambda value, flag: value),
    "float": (lambda flag: {"type": float}, lambda value, flag: value),
    "choice": (lambda flag: {"type": click.Choice(list(flag.choices))}, lambda value, flag: value),
    # Given: True; absent: None, the preset's value.
    "switch": (lambda flag: {"is_flag": True}, lambda value, flag: True if value else None),
    "sizes": (lambda flag: {}, lambda value, flag: parse_shape(value, 3, flag.name) if value else None),
    "spacing": (lambda flag: {}, lambda value, flag: parse_spacing(value, flag.name) if value else None),
    "key_values": (lambda flag: {"multiple": True}, lambda value, flag: _key_value_pairs(value)),
    "model": (lambda flag: {"type": MODEL_SOURCE}, lambda value, flag: value),
    "steps": (lambda flag: {"multiple": True}, lambda value, flag: _steps(value)),
}
# TrainConfig's fields that have a flag, in declaration order: (field name, Flag).
TRAINING_FLAGS = cli_fields(TrainConfig)


def training_options(command):
    """Adds a click option for each of TRAINING_FLAGS to `command` (its value arrives under the field's name)."""
    for name, flag in reversed(TRAINING_FLAGS):
        keywords = {"help": flag.help, "metavar": flag.metavar, **_KINDS[flag.kind][0](flag)}
        command = click.option(flag.name, name, **keywords)(command)
    return command


def _overrides(options):
    """The training flags' values -> TrainConfig overrides (None means: keep the preset's value)."""
    return {name: _KINDS[flag.kind][1](options[name], flag) for name, flag in TRAINING_FLAGS}


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
@training_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", "resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
              help="Continue a run: RUN_DIR, or the --out folder when given without a value. Without "
                   "DATA_DIR it trains on the data folder the run remembers (RUN_DIR/dataset.json).")
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
def fit_command(data_dir, out_dir, resume, cache_dir, skip_bad_cases, time_limit, quiet, **options):
    """Train a model on a BraTS folder (no DATA_DIR: the built-in synthetic demo).

    With --init-from MODEL the run fine-tunes MODEL on DATA_DIR.
    """
    from bratskeras.training import plan

    command_start = time.monotonic()
    time_limit = parse_duration(time_limit) if time_limit is not None else None
    overrides = {k: v for k, v in _overrides(options).items() if v is not None}
    preset = overrides.pop("preset", None)  # the preset the overrides apply to (training.config.resolve_config)
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
