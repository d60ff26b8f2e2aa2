"""The export formats and quantization modes as tables: one row carries everything about its format.

A row of FORMATS (`ExportFormat`) says what `bratskeras export --format NAME`
writes and how: its name in messages, its default file-name ending (or a
versioned folder), the optional extra it needs (that of the runtime that
runs it, bratskeras.predict.runtimes.RUNTIMES), its `ArtefactKind` (what
--overwrite may replace), its writer, how the artefact is run for the check
against Keras, and the few ways formats differ in the export flow (static
sizes, builtin operators, quantization). Adding a format is adding a row;
the export flow (bratskeras.export.exporter), its check
(bratskeras.export.verification) and the CLI read the rows, never a format's
name.

This module imports no TensorFlow, so the CLI builds its click.Choice options
and help from it and `bratskeras --help` stays instant: writers and the Keras
runner are named by module and function (`Deferred`) and imported when called.
"""

import dataclasses
import importlib
import os
from typing import Callable

from bratskeras.data.contract import CONTRACT_FILE
from bratskeras.data.model_files import KERAS_ARCHIVE_CONFIG
from bratskeras.platform.artefacts import ArtefactKind, magic_file_kind, suffix_file_kind, zip_archive_kind
from bratskeras.predict.runtimes import RUNTIMES, Runtime


@dataclasses.dataclass(frozen=True)
class Deferred:
    """A function named by its module and name, imported when called (the rows stay free of TensorFlow).

    Looked up at each call, so a test that replaces the module's function is seen.
    """

    module: str
    name: str

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Quantization:
    """A tflite weight quantization (`--quantize`).

    Attributes:
        name: the --quantize value.
        weights: the weights' type in help texts ("float32" for "none").
        tolerance: max |artefact - Keras| allowed by default. float16 and
            dynamic-range int8 weights (with int8 activations inside some
            kernels) are approximations by design; their bounds only catch
            broken graphs.
        optimize: the converter quantizes (tf.lite.Optimize.DEFAULT).
        weight_type: the tf dtype name the weights are stored in, or None for
            the converter's choice (int8 under `optimize`).
    """

    name: str
    weights: str
    tolerance: float
    optimize: bool = False
    weight_type: str | None = None


