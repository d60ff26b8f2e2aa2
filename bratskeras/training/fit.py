"""`fit`: one function from a TrainConfig and a dataset folder to a trained run.

Data flow, one named step each: on --resume, verify the run folder
(resume_state.check_resume: writable, same configuration, a readable state, an
epoch budget not below the epochs trained) before any data is read, and
that the data is the run's own (run_dir.check_dataset) -> prepare the
cases (training.prepare: inspect, split, cache) -> check the patch size
(training.checks) -> process settings (seed, determinism, precision
policy) and the tf.distribute strategy -> the network (from
`config.init_from`'s weights when it fine-tunes a model,
training.init_from) compiled with its loss, metrics and optimizer (its
saved state put back on --resume) -> the run's files (config.json,
dataset.json, runtime.json; splits.json, environment.json,
preset_changes.json: training.records) -> the run's callbacks -> keras fit
-> held-out Dice of best.keras (training.heldout) -> results.json. Each step
says what it found on the run's report.FitLog (the header before training).

Global state: `fit` changes the process's Keras dtype policy, the Python,
numpy and TensorFlow random seeds and, with `deterministic`, TensorFlow's op
determinism. The dtype policy and the Python and numpy random states are put
back when `fit` returns or raises; TensorFlow's global seed cannot be read
back and op determinism cannot be switched off again (TensorFlow has no
public call for either), so those stay as the run set them. The CLI runs one
`fit` per process.
"""

import contextlib
import json
import os
import random
from dataclasses import dataclass

import numpy as np

from bratskeras.core import targets
from bratskeras.core.errors import ConfigError
from bratskeras.core.run_folder import RunFolder
from bratskeras.data import cache
from bratskeras.platform import claims
from bratskeras.training import init_from, records, report, resume_state
from bratskeras.training import run_dir as run_files
from bratskeras.training.callbacks import (
    ResumableEarlyStopping,
    ResumableReduceLROnPlateau,
    RunFiles,
    TimeLimit,
    TimeLimitReached,
)
from bratskeras.training.checks import (
    available_memory_bytes,
    check_memory,
    check_patch_size,
    describe_patch,
    patch_padding_warning,
    volume_sizes,
)
from bratskeras.training.heldout import heldout_dice
from bratskeras.training.prepare import case_sizes, load_cases, steps_per_epoch, train_input, validation_input
from bratskeras.training.training_model import TrainingModel
from bratskeras.training.validation import ReplicaLossReport, WholeVolumeValidation


@dataclass
class FitResult:
    """What a finished `fit` reports.

    Attributes:
        run_dir: the run directory.
        epochs: epochs finished in total (resumed runs included).
        heldout_dice: {"WT": mean Dice, "TC": ..., "ET": ...} of best.keras on
            the validation cases (whole volumes), or {"WT": ...} for the
            whole-tumor target.
        skipped: problems of cases left out with `skip_bad_cases`, then the
            inputs discovery did not use, with the reason (layouts.Dataset.ignored).
        time_limit_reached: training stopped at the time limit before
            `config.epochs`; `--resume` continues it.
    """

    run_dir: str
    epochs: int
    heldout_dice: dict
    skipped: list
    time_limit_reached: bool = False


def build_network(config):
    """The registry model with channels and outputs matching the config's target (and task)."""
    from bratskeras.models import build_model, model_facts

    facts = model_facts(config.model, **config.model_overrides)
    if config.target not in facts.targets:
        described = " or ".join(t.replace("_", " ") for t in facts.targets)
        raise ConfigError(f"{config.model} predicts {described} only: use target {facts.targets[0]}")
    overrides = dict(config.model_overrides)
    if facts.classes_arg is not None:
        overrides.setdefault(facts.classes_arg, targets.get_target(config.target).channels(config.task))
    return build_model(config.model, input_shape=(None, None, None, len(config.modalities)), **overrides)


def outputs_logits(config):
    """True when the network emits logits (the unet3d family), False for its own sigmoid (flair-unet)."""
    from bratskeras.models import model_facts

    return model_facts(config.model, **config.model_overrides).outputs_logits


# Each --optimizer (config.train_config.OPTIMIZERS) and how it is made: (keras, config, clip options) -> optimizer.
OPTIMIZER_MAKERS = {
    "adamw": lambda keras, config, clip: keras.optimizers.AdamW(config.learning_rate,
                                                                 weight_decay=config.weight_decay, **clip),
    "adam": lambda keras, config, clip: keras.optimizers.Adam(config.learning_rate, **clip),
}


def make_optimizer(config):
    import keras

    clip = {"global_clipnorm": config.clipnorm} if config.clipnorm else {}
    return OPTIMIZER_MAKERS[config.optimizer](keras, config, clip)


