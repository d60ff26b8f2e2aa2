"""Score a folder of predicted label maps against references, the BraTS way.

    predictions: PRED_DIR/<case id>.nii.gz (or .nii), top level only (what
                 `bratskeras predict` writes; its probabilities/ subfolder is ignored)
    references:  any labelled dataset layout `layouts.discover` reads, or a flat
                 folder of <id>.nii.gz / <id>_seg.nii.gz label files

Pairing is by case id (bratskeras.evaluate.pairing, whose `pair`,
`find_references`, `find_predictions` and `prediction_classes` this module
also offers). A reference without a prediction is an error listed by
name and is scored as an empty prediction (all background), which under the
BraTS empty-mask rule gives Dice 0 and HD95 373.13 mm for every structure the
reference has: the challenge's treatment of a missing case, so the summary
cannot look better by dropping cases; a prediction that cannot be read (or
sits on another grid) is listed by name and scored the same way. A
prediction without a reference is listed and not scored.

Prediction label scheme: for 2017-2023 glioma, 4 present -> brats2020, 3
present -> brats2023, neither -> the reference's scheme (0, 1, 2 mean the
same in both); for the other 2023-2025 tasks, the reference's task (from its
case folders, or `task`; pairing.prediction_classes). `task` also names the
scheme of a flat reference folder.

Per-case metrics come from `voxelwise.case_metrics` (keys
"<metric>_<structure>", see that module) with the reference header's spacing,
on the classic classes (labels.LabelScheme.classic). With `lesion_wise`,
every row also has "lesion_wise": {group: {metric: value}} from
`lesionwise.case_metrics`, the official BraTS 2023-2025 lesion-wise metrics
of the task's groups, and the summary a "lesion_wise" part
(`lesionwise_summary`). Cases are scored by a pool of `workers` processes.
"""

import concurrent.futures
import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from bratskeras.core import labels
from bratskeras.core.errors import BratsKerasError, user_message
from bratskeras.evaluate import lesionwise, pairing, voxelwise
from bratskeras.evaluate.pairing import find_predictions, find_references, pair, prediction_classes  # noqa: F401 (API)

METRIC_KEYS = tuple(f"{m}_{s}" for m in ("dice", "hd95", "sensitivity", "specificity") for s in voxelwise.STRUCTURES)
SUMMARY_STATS = ("mean", "std", "median", "p25", "p75")
# Version of summary.json's layout (Evaluation.summary_json, docs/evaluation.md).
SUMMARY_FORMAT = "bratskeras-evaluation-summary/1"


def score_case(reference, prediction_path, lesion_wise=False):
    """Metrics dict of one pair; an empty prediction when `prediction_path` is None.

    With `lesion_wise`, "lesion_wise" holds lesionwise.case_metrics of the pair
    in the reference's scheme.
    """
    pred_classes, ref_classes, spacing = pairing.load_pair(reference, prediction_path)
    scheme = labels.get_scheme(reference.scheme)
    scores = voxelwise.case_metrics(labels.to_classic(pred_classes, scheme), labels.to_classic(ref_classes, scheme),
                                  spacing)
    if lesion_wise:
        values = np.asarray(scheme.labels, dtype=np.uint8)
        scores["lesion_wise"] = lesionwise.case_metrics(values[pred_classes], values[ref_classes], scheme, spacing)
    return scores


def structure_voxels(reference, prediction_path, structure):
    """(reference voxels, predicted voxels) of a voxelwise.STRUCTURES structure in one pair, as score_case reads it.

    An empty prediction when `prediction_path` is None (a missing or unreadable one, as `evaluate` scores it).
    """
    pred_classes, ref_classes, _ = pairing.load_pair(reference, prediction_path)
    scheme = labels.get_scheme(reference.scheme)
    return tuple(int(np.count_nonzero(voxelwise.structure_mask(labels.to_classic(c, scheme), structure)))
                 for c in (ref_classes, pred_classes))


