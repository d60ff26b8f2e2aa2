"""Layer tables of built models and their comparison with the papers.

The papers' figures are data (`bratskeras/reference/*.json`); this module only
compares. For `flair-unet` the comparison is row by row against Table 1 (name,
type, parameters); for the lightweight family it is the total parameter count
the paper reports. Parameter-free layers that the paper's table lacks (input,
padding, cropping) are reported as extra rows, not failures.
"""

import json
from importlib import resources

# Layers that only move or reshape data: allowed as extra rows in a comparison.
SHAPE_ONLY_TYPES = {"InputLayer", "PadToMultiple", "CropToReference"}


def load_reference(filename):
    """Reads one of the papers' tables shipped in bratskeras/reference/."""
    text = resources.files("bratskeras").joinpath("reference", filename).read_text()
    return json.loads(text)


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


def compare_with_paper(name, model):
    """Compares a registry model with its paper.

    Returns:
        (lines, ok, reference_total): lines as in `compare_with_table` (for
        flair-unet) or a single total-parameter line (lightweight family).
    """
    if name == "flair-unet":
        reference = load_reference("flair_unet_table1.json")
        lines, ok = compare_with_table(layer_table(model), reference["layers"])
        ok &= model.count_params() == reference["total_params"]
        return lines, ok, reference["total_params"]
    family = load_reference("lightweight_family.json")["models"]
    if name not in family:
        raise KeyError(f"no paper table for model {name!r}")
    expected = family[name]["total_params"]
    actual = int(model.count_params())
    line = {
        "paper": {"name": family[name]["paper_name"], "type": "total", "params": expected},
        "model": {"name": model.name, "type": "total", "params": actual},
        "status": "match" if actual == expected else "MISMATCH",
    }
    return [line], actual == expected, expected
