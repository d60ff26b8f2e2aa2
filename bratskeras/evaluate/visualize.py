"""PNG overlays of a case: reference and prediction side by side in three planes.

Rows are the axial, coronal and sagittal slices through the tumor centre;
columns the reference (when there is one) and the prediction, drawn over the
FLAIR image (MEN-RT: T1c, its only image). Both columns are in the case's
label scheme and drawn in its structures' colours (labels.STRUCTURE_COLOURS:
NCR/NETC green, ED/SNFH blue, ET magenta, RC yellow, CC cyan, GTV orange),
under one legend; the title carries the case's Dice per region of its scheme.

Axes: volumes are (D, H, W) = NIfTI (i, j, k); for BraTS' RAS-flipped
affine, k is axial, j coronal and i sagittal. Slices are transposed and
flipped so superior/anterior point up, as in ITK-SNAP's default view.
"""

import os

import numpy as np

from bratskeras.core import labels
from bratskeras.core.errors import DataError
from bratskeras.data import volumes
from bratskeras.evaluate import voxelwise
from bratskeras.platform import outputs

FIGURE_SIZE = (6.4, 9.6)  # inches, 2 columns x 3 rows
DPI = 100
_PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def tumor_centre(*class_maps):
    """(i, j, k) voxel at the tumor's centre of mass in the first non-empty map, else the volume centre."""
    for classes in class_maps:
        if classes is not None and np.any(classes > 0):
            return tuple(int(round(c)) for c in np.argwhere(classes > 0).mean(axis=0))
    shape = next(c.shape for c in class_maps if c is not None)
    return tuple(n // 2 for n in shape)


def _plane(volume, axis, index):
    """2-D slice for display: rows top to bottom, superior/anterior up."""
    return np.flipud(np.take(volume, index, axis=axis).T)


def _overlay(image_slice, class_slice, colours):
    """RGB (rows, cols, 3): grey image with the classes of `colours` ({class: RGB}) blended in at 60 %."""
    span = np.ptp(image_slice)
    grey = (image_slice - image_slice.min()) / span if span > 0 else np.zeros_like(image_slice)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for class_index, colour in colours.items():
        mask = class_slice == class_index
        rgb[mask] = 0.4 * rgb[mask] + 0.6 * np.asarray(colour)
    return rgb


def region_dice(prediction, reference, scheme):
    """{region: Dice} of a case over its scheme's regions (ped: WT, TC, ET, CC), class maps (D, H, W).

    WT, TC and ET are the regions `evaluate` scores (its classic structures
    hold the same classes); both empty counts 1, the BraTS rule.
    """
    scheme = labels.get_scheme(scheme)
    return {name: voxelwise.dice(np.isin(prediction, classes), np.isin(reference, classes))
            for name, classes in scheme.regions}


def dice_title(case_id, prediction, reference, scheme):
    """The figure title: the case id, and its Dice per region when there is a reference."""
    if reference is None:
        return f"{case_id} (no reference)"
    scores = region_dice(prediction, reference, scheme)
    return f"{case_id}\nDice " + ", ".join(f"{name} {value:.2f}" for name, value in scores.items())


def write_overlay(image, prediction, path, reference=None, title=None, scheme=labels.CLASSIC_SCHEME):
    """Writes the 3 x 2 overlay PNG of one case.

    Args:
        image: (D, H, W) background image (FLAIR).
        prediction: (D, H, W) class map of `scheme` (values 0..len(scheme.labels) - 1).
        path: output .png path (its folder is created).
        reference: (D, H, W) class map of `scheme`, or None (the column then says so).
        title: figure title (the case id, and its Dice).
        scheme: the label scheme (name or LabelScheme) both maps are in: its
            structures' colours and the one legend under both columns.

    Returns:
        `path`. The PNG is FIGURE_SIZE * DPI pixels (640 x 960).
    """
    # A Figure drawn by its own Agg canvas, not pyplot: pyplot would need the
    # process-wide backend (matplotlib.use) that belongs to the user, e.g. a
    # notebook's inline backend, and keeps every figure in its global registry.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    scheme = labels.get_scheme(scheme)
    colours = scheme.colours
    image = np.asarray(image, dtype=np.float32)
    centre = tumor_centre(reference, prediction)
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    axes = figure.subplots(3, 2)
    for row, (plane, axis) in enumerate(_PLANES):
        for column, (name, classes) in enumerate((("reference", reference), ("prediction", prediction))):
            ax = axes[row, column]
            shown = classes if classes is not None else np.zeros(image.shape, dtype=np.uint8)
            ax.imshow(_overlay(_plane(image, axis, centre[axis]), _plane(shown, axis, centre[axis]), colours),
                      interpolation="nearest")
            ax.set_title(f"{name if classes is not None else 'no reference'}, {plane} {centre[axis]}", fontsize=8)
            ax.axis("off")
    figure.legend(handles=[Patch(color=colours[c], label=scheme.names[c]) for c in colours],
                  loc="lower center", ncol=len(colours), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    with outputs.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    return path


def background_modality(scheme):
    """The image drawn under the labels: FLAIR, or the scheme's first image when it has none (MEN-RT: T1c)."""
    modalities = labels.get_scheme(scheme).modalities
    return "flair" if "flair" in modalities else modalities[0]


def show_case(case, prediction_path, out_dir):
    """Reads a case and its predicted label map and writes OUT_DIR/<id>.png.

    Args:
        case: layouts.Case (its background image and, when present, its label file are read).
        prediction_path: <id>.nii.gz label map on the case's grid, in the case's
            scheme (2017-2023 glioma: either release's values, as `evaluate` reads them).
        out_dir: folder for the PNG.

    Raises:
        DataError: unreadable files, grid mismatch or label values outside the case's scheme.
    """
    from bratskeras.evaluate.scoring import prediction_classes

    image, reference, properties = volumes.read_case(case, (background_modality(case.label_scheme),))
    values, _ = volumes.load_nifti(prediction_path)
    if tuple(values.shape) != tuple(properties["shape"]):
        raise DataError(f"{prediction_path}: shape {values.shape} differs from case {case.id} {properties['shape']}")
    prediction = prediction_classes(values, case.label_scheme, prediction_path)
    return write_overlay(image[..., 0], prediction, os.path.join(out_dir, f"{case.id}.png"),
                         reference=reference, title=dice_title(case.id, prediction, reference, case.label_scheme),
                         scheme=case.label_scheme)
