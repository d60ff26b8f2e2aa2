"""Whole-case inference: sliding windows with Gaussian weighting, mirroring TTA, NIfTI out.

Data flow of one case (nnU-Net's order):

    read_case -> preprocess (the training crop and z-score) -> sliding windows
    -> probabilities (d, h, w, K) -> classes -> postprocess -> uncrop to the
    source grid -> labels of the chosen scheme -> uint8 NIfTI with the source
    affine and header

Arrays are channels last: images (D, H, W, C), probabilities (D, H, W, K);
D, H, W are the NIfTI voxel axes i, j, k.

Model outputs (`ModelSetup.target`, a row of bratskeras.targets.TARGETS):
    "classes"      4 logits (background, NCR, ED, ET): softmax, argmax
    "regions"      3 logits (WT, TC, ET): sigmoid, > 0.5, composed into classes
    "whole_tumor"  1 sigmoid probability (flair-unet): > 0.5, written as ED
                   (label 2, targets.WHOLE_TUMOR_CLASS): only WT is defined for it

Probabilities, not logits, are what windows and mirrored passes average, so
TTA means the mean of probabilities (nnU-Net averages logits; for softmax
outputs the argmax rarely differs).
"""

import collections
import functools
import json
import os
import time
import weakref
from dataclasses import dataclass, field, replace

import numpy as np

from bratskeras import io, labels, outputs, postprocessing, targets
from bratskeras.errors import BratsKerasError, ModelError, OutputExistsError, user_message
from bratskeras.preprocessing import FLAIR_PAPER_CROP, PreprocessSettings, preprocess, uncrop

# predict's default tiling is chosen for accuracy, then made fast. Instance
# norm takes its statistics over each window, so the tiling changes the
# result: on held-out phantoms, windows of at least 160 voxels per axis with
# overlap 0.5 and Gaussian weighting (nnU-Net's tiling) scored best for models
# trained on 48^3, 64^3 and 128^3 patches (docs/benchmarks.md, "Tiling"), so
# the default window is the training patch size, raised to 160 per axis,
# with overlap 0.5. Faster tilings are explicit flags (e.g. --window
# 240,80,240 --overlap 0 for 3 slabs, ~1.8x faster and less accurate).
MIN_DEFAULT_WINDOW = 160
DEFAULT_OVERLAP = 0.5
# The lightweight2020 preset's patch: the default for a bare .keras without its run's config.
DEFAULT_PATCH_SIZE = (128, 128, 128)
# Compiled forward passes kept per network, one per window shape (LRU).
MAX_TRACED_SHAPES = 8
# Bare .keras files carry no config: inputs and outputs decide (module `load_predictor`).
_MODALITIES_BY_CHANNELS = {4: ("flair", "t1", "t1ce", "t2"), 1: ("flair",)}
PROBABILITIES_DIR = "probabilities"


