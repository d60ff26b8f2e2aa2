"""Score a folder of predicted label maps against references, the BraTS way.

    predictions: PRED_DIR/<case id>.nii.gz (or .nii), top level only (what
                 `bratskeras predict` writes; its probabilities/ subfolder is ignored)
    references:  any labelled dataset layout `io.discover` reads, or a flat
                 folder of <id>.nii.gz / <id>_seg.nii.gz label files

Pairing is by case id. A reference without a prediction is an error listed by
name and is scored as an empty prediction (all background), which under the
BraTS empty-mask rule gives Dice 0 and HD95 373.13 mm for every structure the
reference has: the challenge's treatment of a missing case, so the summary
cannot look better by dropping cases; a prediction that cannot be read (or
sits on another grid) is listed by name and scored the same way. A
prediction without a reference is listed and not scored.

Prediction label scheme: 4 present -> brats2020, 3 present -> brats2023,
neither -> the reference's scheme (0, 1, 2 mean the same in both).

Per-case metrics come from `metrics.case_metrics` (keys
"<metric>_<structure>", see that module) with the reference header's spacing.
"""

import csv
import io as text_io
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from bratskeras import io, labels, metrics
from bratskeras.errors import BratsKerasError, DataError, user_message

METRIC_KEYS = tuple(f"{m}_{s}" for m in ("dice", "hd95", "sensitivity", "specificity") for s in metrics.STRUCTURES)
SUMMARY_STATS = ("mean", "std", "median", "p25", "p75")
_LABEL_FILE_RE = re.compile(r"^(?P<id>.+?)(_seg)?\.nii(\.gz)?$")


@dataclass
class Reference:
    """One reference case: its id, how to load its class map, and its label scheme."""

    case_id: str
    scheme: str
    path: str | None = None
    case: io.Case | None = None

    def load(self):
        """(class map uint8 (D, H, W), nibabel image or None, spacing)."""
        if self.case is not None and self.case.layout == "kaggle-h5":
            _, seg, properties = io.read_case(self.case)
            return seg, None, properties["spacing"]
        array, image = io.load_nifti(self.path)
        if self.scheme:
            classes = labels.labels_to_classes(array, self.scheme, source=self.path)
        else:
            # A flat folder names no release: its values say which (read once, here).
            classes, self.scheme = labels.label_map_to_classes(array, "brats2020", self.path)
        return classes, image, tuple(float(z) for z in image.header.get_zooms()[:3])


@dataclass
class Pairing:
    """Predictions matched with references by case id (all lists sorted)."""

    pairs: list = field(default_factory=list)  # (Reference, prediction path)
    missing: list = field(default_factory=list)  # References without a prediction
    extra: list = field(default_factory=list)  # prediction paths without a reference
    skipped: list = field(default_factory=list)  # reference folders that could not be read


def find_references(ref_dir):
    """Reference label maps under `ref_dir`: a dataset layout, else a flat folder of label files.

    Returns:
        (list of Reference, one line per folder discovery could not read).

    Raises:
        DataError: no labelled case found.
    """
    ref_dir = os.fspath(ref_dir)
    try:
        dataset = io.discover(ref_dir)
    except DataError:
        dataset = None
    if dataset is not None:
        refs = [Reference(c.id, c.label_scheme, path=c.seg, case=c) for c in dataset.cases if c.seg]
        if not refs:
            raise DataError(f"{ref_dir}: no labelled cases ({len(dataset.cases)} case(s) without label files)")
        return refs, list(dataset.skipped)
    refs = {}
    for name in sorted(os.listdir(ref_dir)) if os.path.isdir(ref_dir) else []:
        match = _LABEL_FILE_RE.match(name)
        if match and os.path.isfile(os.path.join(ref_dir, name)):
            # The scheme of a flat folder is read from its values when it is loaded.
            refs.setdefault(match.group("id"), Reference(match.group("id"), "", path=os.path.join(ref_dir, name)))
    if not refs:
        raise DataError(f"{ref_dir}: no reference label files (a BraTS layout, or <id>.nii.gz / <id>_seg.nii.gz)")
    return list(refs.values()), []


def find_predictions(pred_dir):
    """{case id: path} of <id>.nii.gz / <id>.nii files at the top of `pred_dir`."""
    pred_dir = os.fspath(pred_dir)
    if not os.path.isdir(pred_dir):
        raise DataError(f"{pred_dir}: not a folder")
    found = {}
    for name in sorted(os.listdir(pred_dir)):
        match = re.match(r"^(?P<id>.+?)\.nii(\.gz)?$", name)
        if match and not name.startswith(".") and os.path.isfile(os.path.join(pred_dir, name)):
            if match.group("id") in found:
                raise DataError(f"{os.path.join(pred_dir, name)}: a second prediction for case {match.group('id')}")
            found[match.group("id")] = os.path.join(pred_dir, name)
    return found


def pair(pred_dir, ref_dir):
    """Pairs predictions with references by case id (see Pairing)."""
    predictions = find_predictions(pred_dir)
    references, skipped = find_references(ref_dir)
    result = Pairing(skipped=skipped)
    for ref in sorted(references, key=lambda r: r.case_id):
        if ref.case_id in predictions:
            result.pairs.append((ref, predictions[ref.case_id]))
        else:
            result.missing.append(ref)
    known = {r.case_id for r in references}
    result.extra = sorted(path for case_id, path in predictions.items() if case_id not in known)
    return result


def _load_prediction(path, reference_image, scheme):
    array, image = io.load_nifti(path)
    if reference_image is not None:
        problem = io.geometry_problem(path, image, "reference", reference_image)
        if problem:
            raise DataError(problem)
    classes, _ = labels.label_map_to_classes(array, scheme, path)
    return classes


