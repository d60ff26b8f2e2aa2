"""Where a model's predictions on scans with references go wrong, told in intensities the generator can paint.

    python tools/error_analysis.py PRED_DIR DATA_DIR [--json]

PRED_DIR holds <case id>.nii.gz predictions (`bratskeras predict`, or
`tools/score_real.py --keep-predictions`); DATA_DIR the scans with their
label files, in any layout bratskeras reads. Per case, and as medians over
the cases, it prints the figures the SynthSeg generator's steps were drawn
from (the docstrings of bratskeras/synth/synthseg/contrasts.py and mimics.py cite them):

- WT precision and recall: under- (recall low) or over-segmentation;
- oedema the model missed and found: median FLAIR on the healthy brain's
  p50..p99 scale, (x - p50) / (p99 - p50), and median T2 on the scale from
  the parenchyma's median (0) to the CSF's (1) (`FadingOedema`,
  `SubtleT2Oedema`);
- CSF-like voxels (T2 above the healthy brain's p95 and T1 below its p10):
  their FLAIR p75 on the p50..p99 scale and how many were called tumour
  (`UnsuppressedCSF`);
- enhancing tumour called where the reference has none: voxels outside the
  reference tumour and inside it, and their median T1c on the p50..p99 scale
  against the reference ET's and NCR's (`FaintEnhancement`).

"Healthy brain" is every non-zero voxel that neither the reference nor the
prediction calls tumour. The figures describe scans and a model's errors;
they do not score the model (`tools/score_real.py` does).

Exit status: 0; 1 when no prediction pairs with a case or a case cannot be read.
"""

import argparse
import json
import sys

import numpy as np

from bratskeras.core.labels import ALL_MODALITIES as MODALITIES
from bratskeras.core.labels import CLASS_NAMES

NCR, ED, ET = (CLASS_NAMES.index(name) for name in ("NCR", "ED", "ET"))  # class indices of volumes.read_case
NOT_MEASURED = None  # a figure whose voxels are absent in this case


def position(values, low, high, percentile=50):
    """A percentile of `values` (the median) on the scale where `low` is 0 and `high` is 1; None without values."""
    if values.size == 0 or high == low:
        return NOT_MEASURED
    return round(float((np.percentile(values, percentile) - low) / (high - low)), 3)


def case_figures(images, reference, prediction):
    """The module docstring's figures for one case.

    Args:
        images: dict modality -> float32 (D, H, W), the four of MODALITIES.
        reference, prediction: class indices (D, H, W): 0 background, 1 NCR, 2 ED, 3 ET.

    Returns:
        dict of floats and ints (None where a case has no such voxels).
    """
    brain = images["flair"] != 0
    ref_wt, pred_wt = reference > 0, prediction > 0
    healthy = brain & ~ref_wt & ~pred_wt
    p = {m: np.percentile(images[m][healthy], (10, 50, 95, 99)) for m in MODALITIES}
    csf_like = (images["t2"] > p["t2"][2]) & (images["t1"] < p["t1"][0])
    csf, csf_all = csf_like & healthy, csf_like & brain & ~ref_wt  # the latter: what the model may have called tumour
    parenchyma = healthy & ~csf & (images["t2"] <= p["t2"][2])
    t2_parenchyma = float(np.median(images["t2"][parenchyma])) if parenchyma.any() else 0.0
    t2_csf = float(np.median(images["t2"][csf])) if csf.any() else t2_parenchyma
    oedema = reference == ED
    missed, found = oedema & ~pred_wt, oedema & pred_wt
    ref_et, pred_et = reference == ET, prediction == ET
    false_et = pred_et & ~ref_et
    flair_low, flair_high = p["flair"][1], p["flair"][3]
    t1c_low, t1c_high = p["t1ce"][1], p["t1ce"][3]
    overlap = int((ref_wt & pred_wt).sum())
    return {
        "reference_wt_voxels": int(ref_wt.sum()), "predicted_wt_voxels": int(pred_wt.sum()),
        "wt_precision": round(overlap / pred_wt.sum(), 3) if pred_wt.any() else NOT_MEASURED,
        "wt_recall": round(overlap / ref_wt.sum(), 3) if ref_wt.any() else NOT_MEASURED,
        "missed_oedema_voxels": int(missed.sum()), "found_oedema_voxels": int(found.sum()),
        "missed_oedema_flair": position(images["flair"][missed], flair_low, flair_high),
        "found_oedema_flair": position(images["flair"][found], flair_low, flair_high),
        "missed_oedema_t2_to_csf": position(images["t2"][missed], t2_parenchyma, t2_csf),
        "found_oedema_t2_to_csf": position(images["t2"][found], t2_parenchyma, t2_csf),
        "csf_voxels": int(csf_all.sum()), "csf_called_tumour": int((csf_all & pred_wt).sum()),
        "csf_flair_p75": position(images["flair"][csf_all], flair_low, flair_high, percentile=75),
        "false_et_outside_tumour": int((false_et & ~ref_wt).sum()), "false_et_inside_tumour": int((false_et & ref_wt).sum()),
        "false_et_t1c": position(images["t1ce"][false_et], t1c_low, t1c_high),
        "reference_et_t1c": position(images["t1ce"][ref_et], t1c_low, t1c_high),
        "reference_ncr_t1c": position(images["t1ce"][reference == NCR], t1c_low, t1c_high),
    }


def analyse(pred_dir, data_dir):
    """(per-case rows, medians over cases, problem lines) of PRED_DIR against DATA_DIR."""
    from bratskeras.data import layouts, volumes
    from bratskeras.evaluate import pairing

    predictions = pairing.find_predictions(pred_dir)
    rows, problems = [], []
    for case in layouts.discover(data_dir).cases:
        if case.id not in predictions:
            problems.append(f"{case.id}: no prediction in {pred_dir}")
            continue
        image, reference, _ = volumes.read_case(case, MODALITIES)
        values, _ = volumes.load_label_map(predictions[case.id])
        prediction = pairing.prediction_classes(values, case.label_scheme, predictions[case.id])
        images = {m: image[..., i] for i, m in enumerate(MODALITIES)}
        rows.append({"id": case.id, **case_figures(images, reference, prediction)})
    medians = {}
    for key in [k for k in (rows[0] if rows else {}) if k != "id"]:
        values = [r[key] for r in rows if r[key] is not NOT_MEASURED]
        if values:
            medians[key] = round(float(np.median(values)), 3)
    return rows, medians, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred_dir", metavar="PRED_DIR")
    parser.add_argument("data_dir", metavar="DATA_DIR")
    parser.add_argument("--json", action="store_true", help="Print rows and medians as JSON.")
    args = parser.parse_args(argv)
    try:
        rows, medians, problems = analyse(args.pred_dir, args.data_dir)
    except Exception as error:  # a DataError names the file or case
        print(f"error: {error}", file=sys.stderr)
        return 1
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps({"cases": rows, "medians": medians}, indent=1))
    else:
        keys = [k for k in (rows[0] if rows else {}) if k != "id"]
        for row in rows:
            print(row["id"], " ".join(f"{k}={row[k]}" for k in keys))
        print("median over cases:", " ".join(f"{k}={v}" for k, v in medians.items()))
    return 1 if problems or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
