"""What a trained model needs around it, shared by `predict` and `export`.

Any model predict takes (a run directory, a .keras file, "pretrained:NAME"
(a shipped run directory, bratskeras.pretrained), an exported SavedModel,
ONNX or LiteRT model) becomes a predictor and a ModelSetup: its
input contract (bratskeras.data.contract: modalities, spacing, normalisation, crop,
target, task), where that contract came from, and its window.
`output_activation` picks the activation that turns a Keras model's output
into probabilities (export appends the same one as predict).

Where the contract comes from, in order:

    a .keras with its run's config.json    the config (the embedded contract must agree)
    a .keras alone                          the contract embedded in it
    a SavedModel / ONNX / LiteRT model      the contract in its metadata
    none of these (an old or foreign file)  guessed from the channel counts, with a warning

A run's config.json is read through TrainConfig (training.config_file:
`load_config_file`), which checks every field it holds (a hand-edited value
is one line naming the file and field) and resolves those a hand-written
one lacks as fit would.
"""

import json
import os
from dataclasses import dataclass, field, replace

from bratskeras import pretrained
from bratskeras.config.config_file import config_from_values, load_config_file
from bratskeras.core import targets

# The default for a model whose contract does not name its patch size: the lightweight2020 preset's.
from bratskeras.core.defaults import PATCH_SIZE as DEFAULT_PATCH_SIZE
from bratskeras.core.errors import ConfigError, ModelError
from bratskeras.core.run_folder import RunFolder
from bratskeras.data.contract import InputContract, spacing_text
from bratskeras.data.model_files import KERAS, LOCATIONS, MODEL_FILES, model_format, read_contract
from bratskeras.predict.postprocessing import check_steps
from bratskeras.predict.tiling import balanced_window

# The least default window per axis: the most accurate tiling measured
# (bratskeras.predict.tiling's comment, docs/benchmarks.md "Tiling").
MIN_DEFAULT_WINDOW = 160
# Where a ModelSetup's contract came from (predict prints it).
RUN_CONFIG = "run config.json"
RUN_CONFIG_AND_EMBEDDED = "run config.json, agreeing with the embedded contract"
EMBEDDED = "embedded in the .keras"
EXPORTED = "exported metadata"
GUESSED = "guessed from channel counts"


def _modalities_by_channels():
    """Models without a contract: their input channels name the modalities (registry facts)."""
    from bratskeras.models.registry import list_models, model_facts

    by_channels = {}
    for name in list_models():
        modalities = model_facts(name).modalities
        by_channels.setdefault(len(modalities), modalities)
    return by_channels


@dataclass(frozen=True)
class ModelSetup:
    """A model's input contract, where it came from, and how predict tiles the model.

    Attributes:
        contract: bratskeras.data.contract.InputContract (modalities, spacing,
            normalisation, crop, target, task, patch size).
        window: default window (d, h, w): the model's fixed input size, or
            for models accepting any size `default_window` of the training
            patch size.
        fixed_input: True when the model only takes `window`-sized inputs.
        multiple: the model's spatial size divisor (`input_multiple`).
        source: where the contract came from (RUN_CONFIG, EMBEDDED, EXPORTED,
            GUESSED, ...).
        spacing_overridden: True when `override_spacing` replaced the
            contract's spacing (predict --spacing).
        contract_spacing: the spacing the model's own contract names, when
            overridden (None: the source grid).
    """

    contract: InputContract
    window: tuple = field(default_factory=lambda: default_window())
    fixed_input: bool = False
    multiple: int = 1
    source: str = GUESSED
    spacing_overridden: bool = False
    contract_spacing: tuple | None = None

    @property
    def modalities(self):
        """Canonical modality names in input channel order."""
        return self.contract.modalities

    @property
    def target(self):
        """What the output stands for, a key of bratskeras.core.targets.TARGETS."""
        return self.contract.target

    @property
    def task(self):
        """The labels.TASKS scheme whose own classes the model outputs, or None for the classic classes."""
        return self.contract.task

    @property
    def preprocess(self):
        """The PreprocessSettings a case is preprocessed with (crop, crop size, margin, spacing)."""
        return self.contract.preprocess_settings()

    def describe(self):
        """Two lines for predict's header: the contract, and where it came from."""
        spacing = ""
        if self.spacing_overridden:
            spacing = f"; spacing overridden by --spacing (the contract says {spacing_text(self.contract_spacing)})"
        return f"contract: {self.contract.describe()}\ncontract source: {self.source}{spacing}"


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


