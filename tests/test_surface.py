

@pytest.mark.parametrize("point_cost", [0, 10**9])  # always the queries / always the transforms
def test_both_ways_give_the_same_numbers(monkeypatch, point_cost):
    monkeypatch.setattr(surface, "_POINT_COST_IN_VOXELS", point_cost)
    monkeypatch.setattr(surface, "_RECENT", type(surface._RECENT)())
    rng = np.random.default_rng(42)
    pred = ndimage.binary_dilation(rng.random((24, 20, 16)) < 0.01, iterations=2)
    ref = ndimage.binary_dilation(rng.random((24, 20, 16)) < 0.01, iterations=3)
    expected = hd95_by_distance_transform(pred, ref, (1.0, 2.0, 0.5))
    assert surface.hd95(pred, ref, (1.0, 2.0, 0.5)) == pytest.approx(expected, abs=1e-9)
