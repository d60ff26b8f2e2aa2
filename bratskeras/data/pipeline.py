"""tf.data pipelines over the preprocessing cache, and splits (augmentation: bratskeras.data.augment).

Shapes: x is float32 (B, D, H, W, C) with C the cached modalities in their
cached order; y depends on `target` (bratskeras.core.targets.TARGETS) and
`task`: "classes" uint8 (B, D, H, W, 1), "regions" float32 (B, D, H, W, R)
with R the scheme's regions (3: WT, TC, ET; a task's own, e.g. 4 for gli
with RC, 1 for menrt's GTV), "whole_tumor" float32 (B, D, H, W, 1)
(targets.Target.y_channels). D, H, W are NIfTI axes i, j, k, so the axial
plane is (D, H).

Training draws patches forever (pass `steps_per_epoch` to `fit`): element i
comes from case order[i % n] of a permutation drawn per pass over the cases,
is centred on a random tumor voxel with probability `foreground_fraction`,
and is augmented with stateless ops seeded by (seed, i), so the stream is
reproducible whatever the parallelism. Augmentation runs in the tf.data map
(`augment_on="cpu"`) or is left to the model's train step
(`augment_on="device"`, call `augment_batch` there): both use the same
per-patch function, so the distributions are identical.
"""

from dataclasses import dataclass

import numpy as np

from bratskeras.core import checks, targets
from bratskeras.core.defaults import PATCH_SIZE
from bratskeras.data import preprocessing

# The augmentation lives in bratskeras.data.augment; the pipeline applies it, and
# these names stay importable from here.
from bratskeras.data.augment import AUGMENTATION_SETS, Augmentation, augment_batch, augment_patch  # noqa: F401

# Where augmentation runs: in the tf.data map, or in the model's train step.
AUGMENT_ON = ("cpu", "device")


# Each checked field's rule (bratskeras.core.checks): PipelineConfig checks them, and TrainConfig
# (training.config) checks its fields of the same name with the same rules.
RULES = {
    "patch_size": checks.SIZES,
    "batch_size": checks.integer_from(1),
    "foreground_fraction": checks.between(0, 1),
    "target": checks.one_of(targets.NAMES),
    "augment_on": checks.one_of(AUGMENT_ON),
}


@dataclass(frozen=True)
class PipelineConfig:
    """What the training pipeline yields.

    Attributes:
        patch_size: (d, h, w); a patch as large as the volume gives the whole
            (zero-padded) volume.
        batch_size: patches per batch.
        foreground_fraction: share of patches centred on a tumor voxel (nnU-Net: 1/3).
        target: one of bratskeras.core.targets.TARGETS.
        task: the task (labels.TASKS) whose classes or regions the target
            holds, or None for the classic classes.
        augment: apply the augmentation's transforms (training only).
        augment_on: "cpu" (in the tf.data map) or "device" (the caller applies
            `augment_batch` in its train step; the pipeline yields raw patches).
        augmentation: the Augmentation (bratskeras.data.augment; default the paper's set).
        seed: seeds case order, patch positions and augmentation.
    """

    patch_size: tuple = PATCH_SIZE
    batch_size: int = 2
    foreground_fraction: float = 1 / 3
    target: str = "classes"
    task: str | None = None
    augment: bool = True
    augment_on: str = "cpu"
    augmentation: Augmentation = AUGMENTATION_SETS["paper"]
    seed: int = 0

    def __post_init__(self):
        """Raises ValueError naming the first field that breaks its rule (RULES)."""
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        for name, rule in RULES.items():
            problem = checks.failure(rule, name, getattr(self, name))
            if problem:
                raise ValueError(problem)


# --------------------------------------------------------------------------- splits


def train_val_split(case_ids, val_fraction=0.2, seed=42):
    """(train_ids, val_ids) with scikit-learn's train_test_split (the lightweight paper: 0.2, 42)."""
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(list(case_ids), test_size=val_fraction, random_state=seed)
    return list(train), list(val)


