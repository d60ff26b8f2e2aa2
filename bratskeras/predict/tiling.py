"""Sliding-window inference over one volume: tiling, Gaussian weighting, mirroring, compiled passes.

Arrays are channels last: images (D, H, W, C), outputs (D, H, W, K); D, H, W
are the NIfTI voxel axes i, j, k. Which window a model gets by default is
bratskeras.predict.model_setup's job; this module tiles whatever window it is given.

Probabilities, not logits, are what windows and mirrored passes average, so
TTA means the mean of probabilities (nnU-Net averages logits; for softmax
outputs the argmax rarely differs).
"""

import collections
import functools
import weakref
from dataclasses import dataclass

import numpy as np

# predict's default tiling (model_setup.MIN_DEFAULT_WINDOW) is chosen for accuracy, then made fast. Instance
# norm takes its statistics over each window, so the tiling changes the
# result: on held-out phantoms, windows of at least 160 voxels per axis with
# overlap 0.5 and Gaussian weighting (nnU-Net's tiling) scored best for models
# trained on 48 x 48 x 40 and 64^3 patches (docs/benchmarks.md, "Tiling"; a
# model trained on 128^3 patches was not measured), so
# the default window is the training patch size, raised to 160 per axis,
# with overlap 0.5. Faster tilings are explicit flags (e.g. --window
# 240,80,240 --overlap 0 for 3 slabs, ~1.8x faster and less accurate).
DEFAULT_OVERLAP = 0.5
# Compiled forward passes kept per network, one per window shape (LRU).
MAX_TRACED_SHAPES = 8


@dataclass(frozen=True)
class WindowSettings:
    """How a volume is tiled and averaged.

    Attributes:
        window: (d, h, w) window size, or None for the model's default
            (model_setup.ModelSetup.window; `model_setup.effective_settings`
            resolves it). Axes of the volume smaller than the window are
            zero-padded (z-scored background is 0) and cropped back.
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


class CompiledForwards:
    """The owner of compiled forward passes: network -> {window batch shape: tf.function}.

    Keys are weak, so a dropped model frees its graphs; `clear` drops them
    all. The module's COMPILED_FORWARDS is the process-wide instance that
    `predict`, held-out scoring and whole-volume validation share (a model
    traced once per window shape is reused across cases and epochs); a caller
    that wants its own lifetime passes its own instance to `compiled_forward`.
    """

    def __init__(self):
        self._by_network = weakref.WeakKeyDictionary()

    def shapes(self, network):
        """The LRU-ordered {shape: tf.function} of `network` (created empty)."""
        return self._by_network.setdefault(network, collections.OrderedDict())

    def clear(self):
        """Drops every compiled forward pass."""
        self._by_network.clear()


COMPILED_FORWARDS = CompiledForwards()


def compiled_forward(network, shape, keep=MAX_TRACED_SHAPES, cache=COMPILED_FORWARDS):
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
        cache: the CompiledForwards that owns the graph (default: the
            process-wide COMPILED_FORWARDS).

    Returns:
        a tf.function, tensor or array (B, d, h, w, C) -> tensor (B, d, h, w, K).
    """
    import tensorflow as tf

    shape = tuple(int(n) for n in shape)
    cache = cache.shapes(network)
    if shape in cache:
        cache.move_to_end(shape)
        return cache[shape]
    function = tf.function(_Forward(network), reduce_retracing=False)
    cache[shape] = function
    while keep is not None and len(cache) > keep:
        cache.popitem(last=False)
    return function


class _Forward:
    """x -> network(x, training=False), holding the network by a weak reference.

    The graph must not keep its own cache key alive. A callable object, not a
    lambda: TensorFlow counts traces per Python code object, so one lambda
    behind many single-shape functions read as one function retraced on every
    shape and printed a "triggered tf.function retracing" warning.
    """

    def __init__(self, network):
        self.network = weakref.ref(network)

    def __call__(self, x):
        return self.network()(x, training=False)


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
