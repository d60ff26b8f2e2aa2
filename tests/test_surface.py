"""surface.hd95: nearest-neighbour queries give the distance-transform numbers of medpy and panoptica."""

import numpy as np
import pytest
from scipy import ndimage

from bratskeras.evaluate import surface


def hd95_by_distance_transform(pred, ref, spacing):
    """The medpy / panoptica computation: EDTs of the whole array."""
    def border(mask):
        return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))

    to_ref = ndimage.distance_transform_edt(~border(ref), sampling=spacing)[border(pred)]
    to_pred = ndimage.distance_transform_edt(~border(pred), sampling=spacing)[border(ref)]
    return np.percentile(np.hstack((to_pred, to_ref)), 95)


@pytest.mark.parametrize("seed", range(8))
def test_matches_distance_transforms(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(10, 30, 3))
    pred = ndimage.binary_opening(rng.random(shape) < 0.4) | (rng.random(shape) < 0.01)
    ref = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=2)
    pred[0, 0, 0] = ref[-1, -1, -1] = True  # both non-empty, touching the array's border
    spacing = tuple(rng.choice([0.5, 1.0, 1.5, 3.0], 3))
    assert surface.hd95(pred, ref, spacing) == pytest.approx(hd95_by_distance_transform(pred, ref, spacing),
                                                             abs=1e-9)


def test_docstring_example_and_bounding_box():
    pred, ref = np.zeros((4, 4, 6), bool), np.zeros((4, 4, 6), bool)
    pred[0, 0, 0] = ref[0, 0, 3] = True
    assert surface.hd95(pred, ref, (1, 1, 2)) == 6.0
    assert surface.bounding_box(pred | ref, pad=1) == (slice(0, 2), slice(0, 2), slice(0, 5))
    assert surface.bounding_box(np.zeros((3, 3, 3), bool)) is None


@pytest.mark.parametrize("point_cost", [0, 10**9])  # always the queries / always the transforms
def test_both_ways_give_the_same_numbers(monkeypatch, point_cost):
    monkeypatch.setattr(surface, "_POINT_COST_IN_VOXELS", point_cost)
    monkeypatch.setattr(surface, "_RECENT", type(surface._RECENT)())
    rng = np.random.default_rng(42)
    pred = ndimage.binary_dilation(rng.random((24, 20, 16)) < 0.01, iterations=2)
    ref = ndimage.binary_dilation(rng.random((24, 20, 16)) < 0.01, iterations=3)
    expected = hd95_by_distance_transform(pred, ref, (1.0, 2.0, 0.5))
    assert surface.hd95(pred, ref, (1.0, 2.0, 0.5)) == pytest.approx(expected, abs=1e-9)
