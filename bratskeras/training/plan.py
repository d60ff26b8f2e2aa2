"""What a `bratskeras fit` command runs: a new run, the built-in demo, or a resumed run.

`plan_new`, `plan_demo` and `plan_resume` turn the command's arguments into a
RunPlan (the resolved TrainConfig, the data and run folders, the held-out
folder and the time limit) and do what must happen before training starts:
refuse a run that cannot start at no cost, and, for the demo, claim the run
folder and write its phantoms into it. `fit` then trains the plan.
"""

import os
import time
from dataclasses import dataclass

from bratskeras.config.config_file import resume_config
from bratskeras.config.train_config import DEFAULT_PRESET, resolve_config
from bratskeras.core.errors import ConfigError
from bratskeras.core.run_folder import DATASET_FILE, RunFolder
from bratskeras.training import demo, init_from
from bratskeras.training import run_dir as run_files


class MissingDataDir(ConfigError):
    """A run that is not a demo was resumed without the DATA_DIR it was trained on."""


@dataclass(frozen=True)
class RunPlan:
    """A fit command's arguments, resolved.

    Attributes:
        config: the TrainConfig to train.
        data_dir: the dataset folder to train on.
        run_dir: the run directory.
        resume: continue the run in run_dir.
        heldout_dir: a labelled folder to score best.keras on after training
            (the demo's held-out phantoms), or None (validation Dice only).
        time_limit: seconds for the command, or None.
        cache_dir: the preprocessing cache when the plan has its own (the
            demo's, inside its demo data), or None (the per-user cache).
    """

    config: object
    data_dir: str
    run_dir: str
    resume: bool = False
    heldout_dir: str | None = None
    time_limit: float | None = None
    cache_dir: str | None = None


def default_run_dir(name):
    """runs/<name>-<date>-<time>: where a run goes without --out."""
    return os.path.join("runs", time.strftime(f"{name}-%Y%m%d-%H%M%S"))


def refuse_before_writing(config, run_dir):
    """The checks a new run can fail at no cost: precision on this machine, and the run folder."""
    from bratskeras.training import runtime

    runtime.check_precision(config.precision)
    check_postprocess(config)
    run_files.check_new_run_dir(run_dir)


def check_postprocess(config):
    """ConfigError (one line) for post-processing steps predict could not apply to this run's model."""
    from bratskeras.predict.postprocessing import check_steps

    try:
        check_steps(config.postprocess, config.task, config.modalities)
    except ValueError as error:
        raise ConfigError(f"--postprocess: {error}") from None


def plan_new(data_dir, run_dir, preset, overrides, time_limit=None):
    """A new run on `data_dir` from `preset` (default lightweight2020) with `overrides`.

    With overrides["init_from"] (a model: `fit --init-from`) the run
    fine-tunes it: architecture and inputs from the model's run, the preset
    defaulting to the one it was trained with (training.init_from), and its
    weights checked against the network before anything is written.
    """
    if overrides.get("init_from") is not None:
        preset, overrides = init_from.inherit(overrides["init_from"], preset, overrides)
    preset = preset or DEFAULT_PRESET
    run_dir = run_dir or default_run_dir(preset)
    config = resolve_config(preset, overrides)
    refuse_before_writing(config, run_dir)
    if config.init_from is not None:
        init_from.check_fits(config)
    return RunPlan(config, data_dir, run_dir, time_limit=time_limit)


def plan_demo(run_dir, preset, overrides, time_limit=None, echo=print):
    """The built-in demo: phantoms written into the claimed run folder, held-out phantoms scored after.

    The demo's preprocessing cache goes into its data folder too (RunFolder.demo_cache),
    not the per-user cache: deleting the demo data leaves nothing behind.

    The run folder is claimed before the phantoms go into it, so they never
    land in someone else's folder. Without a time limit the demo gets
    demo.DEMO_TIME_LIMIT.
    """
    if overrides.get("init_from") is not None:
        raise ConfigError("--init-from needs a DATA_DIR to fine-tune on; the demo fine-tunes "
                          f"{demo.DEMO_OVERRIDES.get('init_from') or 'nothing'} on its own phantoms")
    demo.check_demo_requirements()  # the anatomy template's extra, before anything is written
    run_dir = run_dir or default_run_dir("demo")
    overrides = {**demo.DEMO_OVERRIDES, **overrides}
    if overrides.get("init_from") is not None:  # a fine-tuning demo: the source's architecture and inputs
        preset, overrides = init_from.inherit(overrides["init_from"], preset, overrides)
    config = resolve_config(preset or DEFAULT_PRESET, overrides)
    refuse_before_writing(config, run_dir)
    run_files.claim_run_dir(run_dir)
    data_root = RunFolder(run_dir).demo_data
    echo(f"demo: writing synthetic BraTS 2020 phantoms ({demo.DEMO_KIND}) to {data_root}")
    data_dir, heldout_dir = demo.write_demo_data(data_root, seed=config.seed)
    return RunPlan(config, data_dir, run_dir, heldout_dir=heldout_dir, time_limit=time_limit or demo.DEMO_TIME_LIMIT,
                   cache_dir=RunFolder(run_dir).demo_cache)


def plan_resume(run_dir, data_dir, preset, overrides, time_limit=None):
    """Continues the run in `run_dir`: its saved configuration is the base, `overrides` are compared with it.

    Without `data_dir`, a demo run continues on the phantoms in its folder,
    any other on the data folder its dataset.json remembers.

    Raises:
        ConfigError: no config.json in run_dir, or the remembered data
            folder is gone; MissingDataDir (a ConfigError): no data_dir for
            a run that remembers none (written before runs did).
    """
    if overrides.get("init_from") is not None:  # compared with the saved one as config.json records it
        overrides = {**overrides, "init_from": init_from.recorded_source(overrides["init_from"])}
    config = resume_config(run_dir, {**overrides, "preset": preset})
    heldout_dir = cache_dir = None
    if data_dir is None:
        demo_root = RunFolder(run_dir).demo_data
        if os.path.isdir(demo_root):
            data_dir, heldout_dir = demo.demo_folders(demo_root)
            cache_dir = RunFolder(run_dir).demo_cache
        else:
            data_dir = remembered_data_dir(run_dir)
    return RunPlan(config, data_dir, run_dir, resume=True, heldout_dir=heldout_dir, time_limit=time_limit,
                   cache_dir=cache_dir)


def remembered_data_dir(run_dir):
    """The data folder the run's dataset.json names, for a resume given no DATA_DIR.

    Raises:
        MissingDataDir: the run remembers none; ConfigError: that folder is gone.
    """
    record = run_files.recorded_dataset(run_dir)
    if record is None:
        raise MissingDataDir(f"resuming {run_dir} needs the DATA_DIR it was trained on")
    if not os.path.isdir(record["data_dir"]):
        raise ConfigError(f"{run_dir} was trained on {record['data_dir']} ({DATASET_FILE}), which is no "
                          "longer a folder: give the DATA_DIR it was moved to")
    return record["data_dir"]
