"""Export a trained model for serving: SavedModel, LiteRT (TFLite), ONNX, .keras.

Every deployment artefact (saved_model, tflite, onnx) has one input and one
output with stable names:

    image          float32 (batch, D, H, W, channels), channels last
    probabilities  float32 (batch, D, H, W, classes)

(SavedModel and LiteRT: the `serving_default` signature's names; ONNX: the
graph's, with free dimensions named batch, depth, height, width.) A format's
optional extra (bratskeras.platform.extras) is checked before any work, and each
stage is announced through export_model's `announce`.

The models end in logits (multiclass) or a sigmoid (FLAIR); the export graph
appends softmax (several classes) or sigmoid (one class) to logits so clients
always receive probabilities. The `keras` format keeps the model exactly as
trained (minus optimizer state). D, H, W are the NIfTI voxel axes i, j, k.

Every artefact carries the model's input contract (bratskeras.data.contract:
modalities, spacing, normalisation, crop, target, task), so `predict` runs it
as it was trained without its run folder.

Each export ends by loading the artefact in its own runtime, running it on a
standard-normal volume (the scale of z-scored MRI), comparing with Keras and
reading its contract back (a LiteRT export too large to run cheaply is run
through a smaller twin: LITERT_CHECK_SPATIAL); the artefact is written under a temporary name
and renamed into place only once it passes (TF Serving would pick a new
version up at once), else `ExportError` is raised and an existing artefact
is left as it was.

    >>> report = export_model("runs/exp1", "tflite", input_shape=(128, 128, 128, 4))
    >>> report.max_abs_diff <= report.tolerance
    True
"""

import dataclasses
import os
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import ops

from bratskeras import pretrained
from bratskeras.core.errors import ConfigError, ExportError, ModelError
from bratskeras.data import contract as contracts
from bratskeras.export.formats import FORMATS as FORMAT_TABLE
from bratskeras.export.formats import QUANTIZE
from bratskeras.models.saving import check_segmentation_model, inference_model, load_model, save_model
from bratskeras.platform import outputs
from bratskeras.platform.extras import require_extra
from bratskeras.platform.quiet import filtered_stderr
from bratskeras.predict.model_setup import keras_contract, output_activation
from bratskeras.predict.runtimes import (
    INPUT_NAME,
    LITERT_NOISE,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    LiteRtPredictor,
    OnnxPredictor,
    SavedModelPredictor,
)

FORMATS = tuple(FORMAT_TABLE)
SAVED_MODELS_DIR = Path("saved_models")

# Max abs difference of probabilities allowed against float32 Keras. float16
# weights and dynamic-range int8 weights (with int8 activations inside some
# kernels) are approximations by design; their bounds only catch broken graphs.
TOLERANCES = {"none": 1e-4, "float16": 1e-2, "dynamic-int8": 0.25}

