"""Writers of the SavedModel, ONNX and .keras formats (TensorFlow's and Keras' own exporters), and their runners.

Each writer has the signature of bratskeras.export.formats.ExportFormat.write:
(model, path, input_shape, quantize, target, contract), input_shape
(D, H, W, C) with None where the size stays free; `quantize` is "none" for
these formats (only LiteRT quantizes: bratskeras.export.litert). Each puts
the model's input contract (bratskeras.data.contract) where its format keeps
it. The deployment formats write the export graph (bratskeras.export.graph);
the .keras keeps the model as trained (minus optimizer state).
"""

import os
import tempfile
import warnings
from pathlib import Path

import keras

from bratskeras.core.errors import ConfigError, ExportError
from bratskeras.data import contract as contracts
from bratskeras.data import model_files
from bratskeras.export.graph import input_signature, serving_model
from bratskeras.models.saving import inference_model, save_model
from bratskeras.predict.runtimes import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY, SavedModelPredictor

# Names of the ONNX input's and output's free dimensions, in axis order (the channels are fixed).
ONNX_DIMENSIONS = ("batch", "depth", "height", "width")


# ------------------------------------------------------------- SavedModel


def write_saved_model(model, path, input_shape, quantize="none", target=None, contract=None):
    """Writes a TF SavedModel with signature `serving_default`: image -> probabilities.

    Loads with `tf.saved_model.load` alone: no bratskeras, no custom objects.
    `contract` (if any) is a tracked asset, assets/bratskeras_contract.json
    (bratskeras.data.model_files.saved_model_asset).
    """
    save_graph(serving_model(model, input_shape, target=target), path, input_shape, contract)


def save_graph(graph, path, input_shape, contract=None):
    """Writes the export `graph` (bratskeras.export.graph.serving_model) as a SavedModel at `path`."""
    archive = keras.export.ExportArchive()
    archive.track(graph)
    archive.add_endpoint(
        name=SIGNATURE_KEY,
        fn=lambda image: {OUTPUT_NAME: graph(image, training=False)},
        input_signature=input_signature(input_shape),
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
            setattr(root, contracts.CONTRACT_KEY, model_files.saved_model_asset(contract, workdir))
        archive.write_out(str(path), verbose=False)


def untracked_contract_problem(folder):
    """Why a SavedModel's contract file is not part of the model (None when it is a tracked asset).

    Only a tracked asset counts: TensorFlow's loaders (TF Serving's included)
    list it, so the model is loaded once more to see it.
    """
    tracked = SavedModelPredictor(folder).asset_path(contracts.CONTRACT_KEY)
    expected = Path(folder) / "assets" / contracts.CONTRACT_FILE
    if tracked is None or not os.path.samefile(tracked, expected):
        return f"an untracked {contracts.CONTRACT_FILE} (tracked: {tracked})"
    return None


# ------------------------------------------------------------------- ONNX


def write_onnx(model, path, input_shape, quantize="none", target=None, contract=None):
    """Writes an ONNX model (Keras' exporter, tf2onnx underneath), `contract` (if any) in its metadata_props.

    Input `image`, output `probabilities`, free dimensions named as ONNX_DIMENSIONS (name_onnx_io).
    """
    import onnx

    graph = serving_model(model, input_shape, target=target)
    with warnings.catch_warnings():
        # Keras' tf2onnx patch for NumPy 2 (keras/src/export/tf2onnx_lib.py) probes np.object, which
        # NumPy answers with a FutureWarning about a future np.object: nothing a user can act on.
        warnings.filterwarnings("ignore", message=r"In the future `np\.object`", category=FutureWarning)
        graph.export(str(path), format="onnx", input_signature=input_signature(input_shape), verbose=False)
    proto = onnx.load(os.fspath(path))
    name_onnx_io(proto.graph)
    onnx.save(proto, os.fspath(path))
    if contract is not None:
        model_files.write_onnx(path, contract)


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


# ----------------------------------------------------------------- .keras


def write_keras(model, path, input_shape=None, quantize="none", target=None, contract=None):
    """Writes an inference `.keras`: the same layers, uncompiled, no optimizer state; `contract` inside.

    The model is kept as trained: its own input shape and outputs (`input_shape` and `target` do not apply).
    """
    if Path(path).suffix != ".keras":
        raise ConfigError(f"{path}: a keras export needs a .keras file name")
    save_model(inference_model(model), path, contract)


def run_keras(path, image):
    """Reloads a `.keras` with safe_mode=True and predicts `image`."""
    reloaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    return keras.ops.convert_to_numpy(reloaded(image, training=False))

