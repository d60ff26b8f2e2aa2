"""Where each model format keeps the input contract, and reading and writing it there: `MODEL_FILES`.

    format        where the contract lives (all under the name CONTRACT_KEY)
    .keras        metadata.json, key "bratskeras_contract" (the archive's own
                  metadata file, which Keras writes and never reads back)
    SavedModel    assets/bratskeras_contract.json, a tracked tf.saved_model.Asset
    ONNX          ModelProto.metadata_props["bratskeras_contract"]
    LiteRT        the flatbuffer's metadata "bratskeras_contract" (a buffer of JSON)

One row per format says how a path of that format is recognised, where its
contract lives (for messages) and how it is read; the writers below are
called by models.saving and export's writers. Reading a `.keras` or
SavedModel contract needs only zipfile and json; LiteRT needs the flatbuffer
schema module TensorFlow ships (`_tflite_schema`), ONNX the onnxruntime that
runs the model.
"""

import importlib
import json
import os
import zipfile
from dataclasses import dataclass

from bratskeras import pretrained
from bratskeras.core.errors import ModelError
from bratskeras.core.run_folder import RunFolder
from bratskeras.data.contract import CONTRACT_FILE, CONTRACT_KEY, InputContract

KERAS = "keras"  # a .keras file or a run folder (its best.keras): what Keras loads, and what unknown paths are read as
SAVED_MODEL_MARKER = "saved_model.pb"
_KERAS_METADATA = "metadata.json"
# The entry every .keras archive holds (Keras' own model config): what tells a .keras model from another zip.
KERAS_ARCHIVE_CONFIG = "config.json"
_TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class ModelFile:
    """One model format and its contract: a row of MODEL_FILES (export.formats.FORMATS and
    predict.runtimes.RUNTIMES name the formats the same way).

    Attributes:
        name: the format's name.
        location: where the contract is stored, for messages.
        read: path -> the contract's JSON text, or None when the model carries none.
        suffix: a file of this format ends so (lower case), or None.
        marker: a folder of this format holds this file, or None.
        exported: run by its own runtime (predict.runtimes), not loaded by
            Keras with its run's config.json.
    """

    name: str
    location: str
    read: object
    suffix: str | None = None
    marker: str | None = None
    exported: bool = True


# ----------------------------------------------------------------- which format


def model_format(path):
    """The format of a model path: "keras" (a file or a run directory), "saved_model", "onnx" or "tflite".

    A folder holding its row's marker (saved_model.pb) is that format, any
    other folder a run directory; files go by their row's suffix, and anything
    unknown is read as `.keras` (whose loader names the file when it is not one).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        marked = [row.name for row in MODEL_FILES.values()
                  if row.marker and os.path.isfile(os.path.join(path, row.marker))]
        return marked[0] if marked else KERAS
    suffix = os.path.splitext(path)[1].lower()
    return next((row.name for row in MODEL_FILES.values() if row.suffix == suffix), KERAS)


def read_contract(path, format=None):
    """The contract stored in a model file, or None when it carries none.

    Args:
        path: a `.keras` file or run directory (its best.keras), "pretrained:NAME"
            (a shipped run directory), a SavedModel folder, a `.onnx` or a
            `.tflite` file.
        format: one of FORMATS; default `model_format(path)`.

    Raises:
        ModelError: one line naming the file: a damaged contract, or a file
            that cannot be read as its format; an unknown pretrained name.
    """
    path = os.fspath(pretrained.resolve(path))
    format = format or model_format(path)
    text = MODEL_FILES[format].read(path)
    return None if text is None else InputContract.from_json(text, path)


# ---------------------------------------------------------------------- .keras


def _read_keras(path):
    """The contract text in a `.keras` archive's metadata.json (a run folder: its best.keras), or None
    (absent, or not a readable archive)."""
    if os.path.isdir(path):
        path = RunFolder(path).best_model
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read(_KERAS_METADATA))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # not a .keras model at all: loading it says so, naming the file
    if not isinstance(metadata, dict) or CONTRACT_KEY not in metadata:
        return None
    return json.dumps(metadata[CONTRACT_KEY])


def write_keras(path, contract):
    """Stores `contract` in the `.keras` archive at `path`, rewritten through a temporary file.

    metadata.json gains the key CONTRACT_KEY. Not an extra archive entry:
    Keras 3.15 loads archives of more than its 3 entries through an asset
    store that first extracts the whole archive (weights included) into a
    temporary folder; metadata.json keeps the archive Keras' own 3 entries.
    Every other entry is copied unchanged, with its compression.
    """
    from bratskeras.platform.outputs import atomic_path

    path = os.fspath(path)
    with zipfile.ZipFile(path) as source, atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as target:
            for info in source.infolist():
                if info.filename == _KERAS_METADATA:
                    metadata = json.loads(source.read(info))
                    metadata[CONTRACT_KEY] = contract.to_dict()
                    target.writestr(info, json.dumps(metadata))
                    continue
                with source.open(info) as reader, target.open(info, "w") as writer:
                    while chunk := reader.read(1 << 20):
                        writer.write(chunk)


# ------------------------------------------------------------------ SavedModel


def _read_saved_model(folder):
    try:
        with open(os.path.join(folder, "assets", CONTRACT_FILE), "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def saved_model_asset(contract, workdir):
    """A tf.saved_model.Asset of `contract`, its file written in `workdir` as CONTRACT_FILE.

    Tracked by the SavedModel (export.write_saved_model), the file is copied
    into its assets/ under that name and is part of the model: TensorFlow's
    loaders (TF Serving's included) list it, and `tf.saved_model.load` shows
    it as the attribute CONTRACT_KEY.
    """
    import tensorflow as tf

    source = os.path.join(workdir, CONTRACT_FILE)
    with open(source, "w") as stream:
        stream.write(contract.to_json())
    return tf.saved_model.Asset(source)


# ------------------------------------------------------------------------ ONNX


def _read_onnx(path):
    # Through onnxruntime, which predict runs the model in (the onnx package may be absent there);
    # its graph optimisations are skipped, as this session only reads the metadata.
    session = onnx_session(path, optimize=False)
    return session.get_modelmeta().custom_metadata_map.get(CONTRACT_KEY)


def onnx_session(path, optimize=True):
    """An onnxruntime CPU session of `path`; ModelError naming the file if it is no ONNX model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for unreadable models
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path}: not a loadable ONNX model ({first})") from None