# LiteRT needs static spatial sizes (the pad/crop layers and the reshapes that
# express 3-D pooling are resolved at conversion); dynamic models get this
# unless --input-shape says otherwise: the training patch size.
DEFAULT_STATIC_SPATIAL = (128, 128, 128)
# Spatial size of the random check volume where the artefact accepts any size;
# 30 is not a multiple of 4 or 16, so the check also runs the pad/crop path.
CHECK_SPATIAL = (32, 32, 30)
# The largest LiteRT input checked as it is. LiteRT's reference CONV_3D needs
# about 17 GB and 40 s (2 cores) for one 128^3 pass of lightweight-unet, so a
# larger LiteRT export of a size-free model is checked through a twin: the
# same export graph and weights converted with the same settings at this
# size (an axis already smaller keeps its size), run in LiteRT against Keras.
LITERT_CHECK_SPATIAL = (64, 64, 64)
# Names of the ONNX input's and output's free dimensions, in axis order (the channels are fixed).
ONNX_DIMENSIONS = ("batch", "depth", "height", "width")


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it matches Keras.

    Attributes:
        path: the artefact (a SavedModel version directory or a file).
        format: one of FORMATS.
        quantize: one of QUANTIZE ("none" except for tflite).
        size_bytes: total size on disk.
        max_abs_diff: max |artefact - Keras| on the check volume.
        tolerance: the bound max_abs_diff was held to.
        check_shape: (batch, D, H, W, C) of the check volume.
        ops: operator names in the LiteRT model (tflite only, else empty).
        twin: True when the numbers come from a LiteRT twin converted at
            check_shape (LITERT_CHECK_SPATIAL), not the artefact's own size.
        contract: the input contract the artefact carries (read back from
            it), or None for a model whose contract is unknown.
        contract_source: where that contract came from (model_setup's sources).
    """

    path: Path
    format: str
    quantize: str
    size_bytes: int
    max_abs_diff: float
    tolerance: float
    check_shape: tuple
    ops: tuple = ()
    twin: bool = False
    contract: object = None
    contract_source: str | None = None


# ---------------------------------------------------------------- loading


# ------------------------------------------------------------ export graph


class BuiltinMaxPool3D(keras.layers.Layer):
    """2x2x2 max pooling, stride 2, written with LiteRT builtin operators.

    LiteRT has no 3-D max pooling builtin (the converter emits FlexMaxPool3D).
    The max over a 2x2x2 window is the max over D pairs of 2-D 2x2 maxima, so:
    MAX_POOL_2D on (batch * D, H, W, C), then REDUCE_MAX over D pairs. Exact,
    parameter-free, export-only (never saved in a .keras file).

    Shape:
        (batch, D, H, W, C) -> (batch, D / 2, H / 2, W / 2, C); D, H, W static
        and even (the models pad to multiples of 2**poolings).
    """

    def call(self, inputs):
        _, depth, height, width, channels = inputs.shape
        if None in (depth, height, width) or depth % 2 or height % 2 or width % 2:
            raise ModelError(f"{self.name}: builtin 3-D pooling needs static even spatial "
                             f"sizes, got {inputs.shape}")
        half = (depth // 2, height // 2, width // 2)
        x = ops.reshape(inputs, (-1, height, width, channels))
        x = ops.max_pool(x, 2, strides=2, padding="valid")
        x = ops.reshape(x, (-1, 2, half[1] * half[2], channels))
        x = ops.max(x, axis=1)
        return ops.reshape(x, (-1, *half, channels))


class BuiltinInstanceNormalization(keras.layers.Layer):
    """Instance norm without affine, moments reduced one spatial axis at a time.

    LiteRT's MEAN sums a whole (D, H, W) slab in float32 sequentially: over
    128^3 voxels that drifted the exported probabilities by 6e-4 from Keras.
    Reducing W, then H, then D (mathematically the same mean) sums at most a
    few hundred values at a time. Two-pass variance, as the Keras layer.
    Export-only, parameter-free.

    Shape: (batch, D, H, W, C) -> same.
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    @staticmethod
    def _spatial_mean(x):
        for axis in (3, 2, 1):
            x = ops.mean(x, axis=axis, keepdims=True)
        return x

    def call(self, inputs):
        centered = inputs - self._spatial_mean(inputs)
        variance = self._spatial_mean(ops.square(centered))
        return centered * ops.rsqrt(variance + self.epsilon)


def _builtin_layer(layer):
    """clone_model hook for LiteRT: builtin forms of 3-D pooling and instance norm."""
    if isinstance(layer, keras.layers.GroupNormalization) and layer.groups in (-1, layer.input.shape[-1]):
        if layer.center or layer.scale:
            raise ModelError(f"{layer.name}: only instance norm without affine has a builtin form")
        return BuiltinInstanceNormalization(epsilon=layer.epsilon, name=layer.name)
    if isinstance(layer, keras.layers.MaxPooling3D):
        if tuple(layer.pool_size) != (2, 2, 2) or tuple(layer.strides) != (2, 2, 2):
            raise ModelError(f"{layer.name}: only 2x2x2 pooling with stride 2 has a builtin form")
        return BuiltinMaxPool3D(name=layer.name)
    # Returning the layer itself shares its weights: the export graph is the
    # trained model, not a copy that could drift.
    return layer


def _probabilities_activation(model, target=None):
    """The activation that turns the model's output into probabilities (shared with `predict`)."""
    return output_activation(model, target) or "linear"


def serving_model(model, input_shape, builtin_pooling=False, target=None):
    """The export graph: `image` -> model -> `probabilities`, same weights.

    Args:
        model: a bratskeras keras.Model.
        input_shape: (D, H, W, C) of the exported input; sizes may be None
            where the model allows it. The batch is always dynamic.
        builtin_pooling: replace MaxPooling3D by BuiltinMaxPool3D and instance
            norm by BuiltinInstanceNormalization (LiteRT).
        target: the run's training target (targets.TARGETS), which decides
            the activation; None: the output channels decide
            (model_setup.output_activation).

    Returns:
        keras.Model (batch, D, H, W, C) -> (batch, D, H, W, classes)
        probabilities, named layers "image" and "probabilities".
    """
    image = keras.Input(shape=input_shape, name=INPUT_NAME)
    if builtin_pooling:
        logits = keras.models.clone_model(model, input_tensors=image,
                                          clone_function=_builtin_layer).outputs[0]
    else:
        logits = model(image)
    probabilities = keras.layers.Activation(
        _probabilities_activation(model, target), dtype="float32", name=OUTPUT_NAME
    )(logits)
    return keras.Model(image, probabilities, name=model.name)


def resolve_input_shape(model, input_shape=None, static=False):
    """The (D, H, W, C) to export: the model's own, --input-shape, or a default.

    Raises:
        ModelError: wrong length, a channel count or static size that differs
            from the model's.
    """
    own = tuple(model.inputs[0].shape[1:])
    if input_shape is None:
        shape = own
    else:
        shape = tuple(None if s is None else int(s) for s in input_shape)
        if len(shape) != 4:
            raise ModelError(f"input shape must be (D, H, W, C), got {shape}")
        for given, fixed in zip(shape, own):
            if fixed is not None and given != fixed:
                raise ModelError(f"{model.name} was built for input {own}; "
                                 f"input shape {shape} does not fit it")
    if static:
        shape = tuple(d if s is None else s for s, d in zip(shape[:3], DEFAULT_STATIC_SPATIAL)) + shape[3:]
    return shape


def _check_shape(input_shape):
    """(1, D, H, W, C) of the random check volume for an exported input shape."""
    spatial = tuple(c if s is None else s for s, c in zip(input_shape[:3], CHECK_SPATIAL))
    return (1, *spatial, input_shape[3])


def _signature(input_shape):
    import tensorflow as tf

    return [tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)]


