"""Fine-tuning: a new run that starts from a trained model's weights (`fit DATA --init-from MODEL`).

MODEL is "pretrained:NAME" (a shipped model), a run directory, or a .keras
file: a run's best.keras or checkpoints/epoch-NNNN.keras, or a bare one.

What the new run takes from where:
- From the source run's config.json, `INHERITED`: the architecture (model,
  model_overrides) and the contract predict and export read back
  (modalities, target, task, crop, crop size), and the spacing, the
  training patch size and the post-processing predict applies (postprocess)
  unless --spacing, --patch-size or --postprocess is given. A flag asking
  for another value of any of them but those three, or a --preset
  training another model, is a one-line ConfigError before any work:
  fine-tuning changes weights, not what the network takes in or puts out.
  The voxel grid may change (e.g. a 2 mm model tuned at 1.5 mm, where thin
  enhancing rims survive): a fully convolutional network takes any grid,
  and the new run's config.json and models record the spacing it was tuned
  at, so predict resamples to that one.
- From the preset (default: the one the source was trained with) and the
  flags: everything else, i.e. how to train (optimizer, learning rate, the
  loss for the target, epochs, steps, batch size, augmentation). No
  optimizer state comes along: the source's best.keras has none.
- A bare .keras outside a run has no config.json: its embedded input
  contract (bratskeras.data.contract, written by fit and export) gives the same
  inherited fields but the architecture (modalities, target, task, crop,
  crop size, spacing, patch size, post-processing); the architecture and how to train come
  from the preset and flags like any new run, and the network they build
  must have the source's weight shapes (checked before any work). A .keras
  with neither (made outside bratskeras) is set up from flags alone.

The run's config.json records `init_from` (pretrained:NAME as given, a path
made absolute). `--resume` continues from the run's own saved state and
never reads the source again, except for a run stopped before its first
epoch was saved, which starts from the source's weights again.
"""

import json
import os

from bratskeras import pretrained
from bratskeras.core.errors import ConfigError

# TrainConfig fields a fine-tuned run takes from its source's config.json ...
INHERITED = ("model", "model_overrides", "modalities", "target", "task", "crop", "crop_size", "spacing",
             "patch_size", "postprocess")
# ... and those of them a flag may set to another value: a fully convolutional network takes any patch
# its pooling allows, on any voxel grid (the run then records the grid it was tuned at); its output
# may be post-processed otherwise.
ADJUSTABLE = ("patch_size", "spacing", "postprocess")
# The flag that sets each inherited field, for the error a conflicting one gives (crop and crop size
# come from presets only; the modalities from --task).
_FLAGS = {"model": "--model", "model_overrides": "--model-arg", "modalities": "--task", "target": "--target",
          "task": "--task", "crop": "--preset", "crop_size": "--preset", "spacing": "--spacing"}


def recorded_source(source):
    """What config.json records for `source`: "pretrained:NAME" as given, a path made absolute."""
    return source if pretrained.is_pretrained(source) else os.path.abspath(os.fspath(source))


def source_config(source):
    """The fields the config.json of the run `source` belongs to holds (a dict), or None for a bare .keras file.

    Raises:
        ConfigError: `source` does not exist; ModelError: an unknown pretrained name.
    """
    from bratskeras.predict.model_setup import run_config

    path = pretrained.resolve(source)
    if not os.path.exists(path):
        raise ConfigError(f"--init-from {source}: no such run directory or .keras file")
    config = run_config(path)
    return None if config is None else config.values()


def inherit(source, preset, overrides):
    """The preset and overrides of a new run fine-tuned from `source`.

    Args:
        source: "pretrained:NAME", a run directory or a .keras file.
        preset: the --preset given, or None (then: the source's own preset).
        overrides: the run's other TrainConfig overrides (None values ignored).

    Returns:
        (preset or None, overrides with the source's INHERITED fields and
        `init_from` added; an explicit patch size or spacing is kept).

    Raises:
        ConfigError: an override or preset conflicting with the source (one
            line naming the flag and both values), or a missing source.
    """
    from bratskeras.config.train_config import PRESETS, TrainConfig, with_task_rule

    config = source_config(source)
    # A task's own modalities count as asked for (the task rule), so a source trained on others is refused.
    asked = with_task_rule({key: value for key, value in overrides.items() if value is not None})
    asked["init_from"] = recorded_source(source)
    if config is None:
        config = contract_fields(source)
        if config is None:
            return preset, asked
    inherited = {key: config[key] for key in INHERITED if key in config}
    for key, value in inherited.items():
        if key in asked and key not in ADJUSTABLE and _as_json(asked[key]) != _as_json(value):
            raise ConfigError(
                f"--init-from {source} was trained with {key} {_as_json(value)}, {_FLAGS[key]} asks for "
                f"{_as_json(asked[key])}: a fine-tuned run keeps its source's architecture and inputs "
                f"(leave {_FLAGS[key]} out)")
    preset_model = PRESETS.get(preset, {}).get("model", TrainConfig.model)
    if preset is not None and "model" in inherited and preset_model != inherited["model"]:
        raise ConfigError(f"--init-from {source} is a {inherited.get('model')}, --preset {preset} trains "
                          f"{preset_model}: leave --preset out")
    return preset or config.get("preset"), {**inherited, **asked}


def contract_fields(source):
    """The INHERITED fields a bare .keras `source` carries in its input contract (a dict), or None without one.

    The contract has no architecture: "model" and "model_overrides" are left
    to the flags (a wrong one is caught by the weight shapes).
    """
    from bratskeras.data.model_files import read_contract

    contract = read_contract(source, "keras")
    if contract is None:
        return None
    fields = {"modalities": list(contract.modalities), "target": contract.target, "task": contract.task,
              "crop": contract.crop, "crop_size": list(contract.crop_size),
              "spacing": None if contract.spacing is None else list(contract.spacing),
              "postprocess": [dict(step) for step in contract.postprocess]}
    if contract.patch_size is not None:
        fields["patch_size"] = list(contract.patch_size)
    return fields


def _as_json(value):
    """`value` as config.json writes it (tuples as lists), so flags and saved values compare."""
    return json.dumps(value, sort_keys=True)


def source_weights(source):
    """The weights of `source`'s model: [(variable path, numpy array)] in the network's order.

    Load outside a tf.distribute scope: the source model is only read.
    """
    from bratskeras.models import load_model

    model = load_model(source)
    return [(variable.path, variable.numpy()) for variable in model.weights]


def assign_weights(network, weights, source):
    """Sets `network`'s weights to `weights` (`source_weights`), all or none.

    Both come from the same builder with the same arguments, so their
    weights line up one to one in order; anything else is refused.

    Raises:
        ConfigError: another number of weights, or another shape, naming the
            first weight that differs.
    """
    ours = network.weights
    if len(ours) != len(weights):
        raise ConfigError(f"--init-from {source}: its model has {len(weights)} weight arrays, {network.name} "
                          f"{len(ours)}; give the --model and --model-arg it was trained with")
    for variable, (path, array) in zip(ours, weights):
        if tuple(variable.shape) != array.shape:
            raise ConfigError(f"--init-from {source}: its weight {path} is {array.shape}, {variable.path} here is "
                              f"{tuple(variable.shape)}; give the --model, --model-arg, --target and --task it was "
                              "trained with")
    network.set_weights([array for _, array in weights])


def check_fits(config):
    """Refuses, before any work, a run whose network cannot take its source's weights (ConfigError)."""
    from bratskeras.training.fit import build_network

    assign_weights(build_network(config), source_weights(config.init_from), config.init_from)
