"""Overlay PNGs: written, right size, colours where the tumor is."""

import nibabel as nib
import numpy as np
from click.testing import CliRunner
from matplotlib import image as mpimg

from bratskeras import layouts, synth, visualize, volumes
from bratskeras.cli import cli

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