# ----------------------------------------------------------------- writers


def write_saved_model(model, path, input_shape, builtin_pooling=False, target=None, contract=None):
    """Writes a TF SavedModel with signature `serving_default`: image -> probabilities.

    Loads with `tf.saved_model.load` alone: no bratskeras, no custom objects.
    `contract` (if any) is a tracked asset, assets/bratskeras_contract.json
    (bratskeras.data.contract.saved_model_asset).
    """
    graph = serving_model(model, input_shape, builtin_pooling, target)
    archive = keras.export.ExportArchive()
    archive.track(graph)
    archive.add_endpoint(
        name=SIGNATURE_KEY,
        fn=lambda image: {OUTPUT_NAME: graph(image, training=False)},
        input_signature=_signature(input_shape),
    )
    with tempfile.TemporaryDirectory() as workdir:
        if contract is not None:
            # ExportArchive.track takes layers and lookup-table resources only, not an Asset; its
            # root object (private in Keras 3.15, pinned <3.16) is what tf.saved_model.save writes,
            # so an attribute on it is saved with the model. tests/test_contract.py loads it back.
            root = getattr(archive, "_tf_trackable", None)
            if root is None:
                raise ExportError(f"{path}: this Keras' ExportArchive has no _tf_trackable; the SavedModel "
                                  "cannot carry its input contract (bratskeras supports keras<3.16)")
            setattr(root, contracts.CONTRACT_KEY, contracts.saved_model_asset(contract, workdir))
        archive.write_out(str(path), verbose=False)


