"""`bratskeras models` and `bratskeras summary`: the registry and layer tables."""

import json
import os

import click

from bratskeras.cli.quiet import needs_tensorflow
from bratskeras.core.errors import ConfigError


def parse_shape(text, length, what):
    """Parses "192,192,154,1" (None or ? for unknown sizes) into a tuple of ints."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != length:
        raise ConfigError(f"{what} needs {length} comma-separated sizes, got {text!r}")
    try:
        return tuple(None if p.lower() in ("none", "?") else int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{what} must be integers like 128,128,128, got {text!r}") from None


def parse_spacing(text, what="--spacing", allow_source=False):
    """"2" or "2,2,2" (mm) -> (2.0, 2.0, 2.0); with `allow_source`, "source" or "none" -> None (the source grid)."""
    if allow_source and text.strip().lower() in ("source", "none"):
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) <= 0:
        source = " or 'source'" if allow_source else ""
        raise click.BadParameter(f"expected a voxel size in mm like 2 or 1,1,2{source}, got {text!r}",
                                 param_hint=what)
    return values


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print every model's metadata as JSON.")
def models_command(as_json):
    """List the registered models with their parameter counts and metadata."""
    # The registry's stored rows: no model is built, no TensorFlow imported.
    from bratskeras.core.model_presets import MODEL_PRESETS

    if as_json:
        click.echo(json.dumps([preset.metadata() for preset in MODEL_PRESETS.values()], indent=2))
        return
    for preset in MODEL_PRESETS.values():
        click.echo(f"{preset.name:<18} {preset.params:>12,d} parameters  {preset.description}")
        click.echo(f"{'':<18} {model_details(preset.metadata())}")


def model_details(metadata):
    """The second line `bratskeras models` prints for one preset's metadata (ModelPreset.metadata)."""
    crop = metadata["default_crop"]
    crop = "x".join(str(size) for size in crop) if crop else "none (any size)"
    channels = metadata["output_channels"]
    return (f"input {', '.join(metadata['modalities'])}; output {channels} channel{'s' * (channels > 1)} of "
            f"{metadata['output']}; sizes multiple of {metadata['pooling_multiple']}; "
            f"default crop {crop}; paper {metadata['paper_source']}")


def comparison_lines(lines, expected, actual, ok):
    """The paper-vs-bratskeras table of `summary --compare` as text lines, columns as wide as their cells.

    Args:
        lines: models.summary.compare_with_paper's lines ({"paper", "model", "status"}).
        expected, actual: the paper's and the model's total parameter counts.
        ok: compare_with_paper's verdict.
    """
    rows = [row for line in lines for row in (line["paper"], line["model"]) if row is not None]
    name_width = max([len("bratskeras: name")] + [len(row["name"]) for row in rows]) + 2
    type_width = max([len("type")] + [len(row["type"]) for row in rows]) + 2
    params_width = max([len("params")] + [len(f"{row['params']:,d}") for row in rows])

    def cells(row):
        if row is None:
            return " " * (name_width + type_width + params_width)
        return f"{row['name']:<{name_width}}{row['type']:<{type_width}}{row['params']:>{params_width},d}"

    text = [f"{'paper: name':<{name_width}}{'type':<{type_width}}{'params':>{params_width}}  |  "
            f"{'bratskeras: name':<{name_width}}{'type':<{type_width}}{'params':>{params_width}}  status"]
    text += [f"{cells(line['paper'])}  |  {cells(line['model'])}  {line['status']}" for line in lines]
    verdict = "all rows match" if ok else "MISMATCH"
    text.append(f"total: paper {expected:,d}, bratskeras {actual:,d} -> {verdict}")
    return text


def _summary_model(name, input_shape):
    """(the model to summarise, its registry name): built from the registry, or a shipped one loaded."""
    from bratskeras import pretrained
    from bratskeras.models import build_model, load_model

    if not pretrained.is_pretrained(name):
        return build_model(name, input_shape=parse_shape(input_shape, 4, "--input-shape") if input_shape else None), name
    if input_shape:
        raise ConfigError(f"--input-shape builds a registry model; {name} is loaded as it was trained")
    from bratskeras.training.config_file import read_config_file

    folder = pretrained.resolve(name)
    read_config_file(os.path.join(folder, pretrained.CONFIG_FILE))  # every field checked, as predict reads it
    return load_model(name), pretrained.read_model(folder).config["model"]


@click.command("summary")
@click.argument("name")
@click.option("--input-shape", help="D,H,W,C (use None for a dynamic size).")
@click.option("--compare", is_flag=True, help="Compare with the paper's table; exit 1 on mismatch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@needs_tensorflow
def summary_command(name, input_shape, compare, as_json):
    """Print a model's layer table, optionally side by side with its paper's.

    NAME is a registry model (`bratskeras models`) or pretrained:NAME (`bratskeras pretrained`).
    """
    from bratskeras.models.summary import compare_with_paper, layer_table

    model, registry_name = _summary_model(name, input_shape)
    rows = layer_table(model)
    ok = True
    if as_json:
        payload = {"name": name, "params": int(model.count_params()),
                   "layers": [{k: r[k] for k in ("name", "type", "params")} for r in rows]}
        if compare:
            lines, ok, expected = compare_with_paper(registry_name, model)
            payload["paper_params"] = expected
            payload["matches_paper"] = ok
        click.echo(json.dumps(payload))
    elif compare:
        lines, ok, expected = compare_with_paper(registry_name, model)
        for text in comparison_lines(lines, expected, int(model.count_params()), ok):
            click.echo(text)
    else:
        click.echo(f"{'layer':<22}{'type':<22}{'output shape':<30}{'params':>12}")
        for row in rows:
            shape = "(" + ", ".join("None" if s is None else str(s) for s in row["output_shape"] or []) + ")"
            click.echo(f"{row['name']:<22}{row['type']:<22}{shape:<30}{row['params']:>12,d}")
        click.echo(f"total parameters: {model.count_params():,d}")
    if not ok:
        raise SystemExit(1)


COMMANDS = [models_command, summary_command]
