"""Lesion-wise metrics of the BraTS 2023-2025 challenges, as the official package computes them.

The challenges rank with the `brats-evaluation` package (AGPL-3.0), which
drives `panoptica` with one YAML config per task. This module reproduces
that computation with numpy and scipy (tests/test_lesionwise.py compares
every value with the official package to 1e-6). Per group of the task's
config (labels.LabelScheme.lesion_groups, e.g. gli: netc, snfh, et, rc,
tc = 1+3, wt = 1+2+3):

1. The group's voxels (its on-disk label values) form one binary mask for
   the prediction and one for the reference.
2. Lesions are their 26-connected components (panoptica's cc3d default).
3. Prediction and reference lesions are matched one-to-one by maximum
   bipartite matching on Dice (scipy's linear_sum_assignment on 1 - Dice,
   pairs with Dice >= 1e-6 only): tp matched pairs, fp unmatched
   prediction lesions, fn unmatched reference lesions.
4. Per matched pair: Dice, HD95 (surface.hd95: 95th percentile of the
   pooled surface-to-surface distances, surfaces = mask minus its
   6-connected erosion, at the voxel spacing) and NSD (surface.nsd: the
   fraction of each surface within the smallest voxel size of the other,
   averaged over the two directions).
   sq_dsc, sq_hd95 and sq_nsd are their means, sq_*_std their standard
   deviations (population); rq = tp / (tp + fp/2 + fn/2); pq_dsc = sq_dsc * rq.
5. global_bin_dsc, global_bin_hd95 and global_bin_nsd compare the whole
   group masks; the official global metrics are in voxels, whatever the
   spacing (panoptica passes no spacing to them), and so are these: HD95
   in voxels, NSD at a tolerance of 0.5 voxel (panoptica's fallback).

Edge cases (identical in every bundled config): with no matched lesion
(tp = 0), sq_dsc, sq_nsd and pq_dsc are 0 and sq_hd95 inf, unless neither side has
a lesion, where they are NaN (rq NaN too, std NaN whenever tp = 0). The
global metrics take the same values when the two group masks do not
overlap at all (so a prediction beside the reference gets HD95 inf, not a
distance).

Axes: the official package reads NIfTI with SimpleITK, whose arrays are
(k, j, i) while its spacing stays (i, j, k), so it pairs axis k with
axis i's spacing. `case_metrics` computes on the transposed view with the
spacing as given, which is the same arithmetic, and numbers lesions in the
same raster order (the order decides ties in the matching). On BraTS'
isotropic 1 mm grid the pairing changes nothing.

Arrays: label maps (D, H, W) = NIfTI (i, j, k) of on-disk label values.
"""

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from bratskeras.core import labels
from bratskeras.evaluate import surface

# The official names, in the order the text summary shows them.
METRICS = ("tp", "fp", "fn", "rq", "pq_dsc", "sq_dsc", "sq_dsc_std", "sq_hd95", "sq_hd95_std", "sq_nsd", "sq_nsd_std",
           "global_bin_dsc", "global_bin_hd95", "global_bin_nsd")
# The global metrics are computed in voxel units (no spacing), where
# panoptica's NSD tolerance falls back to 0.5 voxel: only surface voxels the
# two masks share count. Lesion pairs use the smallest voxel size (1 mm on BraTS).
GLOBAL_NSD_TOLERANCE = 0.5
MATCHING_THRESHOLD = 1e-6
# A pair is matched when 1 - Dice beats this default cost of an unmatched one.
_UNMATCHED_COST = 1.0 + 1e-6
_LESION_STRUCTURE = ndimage.generate_binary_structure(3, 3)  # 26-connectivity


