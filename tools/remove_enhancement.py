"""Copies real scans with their tumour's contrast uptake taken out: a measurement proxy for non-enhancing tumours.

    python tools/remove_enhancement.py DATA_DIR OUT_DIR [--margin 2]

Issue #23's goal "fewer than 1,000 ET voxels on a tumour without
enhancement" needs real scans of tumours without enhancement, and no public
one with all four images and a reference could be found (the search is in
docs/history.md). This tool makes the nearest thing from scans that are
public: for every case of DATA_DIR (any layout bratskeras reads), it writes
OUT_DIR/<case id>/ holding

- the FLAIR, T1 and T2 copied byte for byte;
- the T1c, where inside the reference tumour (grown by --margin voxels) each
  voxel is replaced by the same voxel's T1 mapped to T1c intensities, the map
  matching T1's quantiles to T1c's over the healthy brain (the brain at least
  5 voxels from the reference tumour). That is what the T1c would show with
  no uptake: the T1 contrast in the T1c's intensity scale, with the scan's own
  anatomy, noise and blur. Outside that zone the T1c is unchanged;
- the label file with its enhancing tumour relabelled as the scheme's
  non-enhancing core (brats2020 and 2023: ET -> NCR/NETC): the reference of
  the same tumour without enhancement. WT and TC are unchanged.

`tools/score_real.py MODEL OUT_DIR` then counts the ET voxels a model
predicts on tumours that do not enhance, in real anatomy. It is a proxy, not
a real non-enhancing scan: a real low-grade glioma is also a different
tumour (diffuse, no necrosis), and its T1c may differ from its T1 in ways
this map does not make.

The brain is where both T1 and T1c are foreground (the package's rule for a
zero or constant background, bratskeras.data.preprocessing). DATA_DIR is only read;
a case folder already in OUT_DIR, or an OUT_DIR inside DATA_DIR, is refused
before anything is written. Exit status: 0 when every case was written, 1
when a case could not be (named on stderr), 2 for a wrong command line.
"""

import argparse
import os
import shutil
import sys

import numpy as np

# Healthy brain for the intensity map: this far (voxels) from the reference tumour, clear of its oedema's edge.
HEALTHY_MARGIN = 5
# Quantiles matched between T1 and T1c over the healthy brain (the tails left out: vessels, noise).
QUANTILES = np.linspace(0.5, 99.5, 199)


def t1_as_t1c(t1, t1c, healthy):
    """T1 values mapped to T1c intensities by matching their quantiles over `healthy`.

    Args:
        t1, t1c: float arrays of one shape (X, Y, Z), the same scan's T1 and T1c.
        healthy: bool array (X, Y, Z), the voxels the map is learnt on.

    Returns:
        float32 array (X, Y, Z): each voxel's T1 on the T1c scale (monotone map).
    """
    source = np.percentile(t1[healthy], QUANTILES)
    target = np.percentile(t1c[healthy], QUANTILES)
    return np.interp(t1, source, target).astype(np.float32)


def remove_uptake(t1, t1c, tumour, margin):
    """(T1c without uptake, replaced-voxel mask): t1_as_t1c inside `tumour` grown by `margin` voxels, in the brain.

    Args:
        t1, t1c: float arrays (X, Y, Z).
        tumour: bool array (X, Y, Z), the reference whole tumour.
        margin: voxels the zone reaches beyond the tumour (partial volume at its edge).
    """
    from scipy import ndimage

    from bratskeras.data.preprocessing import channel_foreground

    brain = channel_foreground(t1) & channel_foreground(t1c)
    zone = ndimage.binary_dilation(tumour, iterations=margin) & brain if margin else tumour & brain
    healthy = brain & ~ndimage.binary_dilation(tumour, iterations=HEALTHY_MARGIN)
    if healthy.sum() < len(QUANTILES):
        raise ValueError(f"only {int(healthy.sum())} healthy brain voxels to map T1 onto T1c")
    result = t1c.astype(np.float32)
    result[zone] = t1_as_t1c(t1, t1c, healthy)[zone]
    return result, zone


def without_et(labels, scheme):
    """On-disk label values with the scheme's ET written as its non-enhancing core (NCR / NETC).

    ValueError for a scheme without them (MEN-RT's GTV), from predict's own lookup.
    """
    from bratskeras.core.labels import get_scheme
    from bratskeras.predict.regions import enhancing_and_core

    enhancing_class, core_class = enhancing_and_core(scheme, step="remove_enhancement")
    values = get_scheme(scheme).labels
    return np.where(labels == values[enhancing_class], values[core_class], labels).astype(labels.dtype)


def _save_like(array, image, path):
    """Writes `array` with `image`'s affine and header; integer files stay integer (rounded), else float32."""
    import nibabel as nib

    header = image.header.copy()
    dtype = image.get_data_dtype()
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max).astype(dtype)
    else:
        array = array.astype(np.float32)
        header.set_data_dtype(np.float32)
    header.set_slope_inter(1, 0)
    nib.save(nib.Nifti1Image(array, image.affine, header), path)


def write_case(case, out_dir, margin):
    """Writes one case's proxy into out_dir/<case id>/ (refused if it exists); returns (replaced, relabelled) voxels."""
    from bratskeras.data.volumes import load_label_map, load_nifti

    folder = os.path.join(out_dir, case.id)
    if os.path.exists(folder):
        raise FileExistsError(f"{folder} exists; nothing is overwritten")
    if case.seg is None:
        raise ValueError("no label file")
    t1, _ = load_nifti(case.modalities["t1"])
    t1c, t1c_image = load_nifti(case.modalities["t1ce"])
    labels, labels_image = load_label_map(case.seg)
    new_labels = without_et(labels, case.label_scheme)
    new_t1c, zone = remove_uptake(t1, t1c, labels > 0, margin)
    rewritten = {case.modalities["t1ce"]: (new_t1c, t1c_image), case.seg: (new_labels, labels_image)}
    os.makedirs(folder)
    for path in case.source_files():
        target = os.path.join(folder, os.path.basename(path))
        if path in rewritten:
            _save_like(*rewritten[path], target)
        else:
            shutil.copy2(path, target)
    return int(zone.sum()), int((labels != new_labels).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", metavar="DATA_DIR")
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--margin", type=int, default=2, help="Voxels the replaced zone reaches beyond the tumour.")
    args = parser.parse_args(argv)
    from bratskeras.data import layouts

    data, out = os.path.realpath(args.data_dir), os.path.realpath(args.out_dir)
    if out == data or out.startswith(data + os.sep):
        print(f"error: {args.out_dir} is inside {args.data_dir}, which is only read", file=sys.stderr)
        return 1
    try:
        dataset = layouts.discover(args.data_dir)
    except Exception as error:  # a DataError names the folder
        print(f"error: {error}", file=sys.stderr)
        return 1
    taken = [case.id for case in dataset.cases if os.path.exists(os.path.join(args.out_dir, case.id))]
    if taken:
        print(f"error: {os.path.join(args.out_dir, taken[0])} exists ({len(taken)} case folder(s) already "
              f"in {args.out_dir}); nothing is overwritten", file=sys.stderr)
        return 1
    failed, written = list(dataset.problems), 0
    for case in dataset.cases:
        try:
            replaced, relabelled = write_case(case, args.out_dir, args.margin)
        except Exception as error:
            failed.append(f"{case.id}: {error}")
            continue
        written += 1
        print(f"{case.id}: T1c uptake removed from {replaced} voxels, {relabelled} ET voxels relabelled as core")
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    print(f"{written} of {len(dataset.cases)} case(s) written to {args.out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
