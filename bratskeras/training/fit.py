"""`fit`: one function from a TrainConfig and a dataset folder to a trained run.

Data flow: discover + inspect cases -> split -> preprocess into the cache ->
tf.data patches -> model compiled under the chosen precision and strategy ->
keras fit with the run's callbacks -> held-out Dice of best.keras.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from bratskeras import labels
from bratskeras.errors import ConfigError, DataError
from bratskeras.training import run_dir as run_files
from bratskeras.training.callbacks import (
    ResumableEarlyStopping,
    ResumableReduceLROnPlateau,
    RunFiles,
    TimeLimit,
    TimeLimitReached,
)
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
        skipped: problems of cases left out with `skip_bad_cases`.
        time_limit_reached: training stopped at the time limit before
            `config.epochs`; `--resume` continues it.
    """

    run_dir: str
    epochs: int
    heldout_dice: dict
    skipped: list
    time_limit_reached: bool = False


def split_cases(case_ids, config):
    """(train ids, validation ids): 80/20 with a fixed seed, or fold `fold` of `folds`."""
    from bratskeras import data

    case_ids = sorted(case_ids)
    if len(case_ids) < 2:
        raise DataError(f"training needs at least 2 labelled cases, found {len(case_ids)}")
    if config.folds:
        if config.folds > len(case_ids):
            raise ConfigError(f"--folds {config.folds} is more than the {len(case_ids)} cases")
        return data.kfold_splits(case_ids, config.folds, config.split_seed)[config.fold]
    return data.train_val_split(case_ids, config.val_fraction, config.split_seed)


def labelled_cases(data_dir, skip_bad_cases=False, cache_dir=None, task=None):
    """Inspects a dataset and returns (its clean labelled cases, skipped problem lines).

    With `cache_dir`, unchanged cases reuse their remembered inspection report;
    `task` is the run's TrainConfig.task (the cases' scheme when it is not classic).

    Raises:
        DataError: a case has a problem (unless skip_bad_cases), or no case
            has labels.
    """
    from bratskeras import inspection

    dataset, report = inspection.inspect_dataset(data_dir, cache_dir=cache_dir, task=task)
    labels.require_trainable(dataset.label_scheme, data_dir, task)
    cases, skipped = inspection.require_clean(dataset, report, skip_bad=skip_bad_cases)
    labelled = [case for case in cases if case.seg is not None]
    if not labelled:
        raise DataError(f"{data_dir}: no case has a label file, nothing to train or score on")
    return labelled, skipped


def cache_cases(cases, config, cache_dir):
    """Preprocesses `cases` into the cache with the config's modalities and crop."""
    from bratskeras import cache, preprocessing

    settings = preprocessing.PreprocessSettings(crop=config.crop, crop_size=config.crop_size)
    return cache.cache_dataset(cases, cache_dir, config.modalities, settings)


def load_cases(data_dir, config, cache_dir, skip_bad_cases):
    """Inspects, splits and caches the dataset.

    Returns:
        (train CachedCases, validation CachedCases, skipped problem lines).
    """
    labelled, skipped = labelled_cases(data_dir, skip_bad_cases, cache_dir, config.task)
    train_ids, val_ids = split_cases([case.id for case in labelled], config)
    by_id = {case.id: case for case in labelled}
    cached = cache_cases([by_id[i] for i in train_ids + val_ids], config, cache_dir)
    return cached[:len(train_ids)], cached[len(train_ids):], skipped


def build_network(config):
    """The registry model with channels and outputs matching the config's target."""
    from bratskeras.models import build_model, model_spec

    channels = len(config.modalities)
    outputs = labels.target_channels(config.target, config.task)
    overrides = dict(config.model_overrides)
    if model_spec(config.model)["builder"] == "flair_unet":
        if config.target != "whole_tumor":
            raise ConfigError(f"{config.model} predicts whole tumor only: use target whole_tumor")
        shape = (None, None, None, channels)
    else:
        overrides.setdefault("num_classes", outputs)
        shape = (None, None, None, channels)
    return build_model(config.model, input_shape=shape, **overrides)