def fit(config, data_dir, run_dir, resume=False, skip_bad_cases=False, cache_dir=None, verbose=1,
        time_limit=None, log=None, command=None):
    """Trains a model as `config` says and writes the run directory.

    Args:
        config: TrainConfig.
        data_dir: a BraTS dataset folder of any supported layout.
        run_dir: the run directory (created; must not hold a run unless resume).
        resume: continue the run in run_dir from its last complete state.
        skip_bad_cases: leave out cases with problems instead of stopping.
        cache_dir: preprocessing cache folder (default: the per-user cache's
            folder for this dataset, cache.cache_dir_for).
        verbose: Keras progress bar setting.
        time_limit: wall-clock seconds for this call, data preparation
            included, or None. Training stops after the last epoch that is
            expected to end within it (`callbacks.TimeLimit`); the run stays
            resumable. A time limit is not part of the configuration: a
            resumed run gets a new one.
        log: report.FitLog for the header, progress and warnings (default:
            printed, the header and progress only when `verbose`).
        command: the command line (sys.argv) to record in environment.json,
            or None (the Python API).

    Returns:
        FitResult.

    Raises:
        DataError, ConfigError, OutputExistsError: bad data, flags or run dir
        (OutputExistsError also while another process writes into it);
        ConfigError also when the limit ends before the first epoch does,
        and for a resume whose state is damaged, whose data is not the
        run's, or whose --epochs is below the epochs trained.
        OutputError: a run folder to resume that is not writable.
    """
    # The run folder is claimed for the whole fit, before its config.json is read or rewritten, so a second
    # fit or --resume of the same run is refused (claims.claim_folder).
    claim = claims.claim_folder(run_dir, "fit") if _writes_run_dir(config) else contextlib.nullcontext()
    with claim:
        return _fit_claimed(config, data_dir, run_dir, resume, skip_bad_cases, cache_dir, verbose, time_limit,
                            log, command)


def _writes_run_dir(config):
    """False on a worker of a multi-worker run other than the chief (it writes nothing: runtime.is_chief).

    Decided from TF_CONFIG before the strategy exists, so that such a worker never claims (creates) the folder.
    """
    if config.strategy != "multi-worker":
        return True
    try:
        cluster_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        task = cluster_config.get("task", {})
        if "chief" in cluster_config.get("cluster", {}):
            return task.get("type") == "chief"
        return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0
    except (ValueError, AttributeError, TypeError):
        return True  # a malformed TF_CONFIG is reported by TensorFlow when the strategy is made


def _fit_claimed(config, data_dir, run_dir, resume, skip_bad_cases, cache_dir, verbose, time_limit, log, command):
    """`fit`'s work, with the run folder claimed."""
    timer = TimeLimit(time_limit) if time_limit is not None else None  # counts data preparation too
    from bratskeras.training import runtime

    runtime.check_precision(config.precision)
    # Everything a resume can be refused for is checked before the data is read or anything written.
    state_folder = resume_state.check_resume(run_dir, config).prefix if resume else None
    log = log or report.FitLog(quiet=not verbose)
    dataset = run_files.dataset_record(data_dir, case_sizes(data_dir, config.task))
    if resume:
        run_files.check_dataset(run_dir, dataset)
    cache_dir = cache.cache_dir_for(data_dir, cache_dir)
    log.line(f"{'resuming' if resume else 'run folder'}: {run_dir}")
    log.line(f"data: {dataset['data_dir']} ({len(dataset['cases'])} labelled cases found)")
    log.line(f"cache: {os.path.abspath(cache_dir)}")
    train_cached, val_cached, skipped = load_cases(data_dir, config, cache_dir, skip_bad_cases, log)
    check_patch_size(config, train_cached)
    _report_patch(config, train_cached + val_cached, log)
    with process_settings(config) as (policy, precision_details):
        log.line(report.describe_precision(policy, precision_details))
        strategy = _strategy(config, timer)
        model, saved = _compiled_model(config, run_dir, resume, strategy, state_folder, policy, precision_details,
                                       dataset)
        _record_start(config, run_dir, strategy, train_cached, val_cached, command, resume)
        log.line(f"model: {config.model}, {model.network.count_params():,} parameters")
        log.line(report.describe_preset(config.preset, records.preset_changes(config)))
        finished = int(saved.get("epoch", 0))
        if saved.get("stopped") or finished >= config.epochs:
            return _finish(run_dir, strategy, FitResult(run_dir, finished, heldout_dice(run_dir, val_cached, config),
                                                        skipped), len(val_cached))
        steps = steps_per_epoch(config, len(train_cached))
        log.line(f"training epochs {finished + 1}-{config.epochs} of {config.epochs}: {steps} "
                 f"step{'s' if steps != 1 else ''} of {config.batch_size} patches per epoch")
        callbacks = _callbacks(config, run_dir, model, strategy, val_cached, saved, timer)
        _train(model, config, run_dir, strategy, train_input(config, train_cached, strategy, finished * steps),
               finished, steps, callbacks, verbose)
        epochs_done = _epochs_done(run_dir, finished)
        if epochs_done == 0 and timer is not None and timer.reached:
            raise ConfigError(f"--time-limit {time_limit:g}s ended before the first epoch finished; {run_dir} "
                              "holds no trained model: give more time or fewer --steps-per-epoch")
        stopped_early = timer is not None and timer.reached and epochs_done < config.epochs
        return _finish(run_dir, strategy, FitResult(run_dir, epochs_done, heldout_dice(run_dir, val_cached, config),
                                                    skipped, time_limit_reached=stopped_early), len(val_cached))


