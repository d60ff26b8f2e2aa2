"""Overlay PNGs: written, right size, colours where the tumor is."""

import nibabel as nib
import numpy as np
from click.testing import CliRunner
from matplotlib import image as mpimg

from bratskeras.cli import cli
from bratskeras.data import layouts, volumes
from bratskeras.evaluate import visualize
from bratskeras.synth import phantoms as synth

SHAPE = (32, 32, 24)


def test_tumor_centre_prefers_reference_then_prediction():
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    pred[1, 2, 3] = 2
    assert visualize.tumor_centre(ref, pred) == (1, 2, 3)
    ref[6:9, 6:9, 6:9] = 1
    assert visualize.tumor_centre(ref, pred) == (7, 7, 7)
    assert visualize.tumor_centre(None, np.zeros_like(ref)) == (5, 5, 5)


def test_overlay_png_has_the_figure_size_and_class_colours(tmp_path):
    image = np.random.default_rng(0).random((20, 20, 12)).astype(np.float32)
    classes = np.zeros((20, 20, 12), np.uint8)
    classes[5:15, 5:15, 3:9] = 3  # ET: magenta
    path = visualize.write_overlay(image, classes, str(tmp_path / "x.png"), reference=classes, title="case")
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (int(visualize.FIGURE_SIZE[1] * visualize.DPI),
                                int(visualize.FIGURE_SIZE[0] * visualize.DPI))
    rgb = pixels[..., :3]
    magenta = (rgb[..., 0] > 0.55) & (rgb[..., 2] > 0.55) & (rgb[..., 1] < 0.45)
    assert magenta.sum() > 500


def test_cli_show_writes_one_png_per_case(tmp_path):
    synth.write_dataset(tmp_path / "d", cases=2, shape=SHAPE, layout="brats2021")
    dataset = layouts.discover(tmp_path / "d")
    (tmp_path / "pred").mkdir()
    for case in dataset.cases:
        _, _, properties = volumes.read_case(case)
        volumes.write_label_map(np.asarray(nib.load(case.seg).dataobj), properties,
                           str(tmp_path / "pred" / f"{case.id}.nii.gz"))
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "pred"), str(tmp_path / "d"), str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    for case in dataset.cases:
        assert (tmp_path / "png" / f"{case.id}.png").stat().st_size > 10_000
    again = CliRunner().invoke(cli, ["show", str(tmp_path / "pred"), str(tmp_path / "d"), str(tmp_path / "png")])
    assert again.exit_code == 1 and "exists" in again.output


def test_drawing_leaves_the_users_matplotlib_backend_alone(tmp_path):
    """A notebook user's backend (here "pdf", any non-Agg one) is the same after bratskeras draws."""
    import matplotlib

    from bratskeras.training.callbacks import plot_curves

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_loss,dice_wt,val_dice_wt,learning_rate\n"
                       "1,0.9,0.95,0.2,0.1,0.001\n2,0.7,0.8,0.4,0.3,0.0005\n")
    classes = np.zeros((12, 12, 8), np.uint8)
    classes[3:8, 3:8, 2:6] = 2
    original = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        visualize.write_overlay(np.ones(classes.shape, np.float32), classes, str(tmp_path / "case.png"))
        plot_curves(str(history), str(tmp_path / "curves.png"))
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(original)
    assert (tmp_path / "case.png").stat().st_size > 1000 and (tmp_path / "curves.png").stat().st_size > 1000
    assert mpimg.imread(str(tmp_path / "curves.png")).ndim == 3  # a real PNG, drawn by Agg