def case_metrics(prediction, reference, scheme, spacing=(1.0, 1.0, 1.0)):
    """Every lesion-wise group of one case.

    Args:
        prediction, reference: integer label maps (D, H, W) of on-disk values.
        scheme: a labels.SCHEMES name or LabelScheme; its lesion_groups are scored.
        spacing: the NIfTI header's voxel size (i, j, k) in mm.

    Returns:
        {group: {metric: value}} with METRICS as keys (tp, fp, fn ints, the rest floats).
    """
    scheme = labels.get_scheme(scheme)
    prediction, reference = np.asarray(prediction).T, np.asarray(reference).T
    if prediction.dtype.kind in "iu" and reference.dtype.kind in "iu":
        prediction, reference = _as_uint8(prediction), _as_uint8(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape[::-1]} != reference shape {reference.shape[::-1]}")
    # One bounding box of everything any group holds: later crops are cheap.
    crop = surface.bounding_box((prediction > 0) | (reference > 0), pad=0)
    if crop is not None:
        prediction, reference = prediction[crop], reference[crop]
    return {group: group_metrics(_group_mask(prediction, values), _group_mask(reference, values), spacing)
            for group, values in scheme.lesion_groups}


def _group_mask(label_map, values):
    """label_map in `values`, by a 256-entry lookup table when the map is uint8 (np.isin sorts)."""
    if label_map.dtype != np.uint8:
        return np.isin(label_map, values)
    table = np.zeros(256, dtype=bool)
    table[list(values)] = True
    return table[label_map]


def group_metrics(prediction, reference, spacing=(1.0, 1.0, 1.0)):
    """Lesion-wise metrics of one group's binary masks (module docstring, steps 2-5).

    Args:
        prediction, reference: bool arrays of one shape (3-D).
        spacing: voxel size per axis of these arrays.

    Returns:
        {metric: value} for METRICS.

    Example: a reference with two lesions, a prediction that finds one
    exactly and adds one elsewhere: tp 1, fp 1, fn 1, rq 0.5, sq_dsc 1.0,
    pq_dsc 0.5, sq_hd95 0.0.
    """
    spacing = tuple(float(s) for s in spacing)
    # Everything below happens inside the group's bounding box: small groups cost little.
    box = surface.bounding_box(prediction | reference, pad=0)
    if box is not None:
        prediction, reference = prediction[box], reference[box]
    ref_lesions, n_ref = ndimage.label(reference, structure=_LESION_STRUCTURE)
    pred_lesions, n_pred = ndimage.label(prediction, structure=_LESION_STRUCTURE)
    pairs = match_lesions(ref_lesions, n_ref, pred_lesions, n_pred)
    dice = [d for _, _, d in pairs]
    hd95, nsd = _pair_surface_metrics(ref_lesions, pred_lesions, pairs, spacing)
    tp = len(pairs)
    result = {"tp": tp, "fp": n_pred - tp, "fn": n_ref - tp}
    result["rq"] = tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_ref - tp)) if tp else _zero_tp(n_pred, n_ref, 0.0)
    result["sq_dsc"] = float(np.mean(dice)) if tp else _zero_tp(n_pred, n_ref, 0.0)
    result["sq_dsc_std"] = float(np.std(dice)) if tp else np.nan
    result["sq_hd95"] = float(np.mean(hd95)) if tp else _zero_tp(n_pred, n_ref, np.inf)
    result["sq_hd95_std"] = float(np.std(hd95)) if tp else np.nan
    result["sq_nsd"] = float(np.mean(nsd)) if tp else _zero_tp(n_pred, n_ref, 0.0)
    result["sq_nsd_std"] = float(np.std(nsd)) if tp else np.nan
    result["pq_dsc"] = result["sq_dsc"] * result["rq"]
    overlap = np.count_nonzero(prediction & reference)
    if tp == n_pred == n_ref == 1 and spacing == (1.0, 1.0, 1.0):
        # One lesion each, matched: the group masks are that pair, already scored.
        result["global_bin_dsc"], result["global_bin_hd95"] = dice[0], hd95[0]
        result["global_bin_nsd"] = _global_nsd(prediction, reference)
    elif overlap == 0:
        result["global_bin_dsc"] = _zero_tp(n_pred, n_ref, 0.0)
        result["global_bin_hd95"] = _zero_tp(n_pred, n_ref, np.inf)
        result["global_bin_nsd"] = _zero_tp(n_pred, n_ref, 0.0)
    else:
        result["global_bin_dsc"] = 2.0 * overlap / (np.count_nonzero(prediction) + np.count_nonzero(reference))
        # The official global metrics ignore the voxel spacing (panoptica passes none): voxel units.
        result["global_bin_hd95"] = surface.hd95(prediction, reference, (1.0, 1.0, 1.0))
        result["global_bin_nsd"] = _global_nsd(prediction, reference)
    return {key: result[key] for key in METRICS}


