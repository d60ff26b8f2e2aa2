"""The check every export ends with: the artefact run in its own runtime against Keras, its contract read back.

The written artefact (still under its temporary name) is loaded in its
format's runtime (bratskeras.export.formats' `run`), run on a standard-normal
volume (the scale of z-scored MRI) and compared with Keras; a LiteRT export
too large to run cheaply is run through a smaller twin (`twin_shape`). Its
input contract is read back and must equal the one written. Any failure is
an ExportError naming the target, and the artefact is not put in place
(bratskeras.platform.outputs.write_artefact).
"""

import dataclasses
import tempfile
from pathlib import Path

import keras
import numpy as np

from bratskeras.core.errors import ExportError, ModelError
from bratskeras.data import model_files
from bratskeras.export.graph import serving_model

# Spatial size of the random check volume where the artefact accepts any size;
# 30 is not a multiple of 4 or 16, so the check also runs the pad/crop path.
CHECK_SPATIAL = (32, 32, 30)


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it matches Keras.

    Attributes:
        path: the artefact (a SavedModel version directory or a file).
        format: a key of bratskeras.export.formats.FORMATS.
        quantize: a key of QUANTIZATIONS ("none" except for a format that quantizes).
        size_bytes: total size on disk.
        max_abs_diff: max |artefact - Keras| on the check volume.
        tolerance: the bound max_abs_diff was held to.
        check_shape: (batch, D, H, W, C) of the check volume.
        ops: operator names in the model (LiteRT only, else empty).
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


def silent(line):
    """The default `announce` of export: the library prints nothing."""


def describe(shape):
    """'DxHxW' of a static (D, H, W, C) shape, e.g. '64x64x64'."""
    return "x".join(str(s) for s in shape[:3])


def check_shape(input_shape):
    """(1, D, H, W, C) of the random check volume for an exported input shape."""
    spatial = tuple(c if s is None else s for s, c in zip(input_shape[:3], CHECK_SPATIAL))
    return (1, *spatial, input_shape[3])


def size_bytes(path):
    """Bytes on disk of a file, or of all files under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verify(model, written, path, fmt, input_shape, seed, tolerance, quantize, target=None, contract=None,
           announce=silent):
    """Runs the artefact at `written` and Keras on one random volume, and reads its contract back.

    A format with a twin (LiteRT: bratskeras.export.litert.litert_twin_shape,
    an export larger than LITERT_CHECK_SPATIAL of a size-free model) is run
    through that twin: the same graph, weights and converter settings at the
    smaller size; the artefact itself is still scanned for Flex operators and
    has its contract read back.

    Args:
        model: the keras.Model exported.
        written: the artefact, under its temporary name.
        path: the target it will be renamed to (named in errors).
        fmt: its row of bratskeras.export.formats.FORMATS.
        input_shape: (D, H, W, C) it was exported with.
        seed: seed of the standard-normal check volume.
        tolerance: max |artefact - Keras| allowed.
        quantize: the quantization it was written with.
        target: the training target that chose the export graph's activation.
        contract: the contract it must carry (None: none).
        announce: called with one progress line per stage.

    Returns:
        ExportReport (its path is `written`; the caller names the target).

    Raises:
        ExportError: naming the target `path`, when the artefact is off by more
            than `tolerance`, needs Flex operators, or its contract does not
            read back equal to `contract` (a SavedModel's must also be a
            tracked asset).
    """
    kept = "; the existing one is kept" if path.exists() else ""
    twin_shape = fmt.twin_shape(model, input_shape) if fmt.twin_shape is not None else None
    found_ops = fmt.list_ops(written) if fmt.list_ops is not None else ()
    flex = [op for op in found_ops if op.startswith("Flex")]
    volume = check_shape(twin_shape or input_shape)
    diff = float("inf")
    if not flex and twin_shape is not None:
        announce(f"checking on a {describe(twin_shape)} input: converting a {fmt.title} twin of the "
                 f"{describe(input_shape)} model at that size...")
        with tempfile.TemporaryDirectory() as workdir:
            twin = Path(workdir) / f"twin{fmt.suffix}"
            fmt.write(model, twin, twin_shape, quantize, target, None)
            announce(f"checking on a {describe(twin_shape)} input: {fmt.title} against Keras...")
            diff = max_abs_diff(model, twin, fmt, twin_shape, volume, seed, target)
    elif not flex:
        announce(f"checking on a {describe(volume[1:])} input: {fmt.title} against Keras...")
        diff = max_abs_diff(model, written, fmt, input_shape, volume, seed, target)
    if flex or not diff <= tolerance:
        reason = f"Flex ops {flex}" if flex else f"max abs diff {diff:.3g} > tolerance {tolerance:g}"
        raise ExportError(f"{path}: {fmt.name} export failed its check ({reason}); not written{kept}")
    found = read_back_contract(written, fmt)
    if found != contract:
        raise ExportError(f"{path}: {fmt.name} export failed its check (its input contract reads back as "
                          f"{found}, not {contract}); not written{kept}")
    return ExportReport(path=written, format=fmt.name, quantize=quantize, size_bytes=size_bytes(written),
                        max_abs_diff=diff, tolerance=tolerance, check_shape=volume, ops=found_ops,
                        twin=twin_shape is not None, contract=found)


def max_abs_diff(model, artefact, fmt, input_shape, volume_shape, seed, target):
    """max |artefact - Keras| on a standard-normal volume of `volume_shape` (1, D, H, W, C).

    `input_shape` is the (D, H, W, C) the artefact was exported with; `fmt` its FORMATS row.
    """
    image = np.random.default_rng(seed).standard_normal(volume_shape).astype("float32")
    if fmt.serves_probabilities:
        # An artefact is compared with its own export graph run in Keras (same
        # weights; for LiteRT builtin pooling and instance norm): that isolates the
        # converter. The training model's fused instance norm is itself
        # 6.8e-4 from a float64 evaluation at 128^3 while the builtin graph is
        # 5e-6 from it (trained lightweight-unet, measured), so comparing with
        # it would only measure the fused kernel's float32 round-off.
        reference = serving_model(model, input_shape, builtin_pooling=fmt.builtin_ops, target=target)
    else:
        reference = model  # a format that keeps the model as trained
    expected = keras.ops.convert_to_numpy(reference(image, training=False))
    actual = fmt.run(artefact, image)
    return float(np.max(np.abs(actual - expected)))


def read_back_contract(written, fmt):
    """The contract the written artefact carries (None if none), or words saying why it does not count.

    A damaged contract reads as its ModelError's text; a format may refuse
    where the contract sits (a SavedModel's must be a tracked asset:
    `fmt.contract_problem`).
    """
    try:
        found = model_files.read_contract(written, fmt.name)
    except ModelError as error:
        return f"damaged ({error})"
    if found is not None and fmt.contract_problem is not None:
        problem = fmt.contract_problem(written)
        if problem is not None:
            return problem
    return found