def outputs_logits(config):
    """True when the network emits logits (the unet3d family), False for sigmoid (flair-unet)."""
    from bratskeras.models import model_spec

    return model_spec(config.model)["builder"] != "flair_unet"


def make_optimizer(config):
    import keras

    clip = {"global_clipnorm": config.clipnorm} if config.clipnorm else {}
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay, **clip)
    return keras.optimizers.Adam(config.learning_rate, **clip)


def check_patch_size(config, cached_cases):
    """Patches must fit the model's poolings and the cached volumes (padded otherwise)."""
    from bratskeras.models.registry import pooling_multiple

    multiple = pooling_multiple(config.model, **config.model_overrides)
    odd = [s for s in config.patch_size if s % multiple]
    if odd:
        raise ConfigError(
            f"--patch-size {','.join(map(str, config.patch_size))} is incompatible with "
            f"{config.model}: each size must be a multiple of {multiple} (2^poolings)"
        )


def training_memory_bytes(network, config):
    """Rough bytes a training step needs: every layer's output for the batch,
    kept for the backward pass and matched by its gradient (x2), at 4 bytes."""
    import keras

    probe = keras.models.clone_model(network, input_tensors=keras.Input(
        shape=(*config.patch_size, len(config.modalities))))
    elements = 0
    for layer in probe.layers:
        shape = layer.output.shape
        elements += int(np.prod([s for s in shape[1:] if s is not None]))
    return elements * config.batch_size * 4 * 2