@dataclass
class Evaluation:
    """Per-case rows (id, status, 20 metrics), the summary, and what could not be scored."""

    rows: list
    summary: dict
    missing: list
    extra: list
    failed: list  # "message" per case that could not be read
    ignored: list = field(default_factory=list)  # reference inputs not used, with the reason

    @property
    def ok(self):
        """True when every reference had a readable prediction."""
        return not (self.missing or self.failed)

    def to_dict(self):
        """The JSON document: {"cases": [...], "summary": {...}, "missing", "extra", "failed", "ignored"}."""
        return {"cases": self.rows, "summary": self.summary, "missing": self.missing,
                "extra": self.extra, "failed": self.failed, "ignored": self.ignored}

    def summary_json(self, pred_dir, ref_dir, task=None):
        """The text of summary.json (docs/evaluation.md): to_dict() with a format version and its inputs.

        NaN and infinite values (lesion-wise statistics of an empty group)
        are written as Python's json writes them (NaN, Infinity).
        """
        document = {"format": SUMMARY_FORMAT, "predictions": os.path.abspath(pred_dir),
                    "references": os.path.abspath(ref_dir), "task": task,
                    "statistics": list(SUMMARY_STATS) + ["n"], **self.to_dict()}
        return json.dumps(document, indent=1) + "\n"


def evaluate(pred_dir, ref_dir, on_case=None, lesion_wise=False, task=None, workers=1):
    """Scores every reference case; see the module docstring for missing/extra cases.

    Args:
        pred_dir, ref_dir: folders (module docstring).
        on_case: optional callable(row) after each scored case, in case order.
        lesion_wise: add the official lesion-wise metrics ("lesion_wise").
        task: the references' labels.TASKS scheme when their folders do not say.
        workers: processes scoring cases side by side (1: in this process).

    Returns:
        Evaluation. Rows have "id", "status" ("ok", "missing" or "unreadable")
        and METRIC_KEYS (and "lesion_wise"). A prediction that cannot be read
        (corrupt, another grid, foreign labels) is in `failed` and, like a
        missing one, scored as empty, so dropping it cannot make the summary
        look better. A case whose reference cannot be read is in `failed`
        only, as is every reference folder discovery could not read.
    """
    pairing = pair(pred_dir, ref_dir, task)
    rows, failed = [], list(pairing.skipped)
    todo = [(ref, path) for ref, path in pairing.pairs] + [(ref, None) for ref in pairing.missing]
    todo.sort(key=lambda item: item[0].case_id)
    # Without a task, references whose folders another task shares (BraTS-GLI) are read as the
    # folder's scheme; one with the other task's labels stops the whole run (_score_or_empty).
    jobs = [(ref, path, lesion_wise, task is None) for ref, path in todo]
    for (ref, path), (scored, errors) in zip(todo, _map(_score_or_empty, jobs, workers)):
        failed.extend(errors)
        if scored is None:
            continue
        scores, status = scored
        row = {"id": ref.case_id, "status": status, **scores}
        rows.append(row)
        if on_case is not None:
            on_case(row)
    summary = summarize(rows)
    if lesion_wise:
        summary["lesion_wise"] = lesionwise_summary(rows)
    return Evaluation(rows=rows, summary=summary, missing=[r.case_id for r in pairing.missing],
                      extra=pairing.extra, failed=failed, ignored=pairing.ignored)


def _score_or_empty(job):
    """((metrics, status) or None, error lines) of one (reference, prediction path, lesion_wise, guessed) job.

    An unreadable prediction is reported and scored as an empty one (status
    "unreadable"); None when the reference itself cannot be read.

    Raises:
        labels.ForeignLabelsError: `guessed` (no task was named) and the
            reference has labels of a task that shares its folders (2024
            post-treatment gli in BraTS-GLI folders): the dataset's task, not
            this case, is wrong, and the error's line says which --task to pass.
    """
    reference, prediction_path, lesion_wise, guessed = job
    try:
        return (score_case(reference, prediction_path, lesion_wise),
                "ok" if prediction_path else "missing"), []
    except labels.ForeignLabelsError as error:
        if guessed and error.source == reference.path and labels.folder_twins(error.scheme, error.values):
            raise
        errors = [user_message(error)]
    except (BratsKerasError, ValueError) as error:
        errors = [user_message(error)]
    if prediction_path is None:
        return None, errors
    try:
        return (score_case(reference, None, lesion_wise), "unreadable"), errors
    except (BratsKerasError, ValueError):
        return None, errors  # the reference itself is unreadable: its message is already there


def _map(function, items, workers):
    """function over items, in order; a process pool of `workers` when that is more than one."""
    if workers <= 1 or len(items) <= 1:
        yield from map(function, items)
        return
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(items)))
    try:
        yield from pool.map(function, items)
    finally:
        # An error that stops the run (a dataset of another task) need not wait for the queued cases.
        pool.shutdown(wait=True, cancel_futures=True)


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


