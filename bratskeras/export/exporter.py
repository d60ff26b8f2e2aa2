"""`bratskeras export`'s flow: a trained model written in one format, checked, and put in place.

Formats: the rows of bratskeras.export.formats.FORMATS (SavedModel, LiteRT,
ONNX, .keras); what each writes and how it is checked lives in its row. The
deployment artefacts hold the export graph (bratskeras.export.graph: input
`image`, output `probabilities`); the `keras` format keeps the model as
trained (minus optimizer state).

A format's optional extra (bratskeras.platform.extras) is checked before any
work, and each stage is announced through export_model's `announce`. Every
artefact carries the model's input contract (bratskeras.data.contract:
modalities, spacing, normalisation, crop, target, task), so `predict` runs it
as it was trained without its run folder.

Each export ends with its check (bratskeras.export.verification): the
artefact run in its own runtime against Keras, its contract read back. The
artefact is written under a temporary name and renamed into place only once
it passes (TF Serving would pick a new version up at once), else
`ExportError` is raised and an existing artefact is left as it was
(bratskeras.platform.outputs.write_artefact).

    >>> report = export_model("runs/exp1", "tflite", input_shape=(128, 128, 128, 4))
    >>> report.max_abs_diff <= report.tolerance
    True
"""

import dataclasses
from pathlib import Path

import keras

from bratskeras import pretrained
from bratskeras.core.errors import ConfigError
from bratskeras.export.formats import FORMATS, QUANTIZATIONS, names_where
from bratskeras.export.graph import resolve_input_shape
from bratskeras.export.verification import describe, silent, verify
from bratskeras.models.saving import check_segmentation_model, load_model
from bratskeras.platform import claims, outputs
from bratskeras.platform.extras import require_extra
from bratskeras.predict.model_setup import keras_contract

# Where a versioned format (SavedModel) goes without --out: TF Serving's model base paths.
SAVED_MODELS_DIR = Path("saved_models")


def default_output(source_path, model, fmt, quantize, pretrained_name=None):
    """Where an export goes when --out is not given.

    A versioned format (saved_model): saved_models/<model name>/ (TF
    Serving's model base path); a file format: beside the source, e.g.
    runs/x/best.float16.tflite (its row's suffix). A shipped model
    ("pretrained:NAME", `pretrained_name` NAME) is named after itself, in the
    working folder: saved_models/NAME/ or NAME.float16.tflite, never inside
    the installed package.
    """
    if fmt.versioned:
        return SAVED_MODELS_DIR / (pretrained_name or model.name.replace("_", "-"))
    if source_path is None:
        raise ConfigError(f"--out is needed to export an in-memory model as {fmt.name}")
    if pretrained_name is not None:
        stem = Path(pretrained_name)
    else:
        stem = source_path / "best" if source_path.is_dir() else source_path.with_suffix("")
    tag = "" if quantize == "none" else f".{quantize}"
    return stem.with_name(stem.name + tag + fmt.suffix)


def next_version(base):
    """1 + the largest integer version directory under `base` (1 when none)."""
    versions = [int(p.name) for p in Path(base).glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1




def _target_path(fmt, out, version):
    """The artefact's path: `out` itself, or for a versioned format its version folder `out`/<version>."""
    if not fmt.versioned:
        if version is not None:
            raise ConfigError(f"--version applies to --format {names_where(lambda row: row.versioned)} only")
        return Path(out)
    version = next_version(out) if version is None else int(version)
    if version < 1:
        raise ConfigError(f"--version must be a positive integer, got {version}")
    return Path(out) / str(version)


def _output_folder(fmt, out):
    """The folder an export writes into: a versioned format's base (its versions' parent), else the file's folder."""
    return out if fmt.versioned else out.parent


def _check_arguments(format, quantize):
    """The FORMATS row of `format`; refuses a bad format or quantization, or a missing extra, before any work."""
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantize!r}; expected one of: {', '.join(QUANTIZATIONS)}")
    fmt = FORMATS[format]
    if quantize != "none" and not fmt.quantizes:
        raise ConfigError(f"--quantize {quantize} applies to --format {names_where(lambda row: row.quantizes)} only")
    if fmt.extra is not None:
        require_extra(fmt.extra, f"export as {format}")
    return fmt


def export_model(source, format, out=None, version=None, quantize="none", input_shape=None,
                 overwrite=False, seed=0, tolerance=None, contract=None, announce=None):
    """Exports `source` in `format`, reloads the artefact and checks it against Keras.

    Args:
        source: a `.keras` file, a run directory with `best.keras`,
            "pretrained:NAME" (a shipped model) or a keras.Model.
        format: a key of FORMATS ("saved_model", "tflite", "onnx", "keras").
        out: output path; saved_model: the model base directory that holds
            integer versions (default saved_models/<model name>, or
            saved_models/NAME for pretrained:NAME); others: the file (default
            beside the source; NAME.<format> for pretrained:NAME).
        version: saved_model version; default one above the highest present.
        quantize: "none", "float16" or "dynamic-int8" (tflite only).
        input_shape: (D, H, W, C) to export; default the model's own, with
            dynamic sizes set to the training patch (core.defaults.PATCH_SIZE)
            for a format that needs static ones (tflite).
        overwrite: replace an existing artefact of the same format, once the
            new one has passed its check (never a folder or file of another
            kind; bratskeras.platform.outputs).
        seed: seed of the standard-normal check volume.
        tolerance: max abs difference allowed (default QUANTIZATIONS[quantize].tolerance).
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
    fmt = _check_arguments(format, quantize)
    announce = announce or silent
    if out is not None:
        # A folder that cannot be written is refused before the model loads and converts.
        outputs.ensure_writable_folder(_output_folder(fmt, Path(out)))
    source_path = None if isinstance(source, keras.Model) else Path(pretrained.resolve(source))
    model = load_model(source_path) if source_path is not None else source
    check_segmentation_model(model, model.name)
    contract, contract_source = _source_contract(source_path, model, contract)
    # The contract's target decides the activation (4 channels are classic classes or a task's regions).
    target = None if contract is None else contract.target
    out = Path(out) if out is not None else default_output(source_path, model, fmt, quantize,
                                                           pretrained.pretrained_name(source))
    # One writer per output folder (claims.claim_folder): two exports never pick the same version.
    with claims.claim_folder(_output_folder(fmt, out), "export"):
        path = _target_path(fmt, out, version)
        # Refused before the minutes a conversion can take; checked again before the rename.
        outputs.refuse_existing(path, overwrite, fmt.kind)
        shape = resolve_input_shape(model, input_shape, static=fmt.static_spatial)
        tolerance = QUANTIZATIONS[quantize].tolerance if tolerance is None else float(tolerance)

        def write(tmp):
            size = f" at {describe(shape)}" if None not in shape[:3] else ""
            announce(f"{fmt.action} {fmt.title}{size}...")
            # A full disk inside TensorFlow (ResourceExhaustedError) is an OSError naming `path`.
            with outputs.tensorflow_file_errors():
                fmt.write(model, tmp, shape, quantize, target, contract)

        def check(tmp):
            report = verify(model, Path(tmp), path, fmt, shape, seed, tolerance, quantize, target, contract,
                            announce)
            return dataclasses.replace(report, contract_source=contract_source if contract is not None else None)

        report = outputs.write_artefact(path, write, check, fmt.kind, overwrite)
    return dataclasses.replace(report, path=path)


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