def guessed_contract(input_shape, output_channels, multiple, where):
    """The contract of a model that carries none, from its channel counts (what predict did before contracts).

    4 input channels mean flair, t1, t1ce, t2 and 1 means flair; 4 output
    channels the classes, 3 the regions, 1 the whole tumor; a fixed spatial
    input (flair-unet) a centre crop of that size, a free one the brain
    bounding box; the source grid, z-scored.

    Raises:
        ModelError: channel counts with no default (a task model, say).
    """
    channels, spatial = input_shape[-1], tuple(input_shape[:3])
    by_channels = _modalities_by_channels()
    target = targets.target_for_channels(output_channels) if output_channels is not None else None
    if channels not in by_channels or target is None:
        raise ModelError(f"{where}: no input contract, and no default for {channels} input / {output_channels} "
                         "output channels; use its run directory (config.json) or a model bratskeras wrote")
    crop = {"crop": "center", "crop_size": spatial} if all(s is not None for s in spatial) else {}
    return InputContract(modalities=by_channels[channels], target=target, input_multiple=multiple, **crop)


def setup_for(input_shape, output_channels, contract, source, where, multiple=None):
    """The ModelSetup of a model under `contract` (None: `guessed_contract`, source GUESSED).

    Args:
        input_shape: (D, H, W, C) the model takes, None where any size.
        output_channels: its output channels.
        contract: InputContract or None.
        source: where `contract` came from (one of this module's sources).
        where: the model, for messages.
        multiple: the network's spatial divisor; default the contract's.

    Raises:
        ModelError: a contract that does not fit the model's channels, whose
            post-processing steps cannot apply to it, or none and no guess.
    """
    input_shape = tuple(input_shape)
    spatial = input_shape[:3]
    fixed = all(s is not None for s in spatial)
    multiple = (contract.input_multiple if contract is not None else 1) if multiple is None else multiple
    if contract is None:
        contract, source = guessed_contract(input_shape, output_channels, multiple, where), GUESSED
    if len(contract.modalities) != input_shape[-1] or contract.output_channels() != output_channels:
        raise ModelError(f"{where}: its contract says {len(contract.modalities)} modalities and target "
                         f"{contract.target!r}, the network has {input_shape[-1]} input and {output_channels} "
                         "output channels")
    try:
        check_steps(contract.postprocess, contract.task, contract.modalities)
    except ValueError as error:
        raise ModelError(f"{where}: its contract's postprocess: {error}") from None
    return ModelSetup(contract=contract, window=tuple(spatial) if fixed else default_window(contract.patch_size),
                      fixed_input=fixed, multiple=multiple, source=source)


def setup_from_model(network, config=None, where=None):
    """The ModelSetup of a loaded Keras network, from its run's config.json dict or (None) its shapes.

    Raises:
        ConfigError: a config field of a wrong type or out of range.
        ModelError: channel counts with no default, or a config that disagrees
            with the network.
    """
    where = where or network.name
    multiple = input_multiple(network)
    run_config = None if config is None else config_from_values(config, where, _channel_modalities(network))
    contract = None if config is None else config_contract(run_config, network)
    return setup_for(network.input_shape[1:], int(network.output_shape[-1]), contract,
                     GUESSED if config is None else RUN_CONFIG, where, multiple)


def _channel_modalities(network):
    """The modalities a config that names none means for `network`: its input channel count's (registry facts)."""
    return _modalities_by_channels().get(network.input_shape[-1])


def config_contract(run_config, network):
    """The InputContract of a run's configuration (a config_file.RunConfigFile) for its Keras `network`."""
    return InputContract.from_run_config(run_config, input_multiple(network))


def keras_contract(path, network):
    """(contract or None, source) of a `.keras` file or run directory and its loaded `network`.

    The run's config.json, when there is one, is what the run trained with;
    a contract embedded in the .keras must then agree with it. A bare .keras
    has only its embedded one; an old or foreign one has none (None, GUESSED).

    Raises:
        ModelError: a damaged embedded contract, or one that disagrees with
            the run's config.json (naming the fields).
    """
    embedded = read_contract(path, KERAS)
    config_path = run_config_path(path)
    if config_path is None:
        return (embedded, EMBEDDED) if embedded is not None else (None, GUESSED)
    from_config = config_contract(load_config_file(config_path, _channel_modalities(network)), network)
    if embedded is None:
        return from_config, RUN_CONFIG
    differing = [k for k, v in from_config.needs().items() if embedded.needs()[k] != v]
    if differing:
        details = "; ".join(f"{k} {json.dumps(embedded.needs()[k])} vs {json.dumps(from_config.needs()[k])}"
                            for k in differing)
        model_file = RunFolder(path).best_model if os.path.isdir(path) else path
        raise ModelError(f"{model_file}: its embedded contract and {config_path} disagree ({details})")
    return from_config, RUN_CONFIG_AND_EMBEDDED


