"""The export formats as rows (issue #26): one row carries a format, and the export flow reads only rows.

No model is built here: the rows, the flow's path and flag rules, the
artefact kinds, the CLI's help and the folder swap that outputs and claims
share are checked on their own, each in well under a second.
"""

import ast
import dataclasses
import os
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import bratskeras
from bratskeras.cli import cli
from bratskeras.core.errors import ConfigError, ModelError
from bratskeras.export import exporter
from bratskeras.export.formats import FORMATS, QUANTIZATIONS, Deferred, ExportFormat, names_where
from bratskeras.platform import artefacts, claims, extras, outputs
from bratskeras.predict import runtimes

PACKAGE = Path(bratskeras.__file__).parent


def test_each_row_is_keyed_by_its_name_and_names_a_known_extra():
    for name, row in FORMATS.items():
        assert row.name == name
        assert row.extra is None or row.extra in extras.EXTRAS, name
        if row.runtime is not None:  # the runtime predict uses is the one the check uses
            assert runtimes.RUNTIMES[name] is row.runtime
    suffixes = [row.suffix for row in FORMATS.values() if not row.versioned]
    assert len(suffixes) == len(set(suffixes))


def test_every_runtime_row_names_its_format_and_a_known_extra_module():
    for name, runtime in runtimes.RUNTIMES.items():
        assert runtime.format == name
        if runtime.extra is not None:
            assert runtime.module in extras.EXTRAS[runtime.extra], name


def test_an_unknown_format_is_not_an_exported_model(tmp_path):
    with pytest.raises(ModelError, match="not an exported model"):
        runtimes.load(tmp_path / "m.keras", "keras")


def test_the_cli_help_is_read_off_the_rows():
    text = " ".join(CliRunner().invoke(cli, ["export", "--help"], terminal_width=400).output.split())
    # The help as it was written by hand before the rows (behaviour unchanged).
    assert "saved_model; tflite (extra litert); onnx (extra onnx); keras." in text
    assert "tflite default for dynamic models: 128,128,128,C" in text
    assert "(default 1e-4 float32, 1e-2 float16, 0.25 dynamic-int8)" in text
    assert "tflite weights." in text


def test_quantize_and_version_are_refused_for_formats_without_them():
    with pytest.raises(ConfigError, match=r"--quantize float16 applies to --format tflite only"):
        exporter._check_arguments("onnx", "float16")
    assert exporter._check_arguments("tflite", "dynamic-int8") is FORMATS["tflite"]
    with pytest.raises(ConfigError, match=r"--version applies to --format saved_model only"):
        exporter._target_path(FORMATS["onnx"], "m.onnx", 3)
    with pytest.raises(ConfigError, match="unknown format 'tf'"):
        exporter._check_arguments("tf", "none")
    with pytest.raises(ConfigError, match="unknown quantization 'int4'"):
        exporter._check_arguments("tflite", "int4")


def test_a_versioned_format_writes_the_next_version_under_its_base(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "7").mkdir()
    row = FORMATS["saved_model"]
    assert exporter._target_path(row, tmp_path, None) == tmp_path / "8"
    assert exporter._output_folder(row, tmp_path) == tmp_path
    assert exporter._output_folder(FORMATS["onnx"], tmp_path / "m.onnx") == tmp_path


def test_default_outputs_follow_each_rows_suffix(tmp_path):
    model = types.SimpleNamespace(name="lightweight_unet")
    run = tmp_path / "run"
    run.mkdir()
    assert exporter.default_output(run, model, FORMATS["tflite"], "float16") == run / "best.float16.tflite"
    assert exporter.default_output(run, model, FORMATS["keras"], "none") == run / "best.inference.keras"
    assert exporter.default_output(run / "m.keras", model, FORMATS["onnx"], "none") == run / "m.onnx"
    assert exporter.default_output(None, model, FORMATS["saved_model"], "none") == Path("saved_models",
                                                                                       "lightweight-unet")
    assert exporter.default_output(run, model, FORMATS["onnx"], "none", "brats-x") == Path("brats-x.onnx")


def test_a_new_format_is_one_row(monkeypatch, tmp_path):
    """A row the flow has never seen is refused, named and placed by its fields alone."""
    row = ExportFormat("npz", "NumPy", artefacts.suffix_file_kind("NumPy archive", ".npz"),
                       write=lambda *args: None, run=lambda path, image: image,
                       runtime=runtimes.Runtime("npz", "a NumPy archive", object, extra="onnx", module="onnx"),
                       suffix=".npz", quantizes=True)
    monkeypatch.setitem(FORMATS, "npz", row)
    assert exporter._check_arguments("npz", "float16") is row
    assert "npz (extra onnx)" in row.cli_help
    assert names_where(lambda r: r.quantizes) == "tflite or npz"
    assert exporter.default_output(tmp_path / "m.keras", None, row, "none") == tmp_path / "m.npz"
    monkeypatch.setattr(extras, "_find", lambda module: None)  # the row's extra is missing
    with pytest.raises(ConfigError, match=r"export as npz needs the 'onnx' extra"):
        exporter._check_arguments("npz", "none")