@dataclass(frozen=True)
class WindowSettings:
    """How a volume is tiled and averaged.

    Attributes:
        window: (d, h, w) window size, or None for the model's default
            (`ModelSetup.window`; `effective_settings` resolves it). Axes of
            the volume smaller than the window are zero-padded (z-scored
            background is 0) and cropped back.
        overlap: the least fraction of the window shared by neighbouring
            windows, in [0, 1). nnU-Net uses 0.5; 0 tiles with the fewest
            windows, which then overlap only as far as covering the volume needs.
        batch_size: windows per network call.
        sigma_scale: Gaussian sigma as a fraction of the window (nnU-Net,
            MONAI: 1/8); 0 weights every voxel of a window equally.
        mirror: test-time augmentation: average the 8 flips over the 3
            spatial axes (each flipped back before averaging).
    """

    window: tuple | None = None
    overlap: float = DEFAULT_OVERLAP
    batch_size: int = 1
    sigma_scale: float = 0.125
    mirror: bool = False

    def __post_init__(self):
        window = None if self.window is None else tuple(int(s) for s in self.window)
        if window is not None and (len(window) != 3 or min(window) < 1):
            raise ValueError(f"window must be three positive sizes, got {self.window}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.sigma_scale < 0:
            raise ValueError(f"sigma_scale must be >= 0, got {self.sigma_scale}")
        object.__setattr__(self, "window", window)


# --------------------------------------------------------------------------- windows


@functools.lru_cache(maxsize=8)
def gaussian_importance(window, sigma_scale=0.125):
    """Importance map of one window: a Gaussian centred on it, maximum 1.

    nnU-Net's map: sigma = sigma_scale * window per axis. Values are clipped
    below at the smallest positive value so that a voxel covered only by
    window borders still gets weight (no division by zero).

    Args:
        window: (d, h, w).
        sigma_scale: fraction of the window; 0 gives all ones.

    Returns:
        float32 (d, h, w), max 1, min > 0, symmetric under each axis flip;
        read-only, as it is cached per (window, sigma_scale).
    """
    window = tuple(int(w) for w in window)
    if sigma_scale == 0:
        weights = np.ones(window, dtype=np.float32)
        weights.flags.writeable = False
        return weights
    weights = np.ones(window, dtype=np.float64)
    for axis, size in enumerate(window):
        coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
        profile = np.exp(-0.5 * (coords / (sigma_scale * size)) ** 2)
        shape = [1, 1, 1]
        shape[axis] = size
        weights = weights * profile.reshape(shape)
    weights /= weights.max()
    positive = weights[weights > 0]
    weights = np.maximum(weights, positive.min()).astype(np.float32)
    weights.flags.writeable = False
    return weights


def window_starts(size, window, overlap):
    """Start indices along one axis: evenly spread, first 0, last size - window.

    nnU-Net's rule: the fewest windows whose step is at most
    window * (1 - overlap). `size` must be >= `window` (pad first).
    """
    if size <= window:
        return [0]
    step = window * (1 - overlap)
    count = int(np.ceil((size - window) / step)) + 1
    spacing = (size - window) / (count - 1)
    return [int(round(spacing * i)) for i in range(count)]


def window_grid(shape, window, overlap):
    """Every window's (d0, h0, w0) start over a volume of `shape` (>= window)."""
    axes = [window_starts(n, w, overlap) for n, w in zip(shape, window)]
    return [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]


def balanced_window(shape, window, overlap, multiple=1):
    """The smallest window that tiles `shape` with as few windows as `window` does.

    Per axis, nnU-Net's rule (`window_starts`) fixes the number of windows n
    for the requested size; then the window shrinks to the least size, a
    multiple of `multiple` (the model's 2**poolings, so it pads nothing),
    whose n windows still cover the axis with at least `overlap`. A
    155-voxel axis with a 56-voxel window and overlap 0 becomes 3 windows of
    52 (156 voxels computed, as a whole-volume pass pads to) instead of
    3 x 56 = 168.

    Args:
        shape: (D, H, W) of the volume.
        window: requested (d, h, w), each <= the volume's size on its axis.
        overlap: as in WindowSettings.
        multiple: int, window sizes are rounded up to it where that stays
            within the requested size.

    Returns:
        tuple (d, h, w), each <= the requested size.
    """
    balanced = []
    for size, requested in zip(shape, window):
        size, requested = int(size), int(requested)
        if requested >= size:
            balanced.append(size)
            continue
        count = len(window_starts(size, requested, overlap))
        least = int(np.ceil(size / (count - (count - 1) * overlap)))
        rounded = -(-least // multiple) * multiple
        balanced.append(min(requested, rounded if rounded <= requested else least))
    return tuple(balanced)


# Network -> {window batch shape: compiled forward}; weak, so a dropped model frees its graphs.
_COMPILED = weakref.WeakKeyDictionary()


def compiled_forward(network, shape, keep=MAX_TRACED_SHAPES):
    """`network(x, training=False)` as a tf.function traced for exactly `shape`.

    Keras' predict_on_batch relaxes its trace to unknown spatial sizes once it
    has seen two shapes (as every case's crop differs, from the second case
    on), and TensorFlow runs that dynamic-shape graph 20-40% slower on CPU
    (lightweight-unet, 140 x 172 x 52 slab: 0.65 s vs 0.47 s). A trace
    costs ~0.2 s, so every distinct window shape gets its own static graph.

    Args:
        network: keras.Model.
        shape: the input batch shape (B, d, h, w, C).
        keep: how many shapes' graphs to keep per network (least recently
            used dropped first); None keeps all (a fixed validation set).

    Returns:
        a tf.function, tensor or array (B, d, h, w, C) -> tensor (B, d, h, w, K).
    """
    import tensorflow as tf

    shape = tuple(int(n) for n in shape)
    cache = _COMPILED.setdefault(network, collections.OrderedDict())
    if shape in cache:
        cache.move_to_end(shape)
        return cache[shape]
    # A weak reference: the graph must not keep its own cache key alive.
    model = weakref.ref(network)
    function = tf.function(lambda x: model()(x, training=False), reduce_retracing=False)
    cache[shape] = function
    while keep is not None and len(cache) > keep:
        cache.popitem(last=False)
    return function


def _network_function(network):
    """A function numpy (B, d, h, w, C) -> numpy (B, d, h, w, K) float32."""
    import keras

    if isinstance(network, keras.Model):
        return lambda batch: np.asarray(compiled_forward(network, batch.shape)(batch), dtype=np.float32)
    return lambda batch: np.asarray(network(batch), dtype=np.float32)


_FLIPS = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]


def _predict_batch(function, batch, mirror):
    """Network output of (B, d, h, w, C); with `mirror`, the mean over the 8 flips."""
    if not mirror:
        return function(batch)
    total = None
    for axes in _FLIPS:
        flipped = np.flip(batch, axis=axes) if axes else batch
        output = function(np.ascontiguousarray(flipped))
        output = np.flip(output, axis=axes) if axes else output
        total = output if total is None else total + output
    return total / len(_FLIPS)


def sliding_window_predict(network, image, settings=WindowSettings(), progress=None):
    """Runs `network` over a whole volume in Gaussian-weighted windows.

    Windows are cut on the host, run `settings.batch_size` at a time, and
    their outputs, each scaled by its share of every voxel's weighted mean,
    summed into one volume-sized float32 array on the host (240 x 240 x 155
    x 4: 143 MB), so device memory is that of one batch of windows. Voxels
    that only one window reaches are copied, not weighted. A volume no larger
    than the window on every axis is one pass.

    Args:
        network: a keras.Model or a callable, (B, d, h, w, C) -> (B, d, h, w, K),
            same spatial size as its input (probabilities, for averaging).
        image: (D, H, W, C) array.
        settings: WindowSettings.
        progress: optional callable(done, total) called after each batch of windows.

    Returns:
        float32 (D, H, W, K): the weighted mean of the windows' outputs.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4:
        raise ValueError(f"image must be (D, H, W, C), got shape {image.shape}")
    shape = image.shape[:3]
    window = settings.window if settings.window is not None else shape
    padded_shape = tuple(max(n, w) for n, w in zip(shape, window))
    if padded_shape != shape:
        padded = np.zeros(padded_shape + image.shape[3:], dtype=np.float32)
        padded[: shape[0], : shape[1], : shape[2]] = image
        image = padded
    function = _network_function(network)
    starts = window_grid(padded_shape, window, settings.overlap)
    if len(starts) == 1:
        # One window: the weighted mean is the output itself; skip two volume-sized passes.
        output = _predict_batch(function, image[None], settings.mirror)[0]  # padded_shape == window
        if progress is not None:
            progress(1, 1)
        return output[: shape[0], : shape[1], : shape[2]]
    # A window spanning a whole axis gives every voxel on it the same Gaussian
    # factor from every window, which cancels in the weighted mean: weights
    # (and their sum) vary only along the axes that are tiled.
    tiled = [len({start[axis] for start in starts}) > 1 for axis in range(3)]
    weights = gaussian_importance(tuple(w if t else 1 for w, t in zip(window, tiled)), settings.sigma_scale)
    weight_sum = np.zeros(tuple(n if t else 1 for n, t in zip(padded_shape, tiled)), dtype=np.float32)

    def reduced(region):  # the region on weight_sum's grid
        return tuple(r if t else slice(0, 1) for r, t in zip(region, tiled))

    regions = [tuple(slice(s, s + w) for s, w in zip(start, window)) for start in starts]
    for region in regions:
        weight_sum[reduced(region)] += weights
    total = None
    for first in range(0, len(regions), settings.batch_size):
        chunk = regions[first: first + settings.batch_size]
        # One copy per window: TensorFlow makes the strided view contiguous itself.
        batch = image[chunk[0]][None] if len(chunk) == 1 else np.stack([image[r] for r in chunk])
        output = _predict_batch(function, batch, settings.mirror)
        if total is None:
            total = np.zeros(padded_shape + output.shape[-1:], dtype=np.float32)
        for region, window_output in zip(chunk, output):
            share = weights / weight_sum[reduced(region)]  # this window's part of each voxel's mean
            if np.all(share == 1):
                total[region] = window_output  # no other window reaches into it
            else:
                total[region] += window_output * share[..., None]
        if progress is not None:
            progress(min(first + settings.batch_size, len(regions)), len(regions))
    return total[: shape[0], : shape[1], : shape[2]]


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSetup:
    """What a model needs around it: its input modalities, output kind and preprocessing.

    Attributes:
        modalities: canonical names in input channel order.
        target: "classes", "regions" or "whole_tumor" (module docstring).
        preprocess: PreprocessSettings used in training (crop, crop size).
        window: default window (d, h, w): the model's fixed input size, or
            for models accepting any size `default_window` of the training
            patch size.
        fixed_input: True when the model only takes `window`-sized inputs.
        multiple: the model's spatial size divisor (`input_multiple`).
        task: the labels.TASKS scheme whose own classes the model outputs
            (its run's TrainConfig.task), or None for the classic classes.
    """

    modalities: tuple
    target: str
    preprocess: PreprocessSettings
    window: tuple = field(default_factory=lambda: default_window())
    fixed_input: bool = False
    multiple: int = 1
    task: str | None = None


def default_window(patch_size=None):
    """predict's default window for a size-free model trained on `patch_size` patches.

    The patch size (nnU-Net's rule), raised to MIN_DEFAULT_WINDOW per axis
    (the most accurate tiling measured; see the constants above).

    Args:
        patch_size: (d, h, w) training patches, or None (DEFAULT_PATCH_SIZE).

    Returns:
        tuple (d, h, w).
    """
    patch_size = DEFAULT_PATCH_SIZE if patch_size is None else patch_size
    return tuple(max(int(p), MIN_DEFAULT_WINDOW) for p in patch_size)


def input_multiple(network):
    """The divisor the network pads its spatial sizes to (2**poolings), 1 if it pads nothing."""
    from bratskeras.models.layers import PadToMultiple

    return max([layer.multiple for layer in network.layers if isinstance(layer, PadToMultiple)] or [1])


def setup_from_model(network, config=None):
    """The ModelSetup of a loaded network, from its run's config.json dict or its shapes.

    Without a config (a bare .keras from `build_model`), input channels decide
    the modalities (4: flair, t1, t1ce, t2; 1: flair), output channels the
    target (4: classes logits, 3: regions logits, 1: whole-tumor sigmoid
    probability), and a fixed spatial input (flair-unet) means a centre crop
    of that size; a size-free input means the brain bounding box.

    Raises:
        ModelError: channel counts with no default, or a config that disagrees
            with the network.
    """
    in_shape = tuple(network.input_shape)
    out_channels = int(network.output_shape[-1])
    spatial = in_shape[1:4]
    fixed = all(s is not None for s in spatial)
    if config is None:
        if in_shape[-1] not in _MODALITIES_BY_CHANNELS or targets.target_for_channels(out_channels) is None:
            raise ModelError(f"{network.name}: no default for {in_shape[-1]} input / {out_channels} output "
                             "channels; use a run directory with config.json")
        modalities = _MODALITIES_BY_CHANNELS[in_shape[-1]]
        target = targets.target_for_channels(out_channels)
        settings = PreprocessSettings(crop="center", crop_size=spatial) if fixed else PreprocessSettings()
    else:
        modalities = tuple(config.get("modalities", _MODALITIES_BY_CHANNELS.get(in_shape[-1], ())))
        target = config.get("target", "classes")
        settings = PreprocessSettings(crop=config.get("crop", "bbox"),
                                      crop_size=tuple(config.get("crop_size", FLAIR_PAPER_CROP)))
        task = config.get("task")
        if len(modalities) != in_shape[-1] or targets.get_target(target).channels(task) != out_channels:
            raise ModelError(f"{network.name}: config says {len(modalities)} modalities and target {target!r}, "
                             f"the network has {in_shape[-1]} input and {out_channels} output channels")
    patch_size = None if config is None else config.get("patch_size")
    return ModelSetup(modalities=modalities, target=target, preprocess=settings,
                      window=tuple(spatial) if fixed else default_window(patch_size), fixed_input=fixed,
                      multiple=input_multiple(network), task=None if config is None else config.get("task"))


def load_predictor(path):
    """Loads a `.keras` file or a run directory (its best.keras and config.json).

    Returns:
        (network, ModelSetup); the network outputs probabilities (softmax or
        sigmoid appended to logit models).

    Raises:
        ModelError: missing or unreadable model file, or setup errors.
    """
    from bratskeras.models import load_model

    path = os.fspath(path)
    config = None
    config_path = os.path.join(path, "config.json")
    if os.path.isdir(path) and os.path.exists(config_path):
        with open(config_path) as stream:
            config = json.load(stream)
    network = load_model(path)
    setup = setup_from_model(network, config)
    return probability_model(network, setup.target), setup


def output_activation(network, target=None):
    """The activation that turns `network`'s output into probabilities, or None if it has its own.

    A network whose last layer ends in a sigmoid or softmax (flair-unet)
    needs none; logits get their target's activation (bratskeras.targets).
    Without a `target` (export: a bare model), the output channels decide:
    the classic targets' counts, and any other count is a task's classes.
    """
    import keras

    head_activation = getattr(network.layers[-1], "activation", None)
    if head_activation in (keras.activations.sigmoid, keras.activations.softmax):
        return None
    target = target or targets.target_for_channels(network.outputs[0].shape[-1]) or "classes"
    return targets.get_target(target).activation


def probability_model(network, target):
    """`network` with the activation its logits need (`output_activation`); unchanged if it has its own."""
    import keras

    activation = output_activation(network, target)
    if activation is None:
        return network
    outputs = keras.layers.Activation(activation, dtype="float32", name="probabilities")(network.output)
    return keras.Model(network.input, outputs, name=f"{network.name}_probabilities")


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class PredictSettings:
    """Options of `predict_case` beyond the model's own setup.

    Attributes:
        windows: WindowSettings; its window is clipped to the volume on axes
            where the model accepts any size (so small volumes are one pass).
        label_scheme: a labels.SCHEMES name or None (the input's release or task);
            the model's classic classes are written through LabelScheme.from_classic.
        postprocess: steps for postprocessing.postprocess, applied on the crop.
        save_probabilities: also write OUTPUT_DIR/probabilities/<id>.nii.gz.
    """

    windows: WindowSettings = WindowSettings()
    label_scheme: str | None = None
    postprocess: tuple = field(default_factory=tuple)
    save_probabilities: bool = False


def effective_window(setup, settings, shape):
    """The window used on a preprocessed volume of `shape`.

    Fixed-input models always get their input size. Others get the requested
    window (the model's default `setup.window` if none was requested) clipped
    per axis to the volume (padding would only add compute), then shrunk to
    the least size that needs no more windows (`balanced_window`).
    """
    if setup.fixed_input:
        return setup.window
    requested = settings.window if settings.window is not None else setup.window
    clipped = tuple(min(w, n) for w, n in zip(requested, shape))
    return balanced_window(shape, clipped, settings.overlap, setup.multiple)


def effective_settings(setup, settings, shape):
    """`settings` (WindowSettings) with the window `effective_window` picks for a volume of `shape`."""
    return replace(settings, window=effective_window(setup, settings, shape))


def predict_case(network, setup, case, settings=PredictSettings(), progress=None):
    """Predicts one case on its source grid.

    Args:
        network: probability model from `load_predictor`.
        setup: its ModelSetup.
        case: io.Case.
        settings: PredictSettings.
        progress: optional callable(done, total) over windows.

    Returns:
        (label_map uint8 (D, H, W) in the chosen scheme, probabilities float32
        (D, H, W, K) on the source grid or None, properties from io.read_case).
    """
    image, _, properties = io.read_case(case, setup.modalities, with_labels=False)
    cropped, _, geometry = preprocess(image, None, setup.preprocess)
    windows = effective_settings(setup, settings.windows, cropped.shape[:3])
    probabilities = sliding_window_predict(network, cropped, windows, progress)
    classes = targets.output_to_classes(probabilities, setup.target)
    if settings.postprocess:  # its steps know the classic classes only
        classes = _postprocess(classes, setup.target, settings.postprocess)
    label_map = _write_labels(uncrop(classes, geometry), setup, settings.label_scheme or case.label_scheme)
    source_probabilities = None
    if settings.save_probabilities:
        source_probabilities = uncrop(probabilities, geometry)
        if not targets.get_target(setup.target).binary:
            # Outside the crop is background (channel 0 of the classes) with certainty.
            outside = uncrop(np.ones(geometry["size"], dtype=bool), geometry) == 0
            source_probabilities[outside, 0] = 1.0
    return label_map, source_probabilities, properties


def _postprocess(classes, target, steps):
    """Postprocessing of predicted classes; a binary target's map goes in as the bool mask its steps expect."""
    if not targets.get_target(target).is_mask:
        return postprocessing.postprocess(classes, list(steps))
    mask = postprocessing.postprocess(classes > 0, list(steps))
    return targets.output_to_classes(mask[..., None], target)


def _write_labels(classes, setup, scheme):
    """The on-disk values of predicted classes: the task's own (setup.task), else classic ones in `scheme`."""
    if setup.task is None:
        return labels.classic_to_labels(classes, scheme)
    if scheme not in (setup.task, None) and labels.get_scheme(scheme).labels != labels.get_scheme(setup.task).labels:
        raise ModelError(f"the model outputs {setup.task}'s classes, which have no {scheme} labels")
    return labels.classes_to_labels(classes, setup.task)


def output_paths(output_dir, case_id):
    """(label map path, probability map path) of a case."""
    return (os.path.join(output_dir, f"{case_id}.nii.gz"),
            os.path.join(output_dir, PROBABILITIES_DIR, f"{case_id}.nii.gz"))


def write_probabilities(probabilities, properties, path):
    """Writes float32 (D, H, W, K) probabilities as a 4-D NIfTI with the source affine."""
    import nibabel as nib

    image = nib.Nifti1Image(probabilities.astype(np.float32), np.asarray(properties["affine"]))
    image.header.set_zooms(tuple(properties["spacing"]) + (1.0,))
    with outputs.atomic_path(path) as tmp:
        nib.save(image, tmp)


@dataclass
class CaseResult:
    """Outcome of one case: its output path and seconds, or the error message."""

    case_id: str
    path: str | None = None
    seconds: float = 0.0
    error: str | None = None


def predict_dataset(network, setup, cases, output_dir, settings=PredictSettings(), overwrite=False,
                    on_case=None, progress_for=None):
    """Predicts every case into `output_dir`; a failing case does not stop the others.

    Args:
        network, setup: from `load_predictor`.
        cases: io.Case list (e.g. io.discover(root).cases).
        output_dir: created if absent; gets <id>.nii.gz per case.
        settings: PredictSettings.
        overwrite: replace existing outputs; without it any existing output
            stops the run before any case is predicted.
        on_case: optional callable(CaseResult) after each case.
        progress_for: optional callable(case) -> callable(done, total) for
            window progress inside a case.

    Returns:
        list of CaseResult in `cases` order.

    Raises:
        OutputExistsError, OutputError: see `check_output_folder`; raised
            before any case is predicted.
    """
    output_dir = os.fspath(output_dir)
    check_output_folder(output_dir, [c.id for c in cases], settings.save_probabilities, overwrite)
    os.makedirs(output_dir, exist_ok=True)
    results = []
    for case in cases:
        result = _predict_one(network, setup, case, output_dir, settings,
                              progress_for(case) if progress_for else None)
        results.append(result)
        if on_case is not None:
            on_case(result)
    return results


def check_output_folder(output_dir, case_ids, save_probabilities=False, overwrite=False):
    """Refuses outputs that exist (unless `overwrite`) or cannot be written, before any case is predicted.

    Raises:
        OutputExistsError: an output exists and `overwrite` is False, or one
            is a folder (never replaced).
        OutputError: the folder cannot be created or written.
    """
    planned = [p for case_id in case_ids for p in output_paths(output_dir, case_id)[: 1 + save_probabilities]]
    existing = [p for p in planned if os.path.lexists(p)]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]}: exists ({len(existing)} output(s) in total); "
                                "pass --overwrite to replace")
    for path in existing:
        outputs.refuse_existing(path, overwrite)
    outputs.ensure_writable_folder(output_dir)
    if save_probabilities:
        outputs.ensure_writable_folder(os.path.join(output_dir, PROBABILITIES_DIR))


def _predict_one(network, setup, case, output_dir, settings, progress):
    start = time.perf_counter()
    label_path, probability_path = output_paths(output_dir, case.id)
    try:
        label_map, probabilities, properties = predict_case(network, setup, case, settings, progress)
        with outputs.atomic_path(label_path) as tmp:
            io.write_label_map(label_map, properties, tmp)
        if probabilities is not None:
            write_probabilities(probabilities, properties, probability_path)
    except (BratsKerasError, ValueError, OSError) as error:
        message = user_message(error)
        if case.id not in message:
            message = f"case {case.id}: {message}"
        return CaseResult(case.id, error=message, seconds=time.perf_counter() - start)
    return CaseResult(case.id, path=label_path, seconds=time.perf_counter() - start)