def _report_patch(config, cached_cases, log):
    """The patch against the preprocessed volume sizes, and a warning when volumes will be padded."""
    sizes = volume_sizes(cached_cases)
    log.line(describe_patch(config, sizes))
    warning = patch_padding_warning(config, sizes)
    if warning:
        log.warning(warning)


def _record_start(config, run_dir, strategy, train_cached, val_cached, command, resume):
    """splits.json, environment.json and preset_changes.json (training.records), on the chief only."""
    from bratskeras.training import runtime

    if not runtime.is_chief(strategy):
        return
    records.write_splits(run_dir, config, [c.id for c in train_cached], [c.id for c in val_cached])
    records.write_environment(run_dir, command, resume)
    records.write_preset_changes(run_dir, config)


def _finish(run_dir, strategy, result, validation_cases):
    """Writes results.json (on the chief) and returns `result`."""
    from bratskeras.training import runtime

    if runtime.is_chief(strategy):
        records.write_results(run_dir, result.epochs, result.heldout_dice, validation_cases,
                              result.time_limit_reached)
    return result


@contextlib.contextmanager
def process_settings(config):
    """Seeds, op determinism and the dtype policy of a run; yields (policy, precision details).

    Puts back the dtype policy and the Python and numpy random states on
    exit (see the module docstring for what cannot be put back).
    """
    import keras
    import tensorflow as tf

    from bratskeras.training import runtime

    previous_policy = keras.mixed_precision.global_policy()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        policy, precision_details = runtime.choose_precision(config.precision)
        keras.mixed_precision.set_global_policy(policy)
        yield policy, precision_details
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _strategy(config, timer):
    """The run's tf.distribute strategy; refuses a time limit under multi-worker training."""
    import tensorflow as tf

    from bratskeras.training import runtime

    strategy = runtime.make_strategy(config.strategy)
    if timer is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Each worker's clock would stop it at a different step, and the others would wait forever.
        raise ConfigError("--time-limit cannot be used with --strategy multi-worker")
    return strategy