def _zero_tp(n_pred, n_ref, value):
    """The configs' value with no true positive: NaN when neither side has a lesion, else `value`."""
    return np.nan if n_pred + n_ref == 0 else value


def match_lesions(ref_lesions, n_ref, pred_lesions, n_pred):
    """Maximum bipartite matching on Dice, as panoptica's MaxBipartiteMatching.

    Args:
        ref_lesions, pred_lesions: int label arrays (0 background, 1..n lesions).
        n_ref, n_pred: number of lesions in each.

    Returns:
        [(ref label, pred label, Dice)] of the matched pairs, by reference label.
    """
    if n_ref == 0 or n_pred == 0:
        return []
    ref_sizes = np.bincount(ref_lesions.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_lesions.ravel(), minlength=n_pred + 1)
    both = (ref_lesions > 0) & (pred_lesions > 0)
    # Overlap table from one bincount of (ref, pred) pair codes.
    codes = ref_lesions[both].astype(np.int64) * (n_pred + 1) + pred_lesions[both]
    overlap = np.bincount(codes, minlength=(n_ref + 1) * (n_pred + 1)).reshape(n_ref + 1, n_pred + 1)
    dice = 2.0 * overlap / (ref_sizes[:, None] + pred_sizes[None, :]).clip(min=1)
    cost = np.full((n_ref, n_pred), _UNMATCHED_COST)
    candidates = dice[1:, 1:] >= MATCHING_THRESHOLD
    cost[candidates] = 1.0 - dice[1:, 1:][candidates]
    rows, cols = linear_sum_assignment(cost)
    return [(int(r) + 1, int(c) + 1, float(dice[r + 1, c + 1])) for r, c in zip(rows, cols) if cost[r, c] < 1.0]


def _pair_surface_metrics(ref_lesions, pred_lesions, pairs, spacing):
    """HD95 and NSD of each matched pair, each within the pair's own bounding box: ([hd95], [nsd])."""
    if not pairs:
        return [], []
    ref_boxes, pred_boxes = ndimage.find_objects(ref_lesions), ndimage.find_objects(pred_lesions)
    hd95, nsd = [], []
    for ref_label, pred_label, _ in pairs:
        box = _union_box(ref_boxes[ref_label - 1], pred_boxes[pred_label - 1])
        pred, ref = pred_lesions[box] == pred_label, ref_lesions[box] == ref_label
        hd95.append(surface.hd95(pred, ref, spacing))
        nsd.append(surface.nsd(pred, ref, spacing))
    return hd95, nsd


def _global_nsd(prediction, reference):
    """The group masks' NSD in voxel units at panoptica's fallback tolerance (GLOBAL_NSD_TOLERANCE)."""
    return surface.nsd(prediction, reference, (1.0, 1.0, 1.0), tolerance=GLOBAL_NSD_TOLERANCE)


def _as_uint8(label_map):
    """An integer label map as uint8 when every value fits (BraTS labels always do)."""
    if label_map.dtype == np.uint8 or label_map.size == 0:
        return label_map
    return label_map.astype(np.uint8) if 0 <= label_map.min() and label_map.max() <= 255 else label_map


def _union_box(a, b):
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