def write_onnx(path, contract):
    """Stores `contract` in the ONNX model at `path` as metadata_props[CONTRACT_KEY] (rewritten in place)."""
    import onnx

    model = onnx.load(os.fspath(path))
    kept = [entry for entry in model.metadata_props if entry.key != CONTRACT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, contract.to_json()
    onnx.save(model, os.fspath(path))


# ---------------------------------------------------------------------- LiteRT

# TensorFlow's generated Python module for the LiteRT flatbuffer schema. It is
# private (no stable API), so it is imported here only, with ai-edge-litert's
# copy of the same generated module as the fallback; setup.cfg pins
# tensorflow<2.22, and tests/test_contract.py fails if neither imports.
TFLITE_SCHEMA_MODULES = ("tensorflow.lite.python.schema_py_generated", "ai_edge_litert.schema_py_generated")


def _tflite_schema(path):
    for name in TFLITE_SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ModelError(f"{path}: LiteRT metadata needs the flatbuffer schema module that TensorFlow <2.22 ships "
                     f"({TFLITE_SCHEMA_MODULES[0]}); none of {', '.join(TFLITE_SCHEMA_MODULES)} imports")


def _read_tflite(path):
    with open(path, "rb") as stream:
        data = stream.read()
    if data[4:8] != _TFLITE_IDENTIFIER:
        raise ModelError(f"{path}: not a LiteRT model (no TFL3 identifier)")
    schema = _tflite_schema(path)
    try:
        model = schema.Model.GetRootAs(data, 0)
        for index in range(model.MetadataLength()):
            entry = model.Metadata(index)
            if entry.Name() == CONTRACT_KEY.encode():
                return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    except Exception as error:  # a truncated flatbuffer fails inside the generated reader, any type
        raise ModelError(f"{path}: damaged LiteRT model ({type(error).__name__}: {error})") from None
    return None


def with_tflite_contract(model_bytes, contract, where):
    """The LiteRT flatbuffer `model_bytes` with `contract` as its metadata CONTRACT_KEY.

    The contract's JSON becomes a new buffer and a metadata entry pointing at
    it (TensorFlow's own "min_runtime_version" and "CONVERSION_METADATA" are
    stored the same way); the model is re-packed with the schema's object API,
    as TensorFlow's metadata writers do. On a converted lightweight-unet the
    re-packed buffers kept the converter's alignments and LiteRT gave the
    same outputs to the bit.

    Raises:
        ModelError: a model whose buffers live outside the flatbuffer (> 2 GB),
            which the object API does not re-pack.
    """
    import flatbuffers
    import numpy as np

    schema = _tflite_schema(where)
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    if any(buffer.offset for buffer in model.buffers or ()):
        raise ModelError(f"{where}: a LiteRT model with buffers outside the flatbuffer (over 2 GB) cannot "
                         "carry the input contract")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(contract.to_json().encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = CONTRACT_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != CONTRACT_KEY.encode()] + [entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output())


MODEL_FILES = {row.name: row for row in (
    ModelFile(KERAS, f"the .keras metadata.json, key {CONTRACT_KEY}", _read_keras, suffix=".keras",
              exported=False),
    ModelFile("saved_model", f"the SavedModel's assets/{CONTRACT_FILE}", _read_saved_model,
              marker=SAVED_MODEL_MARKER),
    ModelFile("onnx", f"the ONNX metadata_props, key {CONTRACT_KEY}", _read_onnx, suffix=".onnx"),
    ModelFile("tflite", f"the LiteRT metadata {CONTRACT_KEY}", _read_tflite, suffix=".tflite"),
)}
FORMATS = tuple(MODEL_FILES)
# Where each format stores the contract, for messages.
LOCATIONS = {row.name: row.location for row in MODEL_FILES.values()}
