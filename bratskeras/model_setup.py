"""What a trained model needs around it, shared by `predict` and `export`.

A loaded network (a run directory with its config.json, or a bare .keras)
becomes a ModelSetup: its input modalities, its output's training target
(bratskeras.targets), the preprocessing it was trained with and its default
window; `output_activation` picks the activation that turns its output into
probabilities (export appends the same one as predict).
"""

import json
import os
from dataclasses import dataclass, field, replace

from bratskeras import pretrained, targets
from bratskeras.errors import ModelError
from bratskeras.preprocessing import PreprocessSettings
from bratskeras.tiling import balanced_window

# The least default window per axis: the most accurate tiling measured
# (bratskeras.tiling's comment, docs/benchmarks.md "Tiling").
MIN_DEFAULT_WINDOW = 160
# The lightweight2020 preset's patch: the default for a bare .keras without its run's config.
DEFAULT_PATCH_SIZE = (128, 128, 128)


def _modalities_by_channels():
    """Bare .keras files carry no config: their input channels name the modalities (registry facts)."""
    from bratskeras.models.registry import list_models, model_facts

    by_channels = {}
    for name in list_models():
        modalities = model_facts(name).modalities
        by_channels.setdefault(len(modalities), modalities)
    return by_channels


@dataclass(frozen=True)
class ModelSetup:
    """What a model needs around it: its input modalities, output kind and preprocessing.

    Attributes:
        modalities: canonical names in input channel order.
        target: what the output stands for, a key of bratskeras.targets.TARGETS.
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
        if in_shape[-1] not in _modalities_by_channels() or targets.target_for_channels(out_channels) is None:
            raise ModelError(f"{network.name}: no default for {in_shape[-1]} input / {out_channels} output "
                             "channels; use a run directory with config.json")
        modalities = _modalities_by_channels()[in_shape[-1]]
        target = targets.target_for_channels(out_channels)
        settings = PreprocessSettings(crop="center", crop_size=spatial) if fixed else PreprocessSettings()
    else:
        modalities = tuple(config.get("modalities", _modalities_by_channels().get(in_shape[-1], ())))
        target = config.get("target", "classes")
        defaults = PreprocessSettings()  # a config.json without crop fields trained with these
        settings = PreprocessSettings(crop=config.get("crop", defaults.crop),
                                      crop_size=tuple(config.get("crop_size", defaults.crop_size)),
                                      spacing=config.get("spacing", defaults.spacing))
        task = config.get("task")
        if len(modalities) != in_shape[-1] or targets.get_target(target).channels(task) != out_channels:
            raise ModelError(f"{network.name}: config says {len(modalities)} modalities and target {target!r}, "
                             f"the network has {in_shape[-1]} input and {out_channels} output channels")
    patch_size = None if config is None else config.get("patch_size")
    return ModelSetup(modalities=modalities, target=target, preprocess=settings,
                      window=tuple(spatial) if fixed else default_window(patch_size), fixed_input=fixed,
                      multiple=input_multiple(network), task=None if config is None else config.get("task"))


def run_config(path):
    """The config.json (a dict) of the run a model belongs to, or None (a bare .keras file).

    `path` is a run directory, or a .keras file inside one: its best.keras or
    checkpoints/epoch-NNNN.keras, whose run folder is one level further up.
    What the model's output channels mean (a task's 4 regions or the classic
    4 classes) is known only from there. "pretrained:NAME" is its shipped
    run folder (bratskeras.pretrained).
    """
    path = os.path.abspath(os.fspath(pretrained.resolve(path)))
    inside_run = not os.path.isdir(path)
    if inside_run:
        folder = os.path.dirname(path)
        path = os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else folder
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        return None
    with open(config_path) as stream:
        config = json.load(stream)
    # Another tool's config.json beside a .keras file is not a run's: a run's names its target and modalities.
    if inside_run and not (isinstance(config, dict) and {"target", "modalities"} <= set(config)):
        return None
    return config


def run_task(path):
    """The task a run directory's model was trained on (its config's "task"), or None.

    Cheap (no model load): `predict` uses it as the input's --task by default,
    so a gli model reads BraTS-GLI folders as post-treatment gli cases (they
    would otherwise be the 2023 glioma scheme, whose labels its classes lack).
    """
    config = run_config(path)
    return None if config is None else config.get("task")


def load_predictor(path):
    """Loads a `.keras` file, a run directory (its best.keras and config.json) or "pretrained:NAME".

    Returns:
        (network, ModelSetup); the network outputs probabilities (softmax or
        sigmoid appended to logit models).

    Raises:
        ModelError: missing or unreadable model file, or setup errors.
    """
    from bratskeras.models import load_model

    path = os.fspath(path)
    config = run_config(path)
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