def metrics_csv_kind():
    """ArtefactKind of `rows_to_csv`'s file: text whose first line is its header (id,status,dice_wt,...)."""
    from bratskeras.platform import artefacts

    return artefacts.text_file_kind("metrics CSV", ",".join(["id", "status", *METRIC_KEYS]))


def summary_json_kind():
    """ArtefactKind of summary.json (`Evaluation.summary_json`): JSON whose "format" is a SUMMARY_FORMAT version."""
    from bratskeras.platform import artefacts

    def problem(path):
        if os.path.islink(path) or not os.path.isfile(path):
            return "not a regular file"
        try:
            with open(path) as stream:
                document = json.load(stream)
        except (OSError, ValueError):
            return "not JSON"
        fmt = document.get("format") if isinstance(document, dict) else None
        if not isinstance(fmt, str) or fmt.rpartition("/")[0] != SUMMARY_FORMAT.rpartition("/")[0]:
            return f"no \"format\": \"{SUMMARY_FORMAT}\" in it"
        return None

    return artefacts.ArtefactKind("evaluation summary JSON", False, problem)


def rows_to_csv(rows):
    """CSV text: id, status, METRIC_KEYS, then any lesion-wise "<group>_<metric>" columns, one line per case."""
    lesion_keys = [f"{g}_{m}" for g, metrics_ in (rows[0].get("lesion_wise", {}) if rows else {}).items()
                   for m in metrics_]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "status", *METRIC_KEYS, *lesion_keys], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k != "lesion_wise"}
        flat.update({f"{g}_{m}": v for g, values in row.get("lesion_wise", {}).items() for m, v in values.items()})
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in flat.items()})
    return buffer.getvalue()


# The official parser's stand-in for an infinite HD95 and for a missing case's
# HD95 (brats_evaluation.metrics_parser: "diameter of the cube in SRI space").
CHALLENGE_HD95 = 373.0
LESION_STATS = ("mean", "std", "median")


def lesionwise_summary(rows):
    """{group: {metric: {"mean", "std", "median", "n"}}} over rows, as the challenge aggregates.

    The official parser (brats_evaluation.metrics_parser, seg): global_bin_hd95
    inf counts as 373; a missing case (status "missing") counts 373 for every
    HD95 and 0 for everything else; NaN values are left out of the statistics
    (pandas' default), std has ddof 1 (NaN for one value); other inf values
    (sq_hd95 of a group with no match) stay inf, as there.
    """
    groups = next((row["lesion_wise"] for row in rows if row["status"] != "missing"), None)
    groups = groups or (rows[0]["lesion_wise"] if rows else {})
    summary = {}
    for group, names in groups.items():
        summary[group] = {}
        for name in names:
            values = np.asarray([_challenge_value(row, group, name) for row in rows], dtype=np.float64)
            values = values[~np.isnan(values)]
            with np.errstate(invalid="ignore"):  # inf - inf in the std of an inf HD95: NaN, as pandas gives
                summary[group][name] = {
                    "mean": float(values.mean()) if values.size else math.nan,
                    "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
                    "median": float(np.median(values)) if values.size else math.nan,
                    "n": int(values.size)}
    return summary


def _challenge_value(row, group, name):
    if row["status"] == "missing":
        return CHALLENGE_HD95 if "hd95" in name and "std" not in name else 0.0
    value = row["lesion_wise"][group][name]
    return CHALLENGE_HD95 if name == "global_bin_hd95" and math.isinf(value) else value


def lesionwise_table(summary):
    """The lesion-wise summary's means as aligned text: one line per metric, one column per group.

    Metrics down and groups across keeps the table within about 80 columns
    for every task (ped's six groups: 16 + 6 x 10); the files (--out CSV,
    summary.json) hold every value.
    """
    groups = list(summary)
    lines = [f"{'metric':<16}" + "".join(f"{g:>10}" for g in groups)]
    for name in lesionwise.METRICS:
        lines.append(f"{name:<16}" + "".join(f"{summary[g][name]['mean']:>10.4f}" for g in groups))
    return "\n".join(lines)


def summary_table(summary):
    """The summary as aligned text, one metric per line."""
    lines = [f"{'metric':<22}" + "".join(f"{s:>10}" for s in SUMMARY_STATS)]
    for key in (k for k in METRIC_KEYS if k in summary):
        lines.append(f"{key:<22}" + "".join(f"{summary[key][s]:>10.4f}" for s in SUMMARY_STATS))
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