def score_case(reference, prediction_path):
    """Metrics dict of one pair; an empty prediction when `prediction_path` is None."""
    ref_classes, ref_image, spacing = reference.load()
    if prediction_path is None:
        pred_classes = np.zeros_like(ref_classes)
    else:
        pred_classes = _load_prediction(prediction_path, ref_image, reference.scheme)
        if pred_classes.shape != ref_classes.shape:
            raise DataError(f"{prediction_path}: shape {pred_classes.shape} differs from the reference "
                            f"{ref_classes.shape}")
    return metrics.case_metrics(pred_classes, ref_classes, spacing)


@dataclass
class Evaluation:
    """Per-case rows (id, status, 20 metrics), the summary, and what could not be scored."""

    rows: list
    summary: dict
    missing: list
    extra: list
    failed: list  # "message" per case that could not be read

    @property
    def ok(self):
        """True when every reference had a readable prediction."""
        return not (self.missing or self.failed)

    def to_dict(self):
        """The JSON document: {"cases": [...], "summary": {...}, "missing", "extra", "failed"}."""
        return {"cases": self.rows, "summary": self.summary, "missing": self.missing,
                "extra": self.extra, "failed": self.failed}


def evaluate(pred_dir, ref_dir, on_case=None):
    """Scores every reference case; see the module docstring for missing/extra cases.

    Args:
        pred_dir, ref_dir: folders (module docstring).
        on_case: optional callable(row) after each scored case.

    Returns:
        Evaluation. Rows have "id", "status" ("ok", "missing" or "unreadable")
        and METRIC_KEYS. A prediction that cannot be read (corrupt, another
        grid, foreign labels) is in `failed` and, like a missing one, scored
        as empty, so dropping it cannot make the summary look better. A case
        whose reference cannot be read is in `failed` only, as is every
        reference folder discovery could not read.
    """
    pairing = pair(pred_dir, ref_dir)
    rows, failed = [], list(pairing.skipped)
    todo = [(ref, path) for ref, path in pairing.pairs] + [(ref, None) for ref in pairing.missing]
    for ref, path in sorted(todo, key=lambda item: item[0].case_id):
        scored = _score_or_empty(ref, path, failed)
        if scored is None:
            continue
        scores, status = scored
        row = {"id": ref.case_id, "status": status, **scores}
        rows.append(row)
        if on_case is not None:
            on_case(row)
    return Evaluation(rows=rows, summary=summarize(rows), missing=[r.case_id for r in pairing.missing],
                      extra=pairing.extra, failed=failed)


def _score_or_empty(reference, prediction_path, failed):
    """(metrics, status) of one case, or None when its reference cannot be read.

    Every failure is appended to `failed`; an unreadable prediction is then
    scored as an empty one (status "unreadable").
    """
    try:
        return score_case(reference, prediction_path), "ok" if prediction_path else "missing"
    except (BratsKerasError, ValueError) as error:
        failed.append(user_message(error))
    if prediction_path is None:
        return None
    try:
        return score_case(reference, None), "unreadable"
    except (BratsKerasError, ValueError):
        return None  # the reference itself is unreadable: its message is already in `failed`


def summarize(rows):
    """{metric key: {"mean", "std", "median", "p25", "p75", "n"}} over rows (empty dict if none)."""
    summary = {}
    for key in METRIC_KEYS:
        values = np.asarray([row[key] for row in rows], dtype=np.float64)
        if values.size == 0:
            continue
        summary[key] = {"mean": float(values.mean()), "std": float(values.std()),
                        "median": float(np.median(values)), "p25": float(np.percentile(values, 25)),
                        "p75": float(np.percentile(values, 75)), "n": int(values.size)}
    return summary


def rows_to_csv(rows):
    """CSV text: id, status, then METRIC_KEYS, one line per case."""
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "status", *METRIC_KEYS], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def summary_table(summary):
    """The summary as aligned text, one metric per line."""
    lines = [f"{'metric':<22}" + "".join(f"{s:>10}" for s in SUMMARY_STATS)]
    for key, stats in summary.items():
        lines.append(f"{key:<22}" + "".join(f"{stats[s]:>10.4f}" for s in SUMMARY_STATS))
    return "\n".join(lines)


def paper_results():
    """The papers' reported validation figures on real BraTS (bratskeras/reference/paper_results.json)."""
    text = resources.files("bratskeras").joinpath("reference/paper_results.json").read_text()
    return json.loads(text)


def comparison_table(summary):
    """Our means next to the papers' reported figures (their numbers, on real BraTS data)."""
    papers = paper_results()
    light, flair = papers["lightweight-3d-unet-brats2020"], papers["flair-3d-unet-brats2017"]
    lines = ["metric      this run   lightweight paper (BraTS 2020 val)   FLAIR paper (BraTS 2017)",
             "            (mean)     -- the papers' numbers on real BraTS, not this data --"]
    for key in ("dice_wt", "dice_ncr", "dice_ed", "dice_et", "hd95_ncr", "hd95_ed", "hd95_et"):
        ours = f"{summary[key]['mean']:.4f}" if key in summary else "-"
        paper_light = light["results"].get(key)
        paper_flair = flair["results"].get(key)
        lines.append(f"{key:<12}{ours:>8}   {'' if paper_light is None else f'{paper_light:.4f}':>20}"
                     f"   {'' if paper_flair is None else f'{paper_flair:.2f}':>30}")
    return "\n".join(lines)