def _is_multi_worker(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _loss(config):
    from bratskeras.models.losses import get_loss

    return get_loss(config.loss, **{"from_logits": outputs_logits(config), **config.loss_kwargs})


def _metrics(config):
    from bratskeras.models.metrics import dice_metrics

    return dice_metrics(config.target, from_logits=outputs_logits(config), scheme=config.task)


def _compiled_model(config, run_dir, resume, strategy, state_folder, policy, precision_details, dataset=None):
    """Builds and compiles the TrainingModel in the strategy's scope, writes the run's files.

    `dataset` (run_dir.dataset_record, or None) goes into the run's dataset.json.

    Returns:
        (TrainingModel, the saved state dict of a resumed run or {}).
    """
    from bratskeras.data import pipeline as data
    from bratskeras.training import runtime

    xla = runtime.jit_compile(config.jit_compile)
    chief = runtime.is_chief(strategy)
    # A new run fine-tuning a model starts from its weights (read outside the strategy's scope); a resumed
    # run from its own saved state, unless it stopped before saving one.
    initial = init_from.source_weights(config.init_from) if config.init_from and state_folder is None else None
    with strategy.scope():
        network = build_network(config)
        if initial is not None:
            init_from.assign_weights(network, initial, config.init_from)
        if not runtime.gpus():
            check_memory(network, config, available_memory_bytes())
        device_augmentation = config.augment and config.augment_on == "device"
        model = TrainingModel(
            network, seed=config.seed,
            augmentation=data.AUGMENTATION_SETS[config.augmentation] if device_augmentation else None,
            multi_worker=_is_multi_worker(strategy))
        model.compile(optimizer=make_optimizer(config), loss=_loss(config), metrics=_metrics(config),
                      jit_compile=xla)
        # The optimizer's variables are made here, not inside the first train step: without a
        # tf.distribute strategy Keras 3.15 builds them while tracing the train function, and a
        # tf.function that creates variables on its first call traces that call twice (about 3 s of
        # every new fit's start on 2 cores). A resumed run needs them built to load its state anyway.
        model.optimizer.build(model.trainable_variables)
        saved = {}
        if state_folder is not None:
            saved = resume_state.load_state(state_folder, network, model.optimizer)
            model.optimizer.learning_rate.assign(saved["learning_rate"])
        # Last: a resumed run's config.json (its epoch budget) and dataset.json change only once its state
        # has loaded, i.e. after every check passed.
        if chief:
            run_files.prepare_run_dir(run_dir, config, resume, dataset)
            run_files.atomic_write_text(RunFolder(run_dir).runtime, json.dumps(
                runtime.describe(policy, precision_details, strategy, xla), indent=2))
    return model, saved


def _callbacks(config, run_dir, model, strategy, val_cached, saved, timer):
    """The run's callbacks, in the order they must run (RunFiles saves an epoch before TimeLimit may stop)."""
    import keras

    from bratskeras.training import runtime

    chief = runtime.is_chief(strategy)
    callbacks_state = saved.get("callbacks", {})
    stateful = {}
    if config.reduce_lr_patience:
        stateful["reduce_lr"] = ResumableReduceLROnPlateau(
            monitor="val_loss", factor=config.reduce_lr_factor, patience=config.reduce_lr_patience,
            min_lr=config.reduce_lr_min, initial_state=callbacks_state.get("reduce_lr"))
    if config.early_stopping_patience:
        stateful["early_stopping"] = ResumableEarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience,
            initial_state=callbacks_state.get("early_stopping"))
    validation = WholeVolumeValidation(model.network, validation_input(config, val_cached), _loss(config),
                                       _metrics(config))
    callbacks = [ReplicaLossReport(strategy.num_replicas_in_sync), validation, *stateful.values()]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(RunFolder(run_dir).tensorboard,
                                                     write_graph=False, profile_batch=0))
    callbacks.append(RunFiles(
        run_dir, model.network, run_contract(config, model.network), monitor="val_dice_wt", checkpoint_every=config.checkpoint_every,
        stateful_callbacks=stateful, best_score=saved.get("best_score"), chief=chief))
    # After RunFiles: an epoch is saved before the time limit may stop training.
    if timer is not None:
        callbacks.append(timer)
    return callbacks


def run_contract(config, network):
    """The input contract of the run's models (bratskeras.data.contract), resolved as predict resolves config.json."""
    from bratskeras.config.config_file import RunConfigFile
    from bratskeras.predict.model_setup import config_contract

    return config_contract(RunConfigFile.of(config, "the run's configuration"), network)


def _train(model, config, run_dir, strategy, inputs, finished, steps, callbacks, verbose):
    """keras fit from epoch `finished`; a time limit ends it quietly, running out of memory is a ConfigError."""
    import tensorflow as tf

    if _is_multi_worker(strategy):
        _build_before_fit(model, config)
    try:
        model.fit(inputs, epochs=config.epochs, initial_epoch=finished, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    except TimeLimitReached:
        pass  # the epoch in progress is abandoned; the last saved one stands
    except tf.errors.ResourceExhaustedError:
        raise ConfigError(
            f"out of memory with --batch-size {config.batch_size} and --patch-size "
            f"{','.join(map(str, config.patch_size))}: lower either; {run_dir} keeps the last "
            "complete epoch for --resume"
        ) from None


def _epochs_done(run_dir, finished):
    """Epochs finished in total: the last saved state's, or `finished` if none was saved."""
    state_folder = resume_state.latest_state(run_dir)
    return resume_state.read_state(state_folder)["epoch"] if state_folder else finished


def _build_before_fit(model, config):
    """Builds loss, metrics and optimizer from a batch spec instead of a batch.

    Keras 3.15's fit builds them from the first input batch, which it first
    all-reduces with strategy.reduce("MEAN", ...); under
    MultiWorkerMirroredStrategy that reduce fails on the per-replica batch
    ("Attempt to convert a value (PerReplica...) to a Tensor"). Building from
    zeros of the right shapes first and skipping that step avoids the reduce;
    the model itself is already built.
    """
    target = targets.get_target(config.target)
    patch = (1, *config.patch_size)
    x = np.zeros((*patch, len(config.modalities)), np.float32)
    y = np.zeros((*patch, target.y_channels(config.task)), target.y_dtype)
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=(x, y))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