def write_tflite(model, path, input_shape, quantize="none", target=None, contract=None):
    """Writes a LiteRT flatbuffer with builtin operators only, `contract` (if any) in its metadata.

    Converted from a SavedModel of the builtin-pooling export graph; the
    converter is allowed TFLITE_BUILTINS only, so any op that would need Flex
    fails the conversion instead of shipping a model devices cannot run.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as workdir:
        write_saved_model(model, workdir, input_shape, builtin_pooling=True, target=target)
        converter = tf.lite.TFLiteConverter.from_saved_model(workdir, signature_keys=[SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        with filtered_stderr(LITERT_NOISE):
            flatbuffer = converter.convert()
    if contract is not None:
        flatbuffer = contracts.with_tflite_contract(flatbuffer, contract, path)
    Path(path).write_bytes(flatbuffer)


def write_onnx(model, path, input_shape, target=None, contract=None):
    """Writes an ONNX model (Keras' exporter, tf2onnx underneath), `contract` (if any) in its metadata_props.

    Input `image`, output `probabilities`, free dimensions named as ONNX_DIMENSIONS (name_onnx_io).
    """
    import onnx

    graph = serving_model(model, input_shape, target=target)
    with warnings.catch_warnings():
        # Keras' tf2onnx patch for NumPy 2 (keras/src/export/tf2onnx_lib.py) probes np.object, which
        # NumPy answers with a FutureWarning about a future np.object: nothing a user can act on.
        warnings.filterwarnings("ignore", message=r"In the future `np\.object`", category=FutureWarning)
        graph.export(str(path), format="onnx", input_signature=_signature(input_shape), verbose=False)
    proto = onnx.load(os.fspath(path))
    name_onnx_io(proto.graph)
    onnx.save(proto, os.fspath(path))
    if contract is not None:
        contracts.write_onnx(path, contract)


def name_onnx_io(graph):
    """Names an ONNX graph's input `image`, its output `probabilities` and their free dimensions, in place.

    tf2onnx names the output after the function's last op (`Identity:0`) and
    free dimensions `unk__<n>`; the other formats' signatures say `image` and
    `probabilities`. Free dimensions become ONNX_DIMENSIONS in axis order:
    (batch, depth, height, width, C) in, (batch, depth, height, width, K) out
    (the output has the input's spatial size, so the shared names are true).

    Args:
        graph: an onnx GraphProto with one input and one output.
    """
    renames = {graph.input[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = renames.get(value.name, value.name)
    for value in (graph.input[0], graph.output[0]):
        value.name = renames[value.name]
        for dim, name in zip(value.type.tensor_type.shape.dim, ONNX_DIMENSIONS):
            if not dim.HasField("dim_value"):
                dim.dim_param = name


def write_keras(model, path, contract=None):
    """Writes an inference `.keras`: the same layers, uncompiled, no optimizer state; `contract` inside."""
    if Path(path).suffix != ".keras":
        raise ConfigError(f"{path}: a keras export needs a .keras file name")
    save_model(inference_model(model), path, contract)


# ---------------------------------------------------------------- runtimes


def run_saved_model(path, image):
    """Runs `serving_default` of a SavedModel: (1, D, H, W, C) -> probabilities."""
    return SavedModelPredictor(path)(image)


def litert_interpreter(path):
    """ai-edge-litert's interpreter (extra `litert`, checked before the export), a thread per core.

    The standalone runtime has no Flex delegate, as on devices. (TensorFlow's
    bundled tf.lite.Interpreter is deprecated and is not used.)
    """
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)


def tflite_ops(path):
    """Sorted operator names in a LiteRT model (custom ops such as FlexMaxPool3D included)."""
    interpreter = litert_interpreter(path)
    return tuple(sorted({op["op_name"] for op in interpreter._get_ops_details()}))


def run_tflite(path, image):
    """Runs a LiteRT model's `serving_default` signature on `image`."""
    return LiteRtPredictor(path, interpreter=litert_interpreter(path))(image)


def run_onnx(path, image):
    """Runs an ONNX model in onnxruntime (CPU)."""
    return OnnxPredictor(path)(image)


def run_keras(path, image):
    """Reloads a `.keras` with safe_mode=True and predicts `image`."""
    reloaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    return keras.ops.convert_to_numpy(reloaded(image, training=False))


# ------------------------------------------------------------------ driver


def default_output(source_path, model, format, quantize, pretrained_name=None):
    """Where an export goes when --out is not given.

    saved_model: saved_models/<model name>/ (TF Serving's model base path);
    other formats: beside the source, e.g. runs/x/best.float16.tflite. A
    shipped model ("pretrained:NAME", `pretrained_name` NAME) is named after
    itself, in the working folder: saved_models/NAME/ or NAME.float16.tflite,
    never inside the installed package.
    """
    if format == "saved_model":
        return SAVED_MODELS_DIR / (pretrained_name or model.name.replace("_", "-"))
    if source_path is None:
        raise ConfigError(f"--out is needed to export an in-memory model as {format}")
    if pretrained_name is not None:
        stem = Path(pretrained_name)
    else:
        stem = source_path / "best" if source_path.is_dir() else source_path.with_suffix("")
    suffix = {"tflite": ".tflite", "onnx": ".onnx", "keras": ".inference.keras"}[format]
    tag = "" if quantize == "none" else f".{quantize}"
    return stem.with_name(stem.name + tag + suffix)


def next_version(base):
    """1 + the largest integer version directory under `base` (1 when none)."""
    versions = [int(p.name) for p in Path(base).glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _target_path(format, out, version):
    if format != "saved_model":
        if version is not None:
            raise ConfigError("--version applies to --format saved_model only")
        return Path(out)
    version = next_version(out) if version is None else int(version)
    if version < 1:
        raise ConfigError(f"--version must be a positive integer, got {version}")
    return Path(out) / str(version)


def _size_bytes(path):
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _check_arguments(format, quantize):
    """Refuses a bad format or quantization, or a format whose optional extra is missing, before any work."""
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantization {quantize!r}; expected one of: {', '.join(QUANTIZE)}")
    if quantize != "none" and format != "tflite":
        raise ConfigError(f"--quantize {quantize} applies to --format tflite only")
    extra = FORMAT_TABLE[format][0]
    if extra is not None:
        require_extra(extra, f"export as {format}")


def export_model(source, format, out=None, version=None, quantize="none", input_shape=None,
                 overwrite=False, seed=0, tolerance=None, contract=None, announce=None):
    """Exports `source` in `format`, reloads the artefact and checks it against Keras.

    Args:
        source: a `.keras` file, a run directory with `best.keras`,
            "pretrained:NAME" (a shipped model) or a keras.Model.
        format: "saved_model", "tflite", "onnx" or "keras".
        out: output path; saved_model: the model base directory that holds
            integer versions (default saved_models/<model name>, or
            saved_models/NAME for pretrained:NAME); others: the file (default
            beside the source; NAME.<format> for pretrained:NAME).
        version: saved_model version; default one above the highest present.
        quantize: "none", "float16" or "dynamic-int8" (tflite only).
        input_shape: (D, H, W, C) to export; default the model's own, with
            tflite's dynamic sizes set to DEFAULT_STATIC_SPATIAL.
        overwrite: replace an existing artefact of the same format, once the
            new one has passed its check (never a folder or file of another
            kind; bratskeras.platform.outputs).
        seed: seed of the standard-normal check volume.
        tolerance: max abs difference allowed (default TOLERANCES[quantize]).
        contract: the model's bratskeras.data.contract.InputContract; default the
            source's own (its run's config.json or the contract embedded in
            its .keras). A source with none exports without one (predict then
            guesses from channel counts, as for any model without one).
        announce: called with one line as each stage starts ("converting to
            LiteRT...", "checking on a 64x64x64 input..."); default silent.

    Returns:
        ExportReport.

    Raises:
        ConfigError: bad format, quantization or flag combination, or the
            format's optional extra is not installed (before any work).
        ModelError: source not a bratskeras model, shape not exportable, or a
            contract that does not fit the model.
        OutputExistsError: the artefact exists and overwrite is False, or the
            path holds something that is not this format's artefact.
        ExportError: the artefact differs from Keras above tolerance or its
            contract does not read back equal (it is not written; an
            existing one is kept).
    """
    _check_arguments(format, quantize)
    announce = announce or _silent
    if out is not None:
        # A folder that cannot be written is refused before the model loads and converts.
        outputs.ensure_writable_folder(_output_folder(format, Path(out)))
    source_path = None if isinstance(source, keras.Model) else Path(pretrained.resolve(source))
    model = load_model(source_path) if source_path is not None else source
    check_segmentation_model(model, model.name)
    contract, contract_source = _source_contract(source_path, model, contract)
    # The contract's target decides the activation (4 channels are classic classes or a task's regions).
    target = None if contract is None else contract.target
    out = Path(out) if out is not None else default_output(source_path, model, format, quantize,
                                                           pretrained.pretrained_name(source))
    # One writer per output folder (outputs.claim_folder): two exports never pick the same version.
    with outputs.claim_folder(_output_folder(format, out), "export"):
        path = _target_path(format, out, version)
        kind = outputs.KINDS[format]
        # Refused before the minutes a conversion can take; checked again before the rename.
        outputs.refuse_existing(path, overwrite, kind)
        shape = resolve_input_shape(model, input_shape, static=format == "tflite")
        writers = {
            "saved_model": lambda tmp: write_saved_model(model, tmp, shape, target=target, contract=contract),
            "tflite": lambda tmp: write_tflite(model, tmp, shape, quantize, target=target, contract=contract),
            "onnx": lambda tmp: write_onnx(model, tmp, shape, target=target, contract=contract),
            "keras": lambda tmp: write_keras(model, tmp, contract),
        }
        tolerance = TOLERANCES[quantize] if tolerance is None else float(tolerance)

        def write(tmp):
            verb = "converting to" if format in ("tflite", "onnx") else "writing"
            size = f" at {_describe(shape)}" if None not in shape[:3] else ""
            announce(f"{verb} {FORMAT_TABLE[format][1]}{size}...")
            # A full disk inside TensorFlow (ResourceExhaustedError) is an OSError naming `path`.
            with outputs.tensorflow_file_errors():
                writers[format](tmp)

        def check(tmp):
            report = _verify(model, Path(tmp), path, format, shape, seed, tolerance, quantize, target, contract,
                             announce)
            return dataclasses.replace(report, contract_source=contract_source if contract is not None else None)

        report = outputs.write_artefact(path, write, check, kind, overwrite)
    return dataclasses.replace(report, path=path)


def _silent(line):
    """The default `announce` of export_model: the library prints nothing."""


def _describe(shape):
    """'DxHxW' of a static (D, H, W, C) shape, e.g. '64x64x64'."""
    return "x".join(str(s) for s in shape[:3])


def _litert_twin_shape(model, input_shape):
    """(D, H, W, C) of the LiteRT twin that checks a LiteRT export too large to run (None: check it as it is).

    Only a size-free model has a twin: a model with fixed sizes has no other size to convert at.
    """
    spatial = input_shape[:3]
    if any(s is not None for s in model.inputs[0].shape[1:4]):
        return None
    if np.prod(spatial) <= np.prod(LITERT_CHECK_SPATIAL):
        return None
    return tuple(min(s, c) for s, c in zip(spatial, LITERT_CHECK_SPATIAL)) + tuple(input_shape[3:])


def _output_folder(format, out):
    """The folder an export writes into: the SavedModel base (its versions' parent), else the file's folder."""
    return out if format == "saved_model" else out.parent


def _source_contract(source_path, model, given):
    """(contract or None, where it came from) for an export: `given`, else the source's own."""
    from bratskeras.predict.model_setup import GUESSED, input_multiple, setup_for

    if given is not None:
        # Checked against the model's channels as predict would check it.
        setup_for(model.inputs[0].shape[1:], model.outputs[0].shape[-1], given, "given", model.name,
                  input_multiple(model))
        return given, "given"
    if source_path is None:
        return None, None
    contract, source = keras_contract(source_path, model)
    return (None, None) if source == GUESSED else (contract, source)


def _verify(model, written, path, format, input_shape, seed, tolerance, quantize, target=None, contract=None,
            announce=_silent):
    """Runs the artefact at `written` and Keras on one random volume, and reads its contract back.

    A LiteRT export larger than LITERT_CHECK_SPATIAL of a size-free model is
    run through its twin (_litert_twin_shape): the same graph, weights and
    converter settings at the smaller size; the artefact itself is still
    scanned for Flex operators and has its contract read back.

    Returns:
        ExportReport (its path is `written`; the caller names the target).

    Raises:
        ExportError: naming the target `path`, when the artefact is off by more
            than `tolerance`, needs Flex operators, or its contract does not
            read back equal to `contract` (a SavedModel's must also be a
            tracked asset).
    """
    kept = "; the existing one is kept" if path.exists() else ""
    twin_shape = _litert_twin_shape(model, input_shape) if format == "tflite" else None
    found_ops = tflite_ops(written) if format == "tflite" else ()
    flex = [op for op in found_ops if op.startswith("Flex")]
    check_shape = _check_shape(twin_shape or input_shape)
    diff = float("inf")
    if not flex and twin_shape is not None:
        announce(f"checking on a {_describe(twin_shape)} input: converting a LiteRT twin of the "
                 f"{_describe(input_shape)} model at that size...")
        with tempfile.TemporaryDirectory() as workdir:
            twin = Path(workdir) / "twin.tflite"
            write_tflite(model, twin, twin_shape, quantize, target=target)
            announce(f"checking on a {_describe(twin_shape)} input: LiteRT against Keras...")
            diff = _max_abs_diff(model, twin, format, twin_shape, check_shape, seed, target)
    elif not flex:
        announce(f"checking on a {_describe(check_shape[1:])} input: {FORMAT_TABLE[format][1]} against Keras...")
        diff = _max_abs_diff(model, written, format, input_shape, check_shape, seed, target)
    if flex or not diff <= tolerance:
        reason = f"Flex ops {flex}" if flex else f"max abs diff {diff:.3g} > tolerance {tolerance:g}"
        raise ExportError(f"{path}: {format} export failed its check ({reason}); not written{kept}")
    found = _read_back_contract(written, format)
    if found != contract:
        raise ExportError(f"{path}: {format} export failed its check (its input contract reads back as "
                          f"{found}, not {contract}); not written{kept}")
    return ExportReport(path=written, format=format, quantize=quantize, size_bytes=_size_bytes(written),
                        max_abs_diff=diff, tolerance=tolerance, check_shape=check_shape, ops=found_ops,
                        twin=twin_shape is not None, contract=found)


def _max_abs_diff(model, artefact, format, input_shape, check_shape, seed, target):
    """max |artefact - Keras| on a standard-normal volume of `check_shape` (1, D, H, W, C).

    `input_shape` is the (D, H, W, C) the artefact was exported with.
    """
    image = np.random.default_rng(seed).standard_normal(check_shape).astype("float32")
    if format == "keras":
        expected = keras.ops.convert_to_numpy(model(image, training=False))
    else:
        # LiteRT is compared with its own export graph run in Keras (same
        # weights, builtin pooling and instance norm): that isolates the
        # converter. The training model's fused instance norm is itself
        # 6.8e-4 from a float64 evaluation at 128^3 while this graph is
        # 5e-6 from it (trained lightweight-unet, measured), so comparing with
        # it would only measure the fused kernel's float32 round-off.
        graph = serving_model(model, input_shape, builtin_pooling=format == "tflite", target=target)
        expected = keras.ops.convert_to_numpy(graph(image, training=False))
    runners = {"saved_model": run_saved_model, "tflite": run_tflite, "onnx": run_onnx, "keras": run_keras}
    actual = runners[format](artefact, image)
    return float(np.max(np.abs(actual - expected)))


def _read_back_contract(written, format):
    """The contract the written artefact carries (None if none), or a ModelError's text for a damaged one.

    A SavedModel's contract file counts only as a tracked asset (part of the
    model: TensorFlow's loaders, TF Serving's included, list it), so it is
    loaded once more to see it.
    """
    try:
        found = contracts.read_contract(written, format)
    except ModelError as error:
        return f"damaged ({error})"
    if format == "saved_model" and found is not None:
        tracked = SavedModelPredictor(written).asset_path(contracts.CONTRACT_KEY)
        expected = written / "assets" / contracts.CONTRACT_FILE
        if tracked is None or not os.path.samefile(tracked, expected):
            return f"an untracked {contracts.CONTRACT_FILE} (tracked: {tracked})"
    return found
