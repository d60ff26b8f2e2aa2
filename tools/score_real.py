"""Scores any model on folders of real scans with references: `bratskeras predict`, then the library's evaluation.

    python tools/score_real.py MODEL DATA_DIR [DATA_DIR ...] [--json] [--out CSV] [--overwrite]
                               [--keep-predictions DIR] [--workers N] [PREDICT OPTIONS: --tta, --window, ...]

MODEL is handed to `bratskeras predict` unchanged (a run folder, a .keras
file, whatever predict accepts), and so is every predict option given (the
options are predict's own, read from its command: --tta, --overlap,
--window, --postprocess, --task, ...). Each DATA_DIR is predicted by
`python -m bratskeras.cli predict`, the `bratskeras predict` command itself,
into a temporary folder (or --keep-predictions DIR/<n>-<folder name>), never
into DATA_DIR, which is only read; then bratskeras.evaluate.scoring.evaluate scores
the predictions against the label files in DATA_DIR, in any layout bratskeras
reads (BraTS 2017-2023 and the 2023+ tasks). The references are whatever
label files are there: the tool does not know how they were made.

Per case it prints WT / TC / ET Dice and WT HD95 (evaluate's figures), the
reference's and the prediction's ET voxels and whether the reference has
enhancing tumor (ET > 0); then the mean WT and TC Dice over all cases, the
mean ET Dice over the cases whose reference has ET, the most ET voxels
predicted in a case whose reference has none, and the goals of issue #23
(GOALS), each met or not met. A missing or unreadable prediction is scored
as empty, as `bratskeras evaluate` scores it.

Exit status: 0 when every case was predicted and scored, met goals or not;
1 when a case failed, a prediction is missing or predict could not run; 2
for a wrong command line.
"""

import argparse
import os
import subprocess
import sys
import tempfile

# The goals: (summary key, what it is, comparison, target).
GOALS = (
    ("mean_dice_wt", "mean WT Dice", ">=", 0.80),
    ("mean_dice_tc", "mean TC Dice", ">=", 0.65),
    ("mean_dice_et_enhancing", "mean ET Dice over cases whose reference has ET", ">=", 0.65),
    ("max_predicted_et_non_enhancing", "most ET voxels predicted where the reference has none", "<", 1000),
)
CASE_COLUMNS = ("folder", "id", "status", "dice_wt", "dice_tc", "dice_et", "hd95_wt",
                "reference_et_voxels", "predicted_et_voxels", "reference_has_et")
# predict's options this tool sets itself: where predictions go, what is replaced.
_OWN_OPTIONS = ("overwrite",)


def predict_options():
    """predict's click options this tool passes through (all but _OWN_OPTIONS), from the command itself."""
    import click

    from bratskeras.cli.inference import predict_command

    return [p for p in predict_command.params if isinstance(p, click.Option) and p.name not in _OWN_OPTIONS]