QUANTIZATIONS = {q.name: q for q in (
    Quantization("none", "float32", 1e-4),
    Quantization("float16", "float16", 1e-2, optimize=True, weight_type="float16"),
    Quantization("dynamic-int8", "dynamic-int8", 0.25, optimize=True),
)}


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format, everything about it (a row of FORMATS).

    Attributes:
        name: the --format value and the name in messages about the flag.
        title: its name in progress lines ("converting to LiteRT...").
        kind: what an existing artefact of it looks like (--overwrite).
        write: callable(model, path, input_shape, quantize, target, contract)
            writing the artefact at `path`; input_shape (D, H, W, C).
        run: callable(path, image) -> probabilities: the written artefact
            run in its own runtime on float32 (1, D, H, W, C).
        runtime: the predict runtime that runs it (its extra is the
            format's), or None when Keras reloads it.
        suffix: the default file name's ending; None: a folder of integer
            versions (TF Serving's model base path).
        converts: the writer converts the graph (progress says "converting
            to"), rather than writing it as it is ("writing").
        quantizes: takes --quantize other than "none".
        static_spatial: needs static spatial sizes (a size-free model gets
            the training patch, core.defaults.PATCH_SIZE, unless
            --input-shape says otherwise: bratskeras.export.graph).
        builtin_ops: written from the export graph with builtin pooling and
            instance norm (bratskeras.export.graph), and so checked against it.
        serves_probabilities: holds the export graph (probabilities out); a
            False row keeps the model as trained and is checked against it.
        list_ops: callable(path) -> operator names, scanned for Flex ones;
            None when the format has no such operators.
        twin_shape: callable(model, input_shape) -> (D, H, W, C) of a smaller
            twin to check instead of the artefact itself, or None.
        contract_problem: callable(path) -> words saying why the contract
            read back does not count as part of the artefact, or None.
    """

    name: str
    title: str
    kind: ArtefactKind
    write: Callable
    run: Callable
    runtime: Runtime | None = None
    suffix: str | None = None
    converts: bool = False
    quantizes: bool = False
    static_spatial: bool = False
    builtin_ops: bool = False
    serves_probabilities: bool = True
    list_ops: Callable | None = None
    twin_shape: Callable | None = None
    contract_problem: Callable | None = None

    @property
    def extra(self):
        """The optional extra the format needs (bratskeras.platform.extras.EXTRAS), or None."""
        return None if self.runtime is None else self.runtime.extra

    @property
    def versioned(self):
        """The artefact is a version folder under a model base folder, not a file."""
        return self.suffix is None

    @property
    def action(self):
        """The progress line's verb for this format's writer."""
        return "converting to" if self.converts else "writing"

    @property
    def cli_help(self):
        """The format in --format's help: its name, and the extra it needs."""
        return self.name if self.extra is None else f"{self.name} (extra {self.extra})"


# The entries of a SavedModel folder that export writes (TensorFlow's layout), and what its assets may
# hold: the input contract alone.
SAVED_MODEL_ENTRIES = {"saved_model.pb", "variables", "assets", "fingerprint.pb"}
SAVED_MODEL_ASSETS = {CONTRACT_FILE}


def _saved_model_problem(path):
    """None for a SavedModel folder as export writes it: saved_model.pb, variables/, assets/ with our contract."""
    if os.path.islink(path) or not os.path.isdir(path):
        return "not a folder"
    entries = set(os.listdir(path))
    if "saved_model.pb" not in entries or not os.path.isdir(os.path.join(path, "variables")):
        return "no saved_model.pb and variables/"
    foreign = sorted(entries - SAVED_MODEL_ENTRIES)
    foreign += [f"variables/{e}" for e in sorted(os.listdir(os.path.join(path, "variables")))
                if not e.startswith("variables.")]
    assets = os.path.join(path, "assets")
    if os.path.isdir(assets):
        foreign += [f"assets/{e}" for e in sorted(set(os.listdir(assets)) - SAVED_MODEL_ASSETS)]
    if foreign:
        return f"it holds entries export never writes: {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}"
    return None


_WRITERS = "bratskeras.export.writers"
_LITERT = "bratskeras.export.litert"

FORMATS = {row.name: row for row in (
    ExportFormat(
        "saved_model", "SavedModel", ArtefactKind("SavedModel folder", True, _saved_model_problem),
        write=Deferred(_WRITERS, "write_saved_model"), run=RUNTIMES["saved_model"].run,
        runtime=RUNTIMES["saved_model"],
        # Only a tracked asset is part of the model (TensorFlow's loaders, TF Serving's included, list it).
        contract_problem=Deferred(_WRITERS, "untracked_contract_problem"),
    ),
    ExportFormat(
        # A LiteRT flatbuffer carries the identifier "TFL3" at byte 4.
        "tflite", "LiteRT", magic_file_kind("LiteRT model", 4, b"TFL3", "a LiteRT flatbuffer"),
        write=Deferred(_LITERT, "write_tflite"), run=RUNTIMES["tflite"].run, runtime=RUNTIMES["tflite"],
        suffix=".tflite", converts=True, quantizes=True, static_spatial=True, builtin_ops=True,
        list_ops=Deferred(_LITERT, "tflite_ops"), twin_shape=Deferred(_LITERT, "litert_twin_shape"),
    ),
    ExportFormat(
        # ONNX is a bare protobuf without a magic number: the suffix is all there is.
        "onnx", "ONNX", suffix_file_kind("ONNX model", ".onnx"),
        write=Deferred(_WRITERS, "write_onnx"), run=RUNTIMES["onnx"].run, runtime=RUNTIMES["onnx"],
        suffix=".onnx", converts=True,
    ),
    ExportFormat(
        "keras", ".keras", zip_archive_kind(".keras model", KERAS_ARCHIVE_CONFIG, "a Keras config.json"),
        write=Deferred(_WRITERS, "write_keras"), run=Deferred(_WRITERS, "run_keras"),
        suffix=".inference.keras", serves_probabilities=False,
    ),
)}


def names_where(test):
    """'a or b': the names of the formats whose row passes `test`, for messages about a flag."""
    return " or ".join(name for name, row in FORMATS.items() if test(row))


def short_number(value):
    """A tolerance as help texts write it: 1e-4, 1e-2, 0.25."""
    return f"{value:.0e}".replace("e-0", "e-") if value < 0.1 else f"{value:g}"