def _read_json(path):
    """A config.json's contents, unchecked (is it a run's at all?); ConfigError naming the file when it is not JSON."""
    try:
        with open(path) as stream:
            return json.load(stream)
    except ValueError as error:  # UnicodeDecodeError included
        raise ConfigError(f"{path}: not valid JSON ({error})") from None


def run_config_path(path):
    """The config.json of the run a `.keras` model belongs to, or None (a bare .keras file).

    `path` is a run directory, or a .keras file inside one: its best.keras or
    checkpoints/epoch-NNNN.keras, whose run folder is one level further up.
    Another tool's config.json beside a .keras file is not a run's: a run's
    names its target and modalities. "pretrained:NAME" is its shipped run
    folder (bratskeras.pretrained).
    """
    path = os.path.abspath(os.fspath(pretrained.resolve(path)))
    inside_run = not os.path.isdir(path)
    folder = RunFolder.of_model_file(path) if inside_run else RunFolder(path)
    config_path = folder.config
    if not os.path.exists(config_path):
        return None
    if inside_run:
        config = _read_json(config_path)
        if not (isinstance(config, dict) and {"target", "modalities"} <= set(config)):
            return None
    return config_path


def run_config(path):
    """The config.json of the run a model belongs to (a config_file.RunConfigFile), or None (`run_config_path`)."""
    path = pretrained.resolve(path)
    config_path = None if MODEL_FILES[model_format(path)].exported else run_config_path(path)
    return None if config_path is None else load_config_file(config_path)


def run_task(path):
    """The task a model was trained on (its run's config, else its stored contract), or None.

    Cheap (no model load, beyond an ONNX session): `predict` uses it as the
    input's --task by default, so a gli model reads BraTS-GLI folders as
    post-treatment gli cases (they would otherwise be the 2023 glioma scheme,
    whose labels its classes lack). A damaged contract fails here, before
    any work.
    """
    path = pretrained.resolve(path)
    config = run_config(path)
    if config is not None:
        return config.config.task
    contract = read_contract(path)
    return None if contract is None else contract.task


def load_predictor(path):
    """Loads any model predict takes, with its ModelSetup.

    Args:
        path: a run directory, a .keras file, "pretrained:NAME" (a shipped
            run folder, read like any run directory), a SavedModel folder, a
            .onnx or a .tflite file.

    Returns:
        (predictor, ModelSetup). The predictor maps float32 (B, d, h, w, C) to
        probabilities (B, d, h, w, K): for Keras the network with the
        activation its logits need (a keras.Model, which bratskeras.predict.tiling
        compiles per window shape), else the format's runtime
        (bratskeras.predict.runtimes).

    Raises:
        ModelError: missing or unreadable model file, a damaged contract, or
            setup errors.
        ConfigError: the format's optional runtime is not installed.
    """
    from bratskeras.models import load_model

    # pretrained:NAME is its shipped run folder: config.json and the best.keras' embedded contract, as any run's.
    path = os.fspath(pretrained.resolve(path))
    format = model_format(path)
    if MODEL_FILES[format].exported:
        from bratskeras.predict import runtimes

        predictor = runtimes.load(path, format)
        setup = setup_for(predictor.input_shape, predictor.output_channels, read_contract(path, format),
                          f"{EXPORTED} ({LOCATIONS[format]})", path)
        return predictor, setup
    network = load_model(path)
    contract, source = keras_contract(path, network)
    setup = setup_for(network.input_shape[1:], int(network.output_shape[-1]), contract, source, path,
                      input_multiple(network))
    return probability_model(network, setup.target), setup


def override_spacing(setup, spacing):
    """`setup` predicting at `spacing` ((d, h, w) mm, or None: the source grid) instead of its contract's."""
    original = setup.contract_spacing if setup.spacing_overridden else setup.contract.spacing
    return replace(setup, contract=replace(setup.contract, spacing=spacing), spacing_overridden=True,
                   contract_spacing=original)


def output_activation(network, target=None):
    """The activation that turns `network`'s output into probabilities, or None if it has its own.

    A network whose last layer ends in a sigmoid or softmax (flair-unet)
    needs none; logits get their target's activation (bratskeras.core.targets).
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