def parse_args(argv=None):
    """(argparse namespace, predict's argv tail) from this tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="MODEL", help="Anything `bratskeras predict` accepts as MODEL, passed unchanged.")
    parser.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="Folders of scans with label files.")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON instead of a table.")
    parser.add_argument("--out", help="Write the per-case rows to this CSV file.")
    parser.add_argument("--overwrite", action="store_true", help="Replace --out and kept predictions.")
    parser.add_argument("--keep-predictions", metavar="DIR",
                        help="Predict into DIR/<n>-<folder name> instead of a temporary folder.")
    parser.add_argument("--workers", type=int, default=1, help="Processes scoring cases side by side.")
    group = parser.add_argument_group("predict options (passed to `bratskeras predict`)")
    for option in predict_options():
        dest = f"predict_{option.name}"
        if option.is_flag:
            group.add_argument(*option.opts, dest=dest, action="store_true", help=option.help)
        else:
            group.add_argument(*option.opts, dest=dest, action="append" if option.multiple else "store",
                               metavar=option.metavar or option.name.upper(), help=option.help)
    args = parser.parse_args(argv)
    tail = []
    for option in predict_options():
        value = getattr(args, f"predict_{option.name}")
        if option.is_flag:
            tail += [option.opts[0]] if value else []
        else:
            for item in (value or []) if option.multiple else ([] if value is None else [value]):
                tail += [option.opts[0], item]
    return args, tail


def run_predict(model, data_dir, pred_dir, options, overwrite=False):
    """`bratskeras predict MODEL DATA_DIR PRED_DIR OPTIONS` in a fresh interpreter; its exit status.

    Its output goes to this process's stderr, so --json leaves stdout to the report.
    """
    command = [sys.executable, "-m", "bratskeras.cli", "predict", model, data_dir, pred_dir, *options]
    command += ["--overwrite"] if overwrite else []
    sys.stderr.flush()
    return subprocess.run(command, stdout=sys.stderr.fileno(), check=False).returncode


def score_folder(data_dir, pred_dir, task=None, workers=1):
    """Rows (CASE_COLUMNS) of every reference case of `data_dir` and the folder's record.

    Returns:
        (rows, {"folder", "cases", "missing", "extra", "failed"}) from
        bratskeras.evaluate.scoring.evaluate of `pred_dir` against `data_dir`.
    """
    from bratskeras.evaluate import scoring as evaluation

    result = evaluation.evaluate(pred_dir, data_dir, task=task, workers=workers)
    pairing = evaluation.pair(pred_dir, data_dir, task)
    references = {ref.case_id: (ref, path) for ref, path in pairing.pairs}
    references.update({ref.case_id: (ref, None) for ref in pairing.missing})
    rows = []
    for row in result.rows:
        reference, path = references[row["id"]]
        # evaluate scored a missing or unreadable prediction as empty: so are its voxels.
        ref_et, pred_et = evaluation.structure_voxels(reference, path if row["status"] == "ok" else None, "et")
        rows.append({"folder": data_dir, "id": row["id"], "status": row["status"], "dice_wt": row["dice_wt"],
                     "dice_tc": row["dice_tc"], "dice_et": row["dice_et"], "hd95_wt": row["hd95_wt"],
                     "reference_et_voxels": ref_et, "predicted_et_voxels": pred_et, "reference_has_et": ref_et > 0})
    record = {"folder": data_dir, "cases": [row["id"] for row in rows], "missing": result.missing,
              "extra": result.extra, "failed": result.failed}
    return rows, record


def summarize(rows):
    """The goals' figures over all rows: means of WT/TC, ET over enhancing cases, max ET over non-enhancing."""
    enhancing = [r for r in rows if r["reference_has_et"]]
    others = [r for r in rows if not r["reference_has_et"]]
    return {"cases": len(rows), "enhancing_cases": len(enhancing), "non_enhancing_cases": len(others),
            "mean_dice_wt": _mean(r["dice_wt"] for r in rows), "mean_dice_tc": _mean(r["dice_tc"] for r in rows),
            "mean_dice_et_enhancing": _mean(r["dice_et"] for r in enhancing),
            "max_predicted_et_non_enhancing": max((r["predicted_et_voxels"] for r in others), default=None)}


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


def goals(summary):
    """[{"key", "goal", "target", "value", "met"}] per GOALS row; met is None when no case measures it."""
    checks = []
    for key, name, comparison, target in GOALS:
        value = summary[key]
        met = None if value is None else (value >= target if comparison == ">=" else value < target)
        checks.append({"key": key, "goal": f"{name} {comparison} {target:g}", "value": value, "met": met})
    return checks


def format_report(report):
    """The report as text: what was scored, one line per case, the summary and the goals."""
    lines = [f"model: {report['model']}" + (f" (predict options: {' '.join(report['predict_options'])})"
                                            if report["predict_options"] else "")]
    for folder in report["folders"]:
        lines.append(f"scored: {folder['folder']}: {len(folder['cases'])} case(s): {', '.join(folder['cases'])}")
    lines.append(f"references: {report['references']}")
    lines.append(f"{'case':<28}{'WT':>7}{'TC':>7}{'ET':>7}{'HD95 WT':>9}{'ref ET vox':>12}{'pred ET vox':>12}"
                 f"  ref has ET  status")
    for row in report["cases"]:
        lines.append(f"{row['id']:<28}{row['dice_wt']:>7.3f}{row['dice_tc']:>7.3f}{row['dice_et']:>7.3f}"
                     f"{row['hd95_wt']:>9.2f}{row['reference_et_voxels']:>12}{row['predicted_et_voxels']:>12}"
                     f"  {'yes' if row['reference_has_et'] else 'no':<11} {row['status']}")
    summary = report["summary"]
    lines.append(f"{summary['cases']} case(s), {summary['enhancing_cases']} with ET in the reference, "
                 f"{summary['non_enhancing_cases']} without")
    for check in report["goals"]:
        value = "-" if check["value"] is None else (f"{check['value']:.3f}" if isinstance(check["value"], float)
                                                    else str(check["value"]))
        verdict = "no case measures it" if check["met"] is None else ("met" if check["met"] else "not met")
        lines.append(f"{check['goal']}: {value} ({verdict})")
    return "\n".join(lines)