def test_artefact_kinds_recognise_their_own_files_only(tmp_path):
    tflite, onnx, keras_file = (tmp_path / n for n in ("m.tflite", "m.onnx", "m.keras"))
    tflite.write_bytes(b"\0\0\0\0TFL3 flatbuffer")
    onnx.write_bytes(b"protobuf")
    keras_file.write_bytes(b"not a zip")
    assert FORMATS["tflite"].kind.recognise(tflite)
    assert not FORMATS["tflite"].kind.recognise(onnx)
    assert FORMATS["onnx"].kind.recognise(onnx) and not FORMATS["onnx"].kind.recognise(tflite)
    assert FORMATS["keras"].kind.problem(os.fspath(keras_file)) == "not a zip archive"
    saved = tmp_path / "1"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"")
    assert FORMATS["saved_model"].kind.recognise(saved)
    (saved / "notes.txt").write_text("mine")
    assert "notes.txt" in FORMATS["saved_model"].kind.problem(os.fspath(saved))
    assert artefacts.KINDS["png"].problem(os.fspath(tflite)) == "its content is not a PNG image"


def test_quantizations_carry_their_tolerances():
    assert {name: q.tolerance for name, q in QUANTIZATIONS.items()} == {"none": 1e-4, "float16": 1e-2,
                                                                       "dynamic-int8": 0.25}
    assert [q.weight_type for q in QUANTIZATIONS.values()] == [None, "float16", None]


def test_deferred_functions_are_looked_up_at_each_call(monkeypatch):
    deferred = Deferred("bratskeras.export.formats", "short_number")
    assert deferred(1e-4) == "1e-4"
    monkeypatch.setattr("bratskeras.export.formats.short_number", lambda value: "replaced")
    assert deferred(1e-4) == "replaced"


def _format_name_comparisons(path):
    """(line, name) of each `== "<format>"`, `!= ...` or `in ("<format>", ...)` test in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                constants = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                found += [(node.lineno, c.value) for c in constants
                          if isinstance(c, ast.Constant) and c.value in FORMATS]
    return found


def test_no_module_branches_on_a_format_name_outside_the_table():
    modules = [*sorted((PACKAGE / "export").glob("*.py")), PACKAGE / "cli" / "export.py",
               PACKAGE / "predict" / "runtimes.py"]
    for path in modules:
        assert _format_name_comparisons(path) == [], path


def test_swap_folder_keeps_the_old_folder_and_its_carried_entries_when_the_rename_fails(tmp_path, monkeypatch):
    folder, new = tmp_path / "out", tmp_path / "new"
    folder.mkdir()
    new.mkdir()
    (folder / "old.txt").write_text("old")
    (folder / claims.CLAIM_FILE).write_text("claim")
    (new / "new.txt").write_text("new")
    rename = os.rename

    def failing(source, destination):
        if os.fspath(source) == os.fspath(new):
            raise OSError(28, "No space left on device")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError):
        outputs.swap_folder(os.fspath(new), os.fspath(folder), carried=(claims.CLAIM_FILE,))
    assert sorted(os.listdir(folder)) == sorted([claims.CLAIM_FILE, "old.txt"])
    assert os.listdir(new) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["new", "out"]  # no .old- copy left
    monkeypatch.setattr(os, "rename", rename)
    outputs.swap_folder(os.fspath(new), os.fspath(folder), carried=(claims.CLAIM_FILE,))
    assert sorted(os.listdir(folder)) == sorted([claims.CLAIM_FILE, "new.txt"])
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_an_artefact_folder_is_replaced_whole_by_write_artefact(tmp_path):
    kind = artefacts.ArtefactKind("test folder", True, lambda path: None)
    target = tmp_path / "artefact"
    target.mkdir()
    (target / "old").write_text("old")

    def write(tmp):
        os.mkdir(tmp)
        Path(tmp, "new").write_text("new")

    outputs.write_artefact(target, write, kind=kind, overwrite=True)
    assert os.listdir(target) == ["new"] and os.listdir(tmp_path) == ["artefact"]


def test_export_rows_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FORMATS["onnx"].suffix = ".pb"
