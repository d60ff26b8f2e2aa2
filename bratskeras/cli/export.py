"""`bratskeras export`: a trained model as SavedModel, LiteRT, ONNX or .keras."""

import click

from bratskeras.cli.models import parse_shape
from bratskeras.cli.quiet import needs_tensorflow
from bratskeras.core.defaults import PATCH_SIZE
from bratskeras.export.formats import FORMATS, QUANTIZATIONS, names_where, short_number

# The help texts, read off the format and quantization rows.
FORMAT_HELP = "; ".join(row.cli_help for row in FORMATS.values()) + "."
INPUT_SHAPE_HELP = (f"D,H,W,C to export ({names_where(lambda row: row.static_spatial)} default for dynamic models: "
                    f"{','.join(map(str, PATCH_SIZE))},C).")
TOLERANCE_HELP = ("Max abs difference allowed against Keras (default "
                  + ", ".join(f"{short_number(q.tolerance)} {q.weights}" for q in QUANTIZATIONS.values()) + ").")


@click.command("export")
@click.argument("model")
@click.option("--format", "format_", required=True, type=click.Choice(tuple(FORMATS)),
              help=FORMAT_HELP)
@click.option("--out", help="saved_model: model base dir (default saved_models/<model name>, "
                            "saved_models/NAME for pretrained:NAME); else the file (default beside MODEL, "
                            "./NAME.<format> for pretrained:NAME).")
@click.option("--version", type=int, help="saved_model version (default: next free integer).")
@click.option("--quantize", default="none", show_default=True, type=click.Choice(tuple(QUANTIZATIONS)),
              help=f"{names_where(lambda row: row.quantizes)} weights.")
@click.option("--input-shape", help=INPUT_SHAPE_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing artefact.")
@click.option("--tolerance", type=click.FloatRange(min=0), help=TOLERANCE_HELP)
@needs_tensorflow
def export_command(model, format_, out, version, quantize, input_shape, overwrite, tolerance):
    """Export MODEL (.keras file, run dir or pretrained:NAME) with its input contract, and check both in its runtime."""
    from bratskeras.export.exporter import export_model

    shape = parse_shape(input_shape, 4, "--input-shape") if input_shape else None
    report = export_model(model, format_, out=out, version=version, quantize=quantize, tolerance=tolerance,
                          input_shape=shape, overwrite=overwrite, announce=lambda line: click.echo(line, err=True))
    click.echo(f"path: {report.path}")
    click.echo(f"size: {report.size_bytes:,d} bytes")
    twin = ", on a LiteRT twin converted at that size" if report.twin else ""
    click.echo(f"max abs diff: {report.max_abs_diff:.3g} (tolerance {report.tolerance:g}, "
               f"check volume {report.check_shape}{twin})")
    if report.contract is None:
        click.echo(f"warning: {model}: no input contract (no run config.json, none embedded); the export carries "
                   "none, and predict will guess from its channel counts", err=True)
    else:
        click.echo(f"contract: {report.contract.describe()} (source: {report.contract_source})")


COMMANDS = [export_command]