def csv_kind():
    """ArtefactKind of `rows_to_csv`'s file (its header line), so --overwrite replaces only such a file."""
    from bratskeras.platform import artefacts

    return artefacts.text_file_kind("score_real CSV", ",".join(CASE_COLUMNS))


def rows_to_csv(rows):
    """CSV text of the per-case rows (CASE_COLUMNS)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CASE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _prediction_folders(data_dirs, keep):
    """One new folder per DATA_DIR for its predictions: under `keep`, or temporary (then removed by the caller)."""
    if keep is None:
        return [tempfile.mkdtemp(prefix=f"score_real-{i}-") for i in range(len(data_dirs))]
    return [os.path.join(keep, f"{i + 1}-{os.path.basename(os.path.normpath(d))}") for i, d in enumerate(data_dirs)]


def _refuse_inside(path, data_dirs):
    """The one-line error when `path` lies inside a DATA_DIR (references are read, never written)."""
    from bratskeras.core.errors import OutputError

    real = os.path.realpath(path)
    for data_dir in data_dirs:
        root = os.path.realpath(data_dir)
        if os.path.commonpath([real, root]) == root:
            raise OutputError(f"{path}: inside DATA_DIR {data_dir}, which is only read")


def _check_before_predicting(args, task):
    """Every refusal that costs nothing: a DATA_DIR that is no folder or has no label files, outputs inside one."""
    from bratskeras.evaluate import scoring as evaluation
    from bratskeras.platform import outputs

    for data_dir in args.data_dirs:
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(2, "not a folder", data_dir)
        evaluation.find_references(data_dir, task)
    for path in filter(None, (args.out, args.keep_predictions)):
        _refuse_inside(path, args.data_dirs)
    if args.out:
        outputs.refuse_existing(args.out, args.overwrite, csv_kind())
        outputs.ensure_writable_folder(os.path.dirname(os.path.abspath(args.out)))


def _predict_and_score(args, options, task, pred_dirs):
    """(rows, folder records, ok) of every DATA_DIR predicted into its folder of `pred_dirs`."""
    from bratskeras.core.errors import BratsKerasError

    rows, folders, ok = [], [], True
    for data_dir, pred_dir in zip(args.data_dirs, pred_dirs):
        status = run_predict(args.model, data_dir, pred_dir, options, overwrite=args.overwrite)
        if status != 0 and not (os.path.isdir(pred_dir) and os.listdir(pred_dir)):
            raise BratsKerasError(f"{data_dir}: bratskeras predict wrote no prediction (exit status {status})")
        folder_rows, record = score_folder(data_dir, pred_dir, task, args.workers)
        record["predict_exit_status"] = status
        ok &= status == 0 and not (record["missing"] or record["failed"])
        rows += folder_rows
        folders.append(record)
    return rows, folders, ok


def run(args, options):
    """Predicts and scores every DATA_DIR, writes --out; returns (report dict, ok)."""
    import shutil

    from bratskeras.platform import outputs

    task = getattr(args, "predict_task", None)
    _check_before_predicting(args, task)
    pred_dirs = _prediction_folders(args.data_dirs, args.keep_predictions)
    try:
        rows, folders, ok = _predict_and_score(args, options, task, pred_dirs)
    finally:
        if args.keep_predictions is None:
            for pred_dir in pred_dirs:
                shutil.rmtree(pred_dir, ignore_errors=True)
    summary = summarize(rows)
    report = {"model": args.model, "predict_options": options, "folders": folders,
              "references": "the label files in each DATA_DIR as they are: whatever made them, "
                            "they are what is scored against",
              "cases": rows, "summary": summary, "goals": goals(summary)}
    if args.out:
        text = rows_to_csv(rows)

        def write_csv(tmp):
            with open(tmp, "w") as stream:
                stream.write(text)

        outputs.write_artefact(args.out, write_csv, kind=csv_kind(), overwrite=args.overwrite)
    return report, ok


def main(argv=None):
    import json

    from bratskeras.core.errors import BratsKerasError, user_message

    args, options = parse_args(argv)
    try:
        report, ok = run(args, options)
    except (BratsKerasError, OSError) as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_report(report))
    for folder in report["folders"]:
        for case_id in folder["missing"]:
            print(f"error: case {case_id}: no prediction from {folder['folder']} (scored as empty)", file=sys.stderr)
        for message in folder["failed"]:
            print(f"error: {message}", file=sys.stderr)
        for path in folder["extra"]:
            print(f"warning: {path}: no reference label file, not scored", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
