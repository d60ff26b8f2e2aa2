"""Checks a run can pass before any time is spent on it: patch sizes and memory.

`check_patch_size` reads the model's pooling multiple from the registry's
facts; `check_memory` estimates a training step's activations on the host.
"""

import os

import numpy as np

from bratskeras.errors import ConfigError


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
