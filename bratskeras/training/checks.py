"""Checks a run can pass before any time is spent on it: patch sizes and memory.

`check_patch_size` reads the model's pooling multiple from the registry's
facts; `check_memory` estimates a training step's activations on the host.
"""

import os

import numpy as np

from bratskeras.core.errors import ConfigError


def check_patch_size(config, cached_cases):
    """Patches must fit the model's poolings and the cached volumes (padded otherwise)."""
    from bratskeras.models import model_facts

    multiple = model_facts(config.model, **config.model_overrides).pooling_multiple
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


def volume_sizes(cached_cases):
    """{"median", "min", "max"}: (D, H, W) per axis over the preprocessed cases (cache meta "shape")."""
    shapes = np.array([case.meta["shape"] for case in cached_cases], dtype=np.int64).reshape(-1, 3)
    return {"median": tuple(int(round(v)) for v in np.median(shapes, axis=0)),
            "min": tuple(int(v) for v in shapes.min(axis=0)), "max": tuple(int(v) for v in shapes.max(axis=0))}


def _dims(sizes):
    return "x".join(str(s) for s in sizes)


def describe_patch(config, sizes):
    """One line: the training patch against the median (min-max) preprocessed volume."""
    spread = "" if sizes["min"] == sizes["max"] else f" (min {_dims(sizes['min'])}, max {_dims(sizes['max'])})"
    return (f"patch {_dims(config.patch_size)} on volumes of median size {_dims(sizes['median'])}{spread} "
            "after preprocessing")


def patch_padding_warning(config, sizes):
    """The warning for a patch larger than some preprocessed volume along an axis, or None.

    Such volumes are zero-padded up to the patch (data.py), which costs time and
    memory and shows the network mostly padding. Suggests the largest patch
    the model accepts that fits every volume, when there is one.
    """
    from bratskeras.models import model_facts

    axes = [name for name, patch, smallest in zip("DHW", config.patch_size, sizes["min"]) if patch > smallest]
    if not axes:
        return None
    message = (f"patch {_dims(config.patch_size)} is larger than the preprocessed volumes along "
               f"{', '.join(axes)} (smallest {_dims(sizes['min'])}): volumes are zero-padded to the patch, "
               "which costs time and memory")
    multiple = model_facts(config.model, **config.model_overrides).pooling_multiple
    fitting = [min(p, s // multiple * multiple) for p, s in zip(config.patch_size, sizes["min"])]
    if min(fitting) >= multiple:
        message += f"; --patch-size {','.join(map(str, fitting))} fits them"
    return message