def kfold_splits(case_ids, k=5, seed=42):
    """k (train_ids, val_ids) pairs from a shuffled scikit-learn KFold."""
    from sklearn.model_selection import KFold

    case_ids = list(case_ids)
    folds = KFold(n_splits=k, shuffle=True, random_state=seed).split(case_ids)
    return [([case_ids[i] for i in train], [case_ids[i] for i in val]) for train, val in folds]


# --------------------------------------------------------------------------- patch sampling


def patch_start(shape, patch_size, foreground, rng, foreground_fraction):
    """Chooses a patch's corner in a volume.

    Args:
        shape: volume (D, H, W).
        patch_size: (d, h, w).
        foreground: int (K, 3) tumor voxel coordinates (may be empty).
        rng: numpy Generator.
        foreground_fraction: probability of centring on a tumor voxel.

    Returns:
        (start (3,) ints, centred_on_tumor bool). A start may be negative (or
        the patch overrun the volume) only where the volume is smaller than the
        patch; that part is zero padding.
    """
    shape, patch = np.asarray(shape), np.asarray(patch_size)
    low, high = np.minimum(0, shape - patch), np.maximum(0, shape - patch)
    on_tumor = len(foreground) > 0 and rng.random() < foreground_fraction
    if on_tumor:
        start = foreground[rng.integers(len(foreground))] - patch // 2
        return np.clip(start, low, high), True
    if (shape < patch).any():
        # Centre the padding on small axes; random positions elsewhere.
        random_start = rng.integers(low, high + 1)
        return np.where(shape < patch, (shape - patch) // 2, random_start), False
    return rng.integers(low, high + 1), False


def read_patch(array, start, patch_size):
    """Copies array[start:start + size] (D, H, W, ...) out of a memory map, zero-padding outside."""
    geometry = {"original_shape": array.shape[:3], "start": tuple(int(s) for s in start),
                "size": tuple(patch_size)}
    return preprocessing.crop(array, geometry)


def round_order(seed, round_index, n):
    """The permutation (n,) of case positions for pass `round_index` over `n` cases: a pure function of its arguments."""
    return np.random.default_rng([seed, round_index]).permutation(n)


class _TrainSampler:
    """numpy side of the training pipeline: element index -> (image, classes).

    Called from tf.data's parallel map threads, so it keeps no state that a
    call changes: each call derives its pass's case order from (seed, pass)
    (a shared "latest order" dict once raced at a pass boundary: KeyError).
    """

    def __init__(self, cached_cases, config):
        self.arrays = [case.load() for case in cached_cases]
        self.config = config

    def case_index(self, index):
        """The case of element `index`: position index % n of pass index // n's shuffled order."""
        n = len(self.arrays)
        rounds, position = divmod(index, n)
        # Drawing an n-permutation costs microseconds beside reading a patch: no cache to share.
        return round_order(self.config.seed, rounds, n)[position]

    def __call__(self, index):
        index = int(index)
        image, seg, fg = self.arrays[self.case_index(index)]
        rng = np.random.default_rng([self.config.seed, index, 1])
        start, _ = patch_start(image.shape[:3], self.config.patch_size, fg, rng,
                               self.config.foreground_fraction)
        return read_patch(image, start, self.config.patch_size), read_patch(seg, start, self.config.patch_size)


# --------------------------------------------------------------------------- datasets


def train_dataset(cached_cases, config=PipelineConfig(), first_index=0, pipeline=(0, 1),
                  global_batch_size=None):
    """Infinite, seeded stream of training batches (x, y) from cached cases.

    Args:
        cached_cases: list of cache.CachedCase, all with labels.
        config: PipelineConfig; its batch_size is this pipeline's batch.
        first_index: index of the first sample of the stream (a resumed run
            starts at finished_steps * global batch).
        pipeline: (id, count) when tf.distribute runs `count` input pipelines:
            global step s takes samples [s*G, (s+1)*G) of the stream, pipeline
            p the slice [s*G + p*G/count, s*G + (p+1)*G/count), batched by
            config.batch_size (the per-replica batch).
        global_batch_size: G (default: batch_size * count).

    Returns:
        tf.data.Dataset of (x float32 (B, d, h, w, C), y per config.target),
        batched, prefetched. With augment_on="device" the batches are not
        augmented: call `augment_batch(x, y, seed, config.augmentation)` in the
        train step.
    """
    import tensorflow as tf

    if not cached_cases:
        raise ValueError("train_dataset needs at least one cached case")
    unlabelled = [case.id for case in cached_cases if not case.has_seg]
    if unlabelled:
        raise ValueError(f"training cases without labels: {', '.join(unlabelled)}")
    sampler = _TrainSampler(cached_cases, config)
    channels = len(cached_cases[0].meta["modalities"])
    cache_dtype = tf.as_dtype(cached_cases[0].meta["settings"]["dtype"])
    patch = config.patch_size
    augment_here = config.augment and config.augment_on == "cpu"

    def element(index):
        image, seg = tf.numpy_function(sampler, [index], (cache_dtype, tf.uint8), stateful=False)
        image = tf.ensure_shape(tf.cast(image, tf.float32), patch + (channels,))
        seg = tf.ensure_shape(seg, patch)[..., None]
        if augment_here:
            seed = tf.stack([tf.constant(config.seed, tf.int64), index])
            image, seg = augment_patch(image, seg, seed, config.augmentation)
        return image, targets.get_target(config.target).encode(seg, config.task)

    pipeline_id, pipelines = pipeline
    global_batch = global_batch_size or config.batch_size * pipelines
    # One pipeline may feed several local replicas (MirroredStrategy), each
    # taking consecutive batches of config.batch_size from it.
    per_step = global_batch // pipelines

    def sample_index(k):
        # k-th sample of this pipeline -> index in the global seeded stream.
        step, slot = k // per_step, k % per_step
        return first_index + step * global_batch + pipeline_id * per_step + slot

    dataset = tf.data.Dataset.counter().map(sample_index).map(
        element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def validation_patch_start(shape, patch_size, foreground):
    """Deterministic corner: the patch centred on the tumor's bounding box (the volume if none)."""
    shape, patch = np.asarray(shape), np.asarray(patch_size)
    centre = (foreground.min(0) + foreground.max(0)) // 2 if len(foreground) else shape // 2
    return np.clip(centre - patch // 2, np.minimum(0, shape - patch), np.maximum(0, shape - patch))


def validation_dataset(cached_cases, patch_size=None, target="classes", batch_size=1, task=None):
    """Deterministic, unaugmented (x, y) per case, in the order given.

    Args:
        cached_cases: list of cache.CachedCase with labels.
        patch_size: None for whole cached volumes (batch_size must be 1 unless
            all volumes share a shape), or (d, h, w) for one patch per case
            centred on its tumor.
        target: one of bratskeras.core.targets.TARGETS.
        batch_size: cases per batch.
        task: the run's task (labels.TASKS) whose classes or regions y holds, or None (classic).

    Returns:
        finite tf.data.Dataset of (x float32 (B, d, h, w, C), y per `target`).
    """
    import tensorflow as tf

    if target not in targets.TARGETS:
        raise ValueError(f"target must be one of {targets.NAMES}, got {target!r}")
    unlabelled = [case.id for case in cached_cases if not case.has_seg]
    if unlabelled:
        raise ValueError(f"validation cases without labels: {', '.join(unlabelled)}")
    channels = len(cached_cases[0].meta["modalities"])

    def load(position):
        image, seg, fg = cached_cases[int(position)].load()
        if patch_size is None:
            return np.asarray(image, dtype=np.float32), np.asarray(seg)
        start = validation_patch_start(image.shape[:3], patch_size, fg)
        return read_patch(image, start, patch_size).astype(np.float32), read_patch(seg, start, patch_size)

    spatial = tuple(patch_size) if patch_size is not None else (None, None, None)

    def element(position):
        image, seg = tf.numpy_function(load, [position], (tf.float32, tf.uint8), stateful=False)
        image = tf.ensure_shape(image, spatial + (channels,))
        seg = tf.ensure_shape(seg, spatial)[..., None]
        return image, targets.get_target(target).encode(seg, task)

    dataset = tf.data.Dataset.range(len(cached_cases)).map(element, num_parallel_calls=2, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
