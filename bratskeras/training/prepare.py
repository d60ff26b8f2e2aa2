"""Preparing a run's data: inspect and split the dataset, cache the cases, build the tf.data inputs.

Data flow: a dataset folder -> its clean labelled cases (`labelled_cases`)
-> train/validation ids (`split_cases`) -> preprocessed cached cases
(`cache_cases`) -> the training stream and the whole-volume validation
dataset (`train_input`, `validation_input`) that `fit` hands to Keras.
"""

import os

from bratskeras.core import labels
from bratskeras.core.errors import ConfigError, DataError


def split_cases(case_ids, config):
    """(train ids, validation ids): 80/20 with a fixed seed, or fold `fold` of `folds`."""
    from bratskeras.data import pipeline as data

    case_ids = sorted(case_ids)
    if len(case_ids) < 2:
        raise DataError(f"training needs at least 2 labelled cases, found {len(case_ids)}")
    if config.folds:
        if config.folds > len(case_ids):
            raise ConfigError(f"--folds {config.folds} is more than the {len(case_ids)} cases")
        return data.kfold_splits(case_ids, config.folds, config.split_seed)[config.fold]
    return data.train_val_split(case_ids, config.val_fraction, config.split_seed)


def case_sizes(data_dir, task=None):
    """{case id: bytes of its files} of the labelled cases under `data_dir`: what a run remembers of its data.

    Only the folder is listed (layouts.discover) and its files' sizes read,
    so `fit --resume` can refuse other data before inspecting or caching it.
    A file that cannot be read counts -1 (inspection names it later).

    Raises:
        DataError: an empty or unrecognised folder (layouts.discover).
    """
    from bratskeras.data import layouts

    dataset = layouts.discover(data_dir, task=task)
    return {case.id: sum(_size(path) for path in case.source_files()) for case in dataset.cases
            if case.seg is not None}


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def labelled_cases(data_dir, skip_bad_cases=False, cache_dir=None, task=None):
    """Inspects a dataset and returns (its clean labelled cases, skipped problem lines).

    With `cache_dir`, unchanged cases reuse their remembered inspection report;
    `task` is the run's TrainConfig.task (the cases' scheme when it is not classic).

    Raises:
        DataError: a case has a problem (unless skip_bad_cases), or no case
            has labels.
    """
    from bratskeras.data import inspection

    dataset, report = inspection.inspect_dataset(data_dir, cache_dir=cache_dir, task=task)
    labels.require_trainable(dataset.label_scheme, data_dir, task)
    cases, skipped = inspection.require_clean(dataset, report, skip_bad=skip_bad_cases)
    labelled = [case for case in cases if case.seg is not None]
    if not labelled:
        raise DataError(f"{data_dir}: no case has a label file, nothing to train or score on")
    return labelled, skipped


def cache_cases(cases, config, cache_dir, progress=None):
    """Preprocesses `cases` into the cache with the config's modalities and crop.

    `progress(done, total)` is called as cases are ready (cache.cache_dataset).
    """
    from bratskeras.data import cache

    return cache.cache_dataset(cases, cache_dir, config.modalities, config.preprocess_settings(), progress=progress)


def load_cases(data_dir, config, cache_dir, skip_bad_cases, log=None):
    """Inspects, splits and caches the dataset, saying so on `log` (report.FitLog) when given.

    Returns:
        (train CachedCases, validation CachedCases, skipped problem lines).
    """
    from bratskeras.training import report

    log = log or report.FitLog(quiet=True)
    labelled, skipped = labelled_cases(data_dir, skip_bad_cases, cache_dir, config.task)
    train_ids, val_ids = split_cases([case.id for case in labelled], config)
    log.line(report.describe_split(config, len(train_ids), len(val_ids)))
    by_id = {case.id: case for case in labelled}
    log.line(f"preprocessing/caching {len(train_ids) + len(val_ids)} cases (cases already cached are reused)")
    cached = cache_cases([by_id[i] for i in train_ids + val_ids], config, cache_dir, log.progress("cached"))
    return cached[:len(train_ids)], cached[len(train_ids):], skipped


def steps_per_epoch(config, n_train):
    """Batches per epoch: the config's, or one pass over the training cases."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    return max(1, -(-n_train // config.batch_size))


def train_input(config, cached, strategy, first_step):
    """The training tf.data input, split across workers/replicas by tf.distribute.

    Each input pipeline yields per-replica batches of disjoint sample indices,
    so global step s always sees samples [s*B, (s+1)*B) of the seeded stream,
    whatever the number of devices: distributed and single-device runs see the
    same data.
    """
    from bratskeras.data import pipeline as data

    pipeline_config = config.pipeline_config()
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


def validation_input(config, cached):
    """Whole cached volumes, one per batch, unaugmented, with the config's target."""
    from bratskeras.data import pipeline as data

    return data.validation_dataset(cached, patch_size=None, target=config.target, batch_size=1, task=config.task)
