"""PNG overlays of a case: reference and prediction side by side in three planes.

Rows are the axial, coronal and sagittal slices through the tumor centre;
columns the reference (when there is one) and the prediction, drawn over the
FLAIR image in the papers' colours: NCR green, ED blue, ET magenta.

Axes: volumes are (D, H, W) = NIfTI (i, j, k); for BraTS' RAS-flipped
affine, k is axial, j coronal and i sagittal. Slices are transposed and
flipped so superior/anterior point up, as in ITK-SNAP's default view.
"""

import os

import numpy as np

from bratskeras import labels, outputs, volumes
from bratskeras.errors import DataError

# Class index (bratskeras.labels) -> RGB, the papers' colours.
CLASS_COLOURS = {1: (0.0, 0.8, 0.0), 2: (0.0, 0.3, 1.0), 3: (1.0, 0.0, 1.0)}
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


def _overlay(image_slice, class_slice):
    """RGB (rows, cols, 3): grey image with classes blended in at 60 %."""
    span = np.ptp(image_slice)
    grey = (image_slice - image_slice.min()) / span if span > 0 else np.zeros_like(image_slice)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for class_index, colour in CLASS_COLOURS.items():
        mask = class_slice == class_index
        rgb[mask] = 0.4 * rgb[mask] + 0.6 * np.asarray(colour)
    return rgb


def write_overlay(image, prediction, path, reference=None, title=None):
    """Writes the 3 x 2 overlay PNG of one case.

    Args:
        image: (D, H, W) background image (FLAIR).
        prediction: (D, H, W) class map, values 0..3.
        path: output .png path (its folder is created).
        reference: (D, H, W) class map or None (the column then says so).
        title: figure title (the case id).

    Returns:
        `path`. The PNG is FIGURE_SIZE * DPI pixels (640 x 960).
    """
    # A Figure drawn by its own Agg canvas, not pyplot: pyplot would need the
    # process-wide backend (matplotlib.use) that belongs to the user, e.g. a
    # notebook's inline backend, and keeps every figure in its global registry.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image = np.asarray(image, dtype=np.float32)
    centre = tumor_centre(reference, prediction)
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    axes = figure.subplots(3, 2)
    for row, (plane, axis) in enumerate(_PLANES):
        for column, (name, classes) in enumerate((("reference", reference), ("prediction", prediction))):
            ax = axes[row, column]
            shown = classes if classes is not None else np.zeros(image.shape, dtype=np.uint8)
            ax.imshow(_overlay(_plane(image, axis, centre[axis]), _plane(shown, axis, centre[axis])),
                      interpolation="nearest")
            ax.set_title(f"{name if classes is not None else 'no reference'}, {plane} {centre[axis]}", fontsize=8)
            ax.axis("off")
    figure.legend(handles=[Patch(color=CLASS_COLOURS[c], label=n) for c, n in ((1, "NCR"), (2, "ED"), (3, "ET"))],
                  loc="lower center", ncol=3, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    with outputs.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    return path


def show_case(case, prediction_path, out_dir):
    """Reads a case and its predicted label map and writes OUT_DIR/<id>.png.

    Args:
        case: layouts.Case (its FLAIR and, when present, its label file are read).
        prediction_path: <id>.nii.gz label map on the case's grid.
        out_dir: folder for the PNG.

    Raises:
        DataError: unreadable files, grid mismatch or label values of no scheme.
    """
    image, reference, properties = volumes.read_case(case, ("flair",))
    values, _ = volumes.load_nifti(prediction_path)
    if tuple(values.shape) != tuple(properties["shape"]):
        raise DataError(f"{prediction_path}: shape {values.shape} differs from case {case.id} {properties['shape']}")
    prediction, _ = labels.label_map_to_classes(values, case.label_scheme, prediction_path)
    return write_overlay(image[..., 0], prediction, os.path.join(out_dir, f"{case.id}.png"),
                         reference=reference, title=case.id)