def available_memory_bytes():
    """Physical memory of this host (the limit for CPU training)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(network, config, limit_bytes):
    """Refuses a batch that cannot fit before any time is spent on it."""
    needed = training_memory_bytes(network, config)
    if needed > limit_bytes:
        raise ConfigError(
            f"--batch-size {config.batch_size} with --patch-size "
            f"{','.join(map(str, config.patch_size))} needs about {needed / 2**30:.1f} GiB for "
            f"training, more than the {limit_bytes / 2**30:.1f} GiB available: lower either"
        )


def _steps_per_epoch(config, n_train):
    if config.steps_per_epoch:
        return config.steps_per_epoch
    return max(1, -(-n_train // config.batch_size))


def _train_input(config, cached, strategy, first_step):
    """The training tf.data input, split across workers/replicas by tf.distribute.

    Each input pipeline yields per-replica batches of disjoint sample indices,
    so global step s always sees samples [s*B, (s+1)*B) of the seeded stream,
    whatever the number of devices: distributed and single-device runs see the
    same data.
    """
    from bratskeras import data

    pipeline_config = data.PipelineConfig(
        patch_size=config.patch_size, batch_size=config.batch_size,
        foreground_fraction=config.foreground_fraction, target=config.target,
        augment=config.augment, augment_on=config.augment_on, seed=config.seed,
        augmentation=data.AUGMENTATION_SETS[config.augmentation],
    )
    first_index = first_step * config.batch_size
    if strategy.num_replicas_in_sync == 1:
        return data.train_dataset(cached, pipeline_config, first_index=first_index)

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(config.batch_size)
        import dataclasses

        local = dataclasses.replace(pipeline_config, batch_size=per_replica)
        return data.train_dataset(
            cached, local, first_index=first_index,
            pipeline=(context.input_pipeline_id, context.num_input_pipelines),
            global_batch_size=config.batch_size,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def _validation_input(config, cached):
    from bratskeras import data

    return data.validation_dataset(cached, patch_size=None, target=config.target, batch_size=1)


def fit(config, data_dir, run_dir, resume=False, skip_bad_cases=False, cache_dir=None, verbose=1,
        time_limit=None):
    """Trains a model as `config` says and writes the run directory.

    Args:
        config: TrainConfig.
        data_dir: a BraTS dataset folder of any supported layout.
        run_dir: the run directory (created; must not hold a run unless resume).
        resume: continue the run in run_dir from its last complete state.
        skip_bad_cases: leave out cases with problems instead of stopping.
        cache_dir: preprocessing cache (default: <data_dir>/.bratskeras_cache).
        verbose: Keras progress bar setting.
        time_limit: wall-clock seconds for this call, data preparation
            included, or None. Training stops after the last epoch that is
            expected to end within it (`callbacks.TimeLimit`); the run stays
            resumable. A time limit is not part of the configuration: a
            resumed run gets a new one.

    Returns:
        FitResult.

    Raises:
        DataError, ConfigError, OutputExistsError: bad data, flags or run dir;
        ConfigError also when the limit ends before the first epoch does.
    """
    timer = TimeLimit(time_limit) if time_limit is not None else None  # counts data preparation too
    import keras
    import tensorflow as tf

    from bratskeras import data
    from bratskeras.losses import get_loss
    from bratskeras.metrics import dice_metrics
    from bratskeras.training import runtime

    runtime.check_precision(config.precision)
    cache_dir = cache_dir or os.path.join(data_dir, ".bratskeras_cache")
    train_cached, val_cached, skipped = load_cases(data_dir, config, cache_dir, skip_bad_cases)
    check_patch_size(config, train_cached)
    state_folder = None
    if resume:
        run_files.prepare_run_dir(run_dir, config, resume=True)
        state_folder = run_files.latest_state(run_dir)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)

    policy, precision_details = runtime.choose_precision(config.precision)
    keras.mixed_precision.set_global_policy(policy)
    strategy = runtime.make_strategy(config.strategy)
    if timer is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Each worker's clock would stop it at a different step, and the others would wait forever.
        raise ConfigError("--time-limit cannot be used with --strategy multi-worker")
    xla = runtime.jit_compile(config.jit_compile)
    chief = runtime.is_chief(strategy)

    logits = outputs_logits(config)
    with strategy.scope():
        network = build_network(config)
        if not runtime.gpus():
            check_memory(network, config, available_memory_bytes())
        device_augmentation = config.augment and config.augment_on == "device"
        model = TrainingModel(
            network, seed=config.seed,
            augmentation=data.AUGMENTATION_SETS[config.augmentation] if device_augmentation else None,
            multi_worker=isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy))
        loss_kwargs = {"from_logits": logits, **config.loss_kwargs}
        model.compile(
            optimizer=make_optimizer(config),
            loss=get_loss(config.loss, **loss_kwargs),
            metrics=dice_metrics(config.target, from_logits=logits, scheme=config.task),
            jit_compile=xla,
        )
        if not resume and chief:
            run_files.prepare_run_dir(run_dir, config, resume=False)
        if chief:
            run_files.atomic_write_text(os.path.join(run_dir, "runtime.json"), json.dumps(
                runtime.describe(policy, precision_details, strategy, xla), indent=2))
        saved = {}
        if state_folder is not None:
            model.optimizer.build(model.trainable_variables)
            saved = run_files.load_state(state_folder, network, model.optimizer)
            model.optimizer.learning_rate.assign(saved["learning_rate"])

    finished = int(saved.get("epoch", 0))
    if saved.get("stopped") or finished >= config.epochs:
        return FitResult(run_dir, finished, heldout_dice(run_dir, val_cached, config), skipped)

    steps = _steps_per_epoch(config, len(train_cached))
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
    validation = WholeVolumeValidation(
        network, _validation_input(config, val_cached),
        get_loss(config.loss, **loss_kwargs), dice_metrics(config.target, from_logits=logits, scheme=config.task))
    callbacks = [ReplicaLossReport(strategy.num_replicas_in_sync), validation, *stateful.values()]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"),
                                                     write_graph=False, profile_batch=0))
    callbacks.append(RunFiles(
        run_dir, network, monitor="val_dice_wt", checkpoint_every=config.checkpoint_every,
        stateful_callbacks=stateful, best_score=saved.get("best_score"), chief=chief))
    # After RunFiles: an epoch is saved before the time limit may stop training.
    if timer is not None:
        callbacks.append(timer)

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _build_before_fit(model, config)
    try:
        model.fit(
            _train_input(config, train_cached, strategy, first_step=finished * steps),
            epochs=config.epochs, initial_epoch=finished, steps_per_epoch=steps,
            callbacks=callbacks, verbose=verbose, shuffle=False,
        )
    except TimeLimitReached:
        pass  # the epoch in progress is abandoned; the last saved one stands
    except tf.errors.ResourceExhaustedError:
        raise ConfigError(
            f"out of memory with --batch-size {config.batch_size} and --patch-size "
            f"{','.join(map(str, config.patch_size))}: lower either; {run_dir} keeps the last "
            "complete epoch for --resume"
        ) from None
    state_folder = run_files.latest_state(run_dir)
    epochs_done = json.load(open(os.path.join(state_folder, "state.json")))["epoch"] if state_folder else finished
    if epochs_done == 0 and timer is not None and timer.reached:
        raise ConfigError(f"--time-limit {time_limit:g}s ended before the first epoch finished; {run_dir} "
                          "holds no trained model: give more time or fewer --steps-per-epoch")
    stopped_early = timer is not None and timer.reached and epochs_done < config.epochs
    return FitResult(run_dir, epochs_done, heldout_dice(run_dir, val_cached, config), skipped,
                     time_limit_reached=stopped_early)


def _build_before_fit(model, config):
    """Builds loss, metrics and optimizer from a batch spec instead of a batch.

    Keras 3.15's fit builds them from the first input batch, which it first
    all-reduces with strategy.reduce("MEAN", ...); under
    MultiWorkerMirroredStrategy that reduce fails on the per-replica batch
    ("Attempt to convert a value (PerReplica...) to a Tensor"). Building from
    zeros of the right shapes first and skipping that step avoids the reduce;
    the model itself is already built.
    """
    from bratskeras.labels import target_channels

    patch = (1, *config.patch_size)
    x = np.zeros((*patch, len(config.modalities)), np.float32)
    y_channels = 1 if config.target == "classes" else target_channels(config.target)
    y = np.zeros((*patch, y_channels), np.uint8 if config.target == "classes" else np.float32)
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=(x, y))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def heldout_dice(run_dir, cached_cases, config):
    """Mean per-case Dice per region of best.keras on cached (preprocessed) volumes.

    Uses the same sliding-window inference as `bratskeras predict`.

    Returns:
        {"WT": ..., "TC": ..., "ET": ...} ({"WT": ...} for the whole-tumor target).
    """
    from bratskeras import inference, metrics

    if not os.path.exists(os.path.join(run_dir, "best.keras")) or not cached_cases:
        return {}
    network, setup = inference.load_predictor(run_dir)
    regions = ("WT",) if config.target == "whole_tumor" else labels.REGIONS
    scores = {region: [] for region in regions}
    for case in cached_cases:
        image, seg, _ = case.load()
        windows = inference.effective_settings(setup, inference.WindowSettings(), image.shape[:3])
        probabilities = inference.sliding_window_predict(network, np.asarray(image, np.float32), windows)
        # A whole-tumor mask is a bool map, which structure_mask("wt") reads as classes 0/1.
        predicted = inference.probabilities_to_classes(probabilities, config.target)
        if config.task:  # the task's classes, scored as the classic regions they make up
            predicted, seg = labels.to_classic(predicted, config.task), labels.to_classic(seg, config.task)
        for region in regions:
            scores[region].append(metrics.dice(metrics.structure_mask(predicted, region.lower()),
                                               metrics.structure_mask(seg, region.lower())))
    return {region: float(np.mean(values)) for region, values in scores.items()}


def evaluate_heldout(run_dir, data_dir, config, cache_dir=None):
    """Mean Dice per region of a run's best.keras on another labelled dataset."""
    cache_dir = cache_dir or os.path.join(data_dir, ".bratskeras_cache")
    cases, _ = labelled_cases(data_dir, cache_dir=cache_dir, task=config.task)
    cached = cache_cases(cases, config, cache_dir)
    return heldout_dice(run_dir, cached, config)

