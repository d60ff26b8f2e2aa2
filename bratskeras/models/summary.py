"""Layer tables of built models and their comparison with the papers.

The papers' figures are data (`bratskeras/reference/*.json`) and each model
preset names its table and how it is compared (model_presets.PaperTable);
this module only compares. "layers" goes row by row (name, type, parameters:
flair-unet against Table 1); "total" compares the total parameter count the
paper reports (the lightweight family). Parameter-free layers that the
paper's table lacks (input, padding, cropping) are reported as extra rows,
not failures.
"""

from bratskeras.core.model_presets import get_preset, load_reference

# Layers that only move or reshape data: allowed as extra rows in a comparison.
SHAPE_ONLY_TYPES = {"InputLayer", "PadToMultiple", "CropToReference"}


def layer_table(model):
    """One row per layer: {"name", "type", "output_shape", "params"}."""
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = tuple(shape.shape) if shape is not None and hasattr(shape, "shape") else None
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "output_shape": list(shape) if shape is not None else None,
            "params": int(layer.count_params()),
        })
    return rows


def compare_with_table(rows, reference_layers):
    """Aligns this model's layers with a paper's table, row by row.

    Args:
        rows: `layer_table(model)`.
        reference_layers: the paper's rows, [{"name", "type", "params"}].

    Returns:
        (lines, ok): lines are dicts {"paper": row or None, "model": row or
        None, "status": "match" | "extra" | "MISMATCH" | "MISSING"}; ok is
        False on any mismatch or missing row.
    """
    lines, ok = [], True
    paper = list(reference_layers)
    for row in rows:
        if row["type"] in SHAPE_ONLY_TYPES and row["params"] == 0:
            if not paper or paper[0]["name"] != row["name"]:
                lines.append({"paper": None, "model": row, "status": "extra"})
                continue
        expected = paper.pop(0) if paper else None
        same = expected is not None and all(
            expected[key] == row[key] for key in ("name", "type", "params")
        )
        ok &= same
        lines.append({"paper": expected, "model": row, "status": "match" if same else "MISMATCH"})
    for expected in paper:
        ok = False
        lines.append({"paper": expected, "model": None, "status": "MISSING"})
    return lines, ok


def compare_layers(preset, model):
    """Row by row against the paper's layer table, and the total (PaperTable compare "layers": flair-unet)."""
    reference = load_reference(preset.table.file)
    lines, ok = compare_with_table(layer_table(model), reference["layers"])
    ok &= model.count_params() == reference["total_params"]
    return lines, ok, reference["total_params"]


def compare_total(preset, model):
    """The total parameter count the paper reports for this model (PaperTable compare "total")."""
    entry = load_reference(preset.table.file)["models"][preset.name]
    expected, actual = entry["total_params"], int(model.count_params())
    line = {
        "paper": {"name": entry["paper_name"], "type": "total", "params": expected},
        "model": {"name": model.name, "type": "total", "params": actual},
        "status": "match" if actual == expected else "MISMATCH",
    }
    return [line], actual == expected, expected


# How a preset's PaperTable is compared (model_presets.PaperTable.compare).
COMPARISONS = {"layers": compare_layers, "total": compare_total}


def compare_with_paper(name, model):
    """Compares a registry model with its paper, as its preset's PaperTable says.

    Returns:
        (lines, ok, reference_total): lines as in `compare_with_table`
        ("layers") or a single total-parameter line ("total").

    Raises:
        ModelError: `name` is not a registered model.
    """
    preset = get_preset(name)
    return COMPARISONS[preset.table.compare](preset, model)
