"""Sliding windows, Gaussian weights, TTA, model setup, predict on every layout, CLI."""

import dataclasses
import os
import shutil

import keras
import nibabel as nib
import numpy as np
import pytest
from cli_checks import record_batches
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core.errors import ModelError, OutputExistsError
from bratskeras.data import layouts, volumes
from bratskeras.data.contract import InputContract
from bratskeras.data.model_files import write_keras
from bratskeras.data.preprocessing import brain_bbox
from bratskeras.models import build_model
from bratskeras.predict import inference, model_setup, tiling
from bratskeras.synth import phantoms as synth

SHAPE = (32, 32, 24)


def identity_model(channels):
    inputs = keras.Input((None, None, None, channels))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras.utils.set_random_seed(0)
    build_model("lightweight-unet", base_filters=4).save(path)
    return str(path)


@pytest.mark.parametrize("shape, window, overlap", [
    ((37, 29, 23), (16, 16, 16), 0.5),   # odd sizes, uneven last window
    ((20, 17, 9), (10, 7, 5), 0.3),      # several windows per axis
    ((12, 9, 7), (16, 16, 16), 0.5),     # volume smaller than the window: padded
    ((16, 16, 16), (16, 16, 16), 0.0),   # exactly one window
])
def test_identity_model_is_reproduced_including_borders(shape, window, overlap):
    image = np.random.default_rng(0).normal(size=shape + (3,)).astype(np.float32)
    settings = tiling.WindowSettings(window=window, overlap=overlap, batch_size=3)
    out = tiling.sliding_window_predict(identity_model(3), image, settings)
    assert out.shape == image.shape
    # A weighted mean of equal values: equal up to float32 rounding.
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-5)


def test_window_starts_cover_the_axis_with_requested_overlap():
    starts = tiling.window_starts(240, 128, 0.5)
    assert starts == [0, 56, 112]
    assert tiling.window_starts(155, 128, 0.5) == [0, 27]
    assert tiling.window_starts(100, 128, 0.5) == [0]
    assert tiling.window_starts(256, 128, 0.0) == [0, 128]


def test_balanced_window_keeps_the_window_count_and_drops_the_slack():
    # 155 voxels in 56-voxel slabs: 3 slabs either way, but 3 x 52 = 156 is
    # what a whole-volume pass pads to, against 3 x 56 = 168.
    assert tiling.balanced_window((240, 240, 155), (240, 240, 56), 0.0, multiple=4) == (240, 240, 52)
    # A requested overlap is kept: 3 windows of 56 are needed for 10%.
    assert tiling.balanced_window((240, 240, 155), (240, 240, 56), 0.1, multiple=4) == (240, 240, 56)
    # A crop: 130 voxels, 3 windows of 44 (132) instead of 3 x 56 (168).
    assert tiling.balanced_window((140, 172, 130), (140, 172, 56), 0.0, multiple=4) == (140, 172, 44)
    # nnU-Net's tiling of a 240 axis with 160 windows at 0.5 needs no change.
    assert tiling.balanced_window((240, 240, 155), (160, 160, 155), 0.5, multiple=4) == (160, 160, 155)
    # Rounding to the multiple never exceeds the requested window.
    assert tiling.balanced_window((103,), (53,), 0.0, multiple=8) == (52,)
    for size, window, overlap in [(155, 56, 0.0), (97, 30, 0.25), (240, 128, 0.5), (61, 16, 0.0)]:
        (balanced,) = tiling.balanced_window((size,), (window,), overlap, multiple=4)
        starts = tiling.window_starts(size, balanced, overlap)
        assert balanced <= window
        assert len(starts) == len(tiling.window_starts(size, window, overlap))
        assert starts[-1] + balanced == size  # covered to the end


def test_default_window_follows_the_training_patch_size():
    assert model_setup.default_window((48, 48, 40)) == (160, 160, 160)
    assert model_setup.default_window((192, 128, 160)) == (192, 160, 160)
    assert model_setup.default_window(None) == model_setup.default_window(model_setup.DEFAULT_PATCH_SIZE)
    assert tiling.WindowSettings().window is None and tiling.WindowSettings().overlap == 0.5


def test_default_tiling_for_a_run_and_a_bare_model(tmp_path, tiny_model_path):
    network, setup = model_setup.load_predictor(tiny_model_path)
    assert setup.multiple == 4  # lightweight-unet: 2 poolings
    settings = tiling.WindowSettings()
    # nnU-Net's tiling at overlap 0.5: 2 x 2 windows of 160 over 240, k whole.
    assert model_setup.effective_window(setup, settings, (240, 240, 155)) == (160, 160, 155)
    # A typical brain crop: 1 window along i, 2 of 116 (a multiple of 4) along j.
    assert model_setup.effective_window(setup, settings, (140, 172, 136)) == (140, 116, 136)
    assert model_setup.effective_window(setup, settings, (40, 30, 20)) == (40, 30, 20)
    # A run trained on larger patches gets windows of its patch size.
    os.makedirs(tmp_path / "run")
    keras.models.load_model(tiny_model_path).save(tmp_path / "run" / "best.keras")
    (tmp_path / "run" / "config.json").write_text('{"patch_size": [192, 192, 192], "target": "classes", '
                                                  '"modalities": ["flair", "t1", "t1ce", "t2"]}')
    _, run_setup = model_setup.load_predictor(str(tmp_path / "run"))
    assert run_setup.window == (192, 192, 192)
    assert model_setup.effective_window(run_setup, settings, (240, 240, 155)) == (160, 160, 155)
    assert model_setup.effective_window(run_setup, settings, (190, 240, 155)) == (190, 160, 155)


def _case_filling_its_volume(folder, shape):
    """A synthetic case whose brain is the whole volume (every voxel > 0), so the crop is `shape` itself.

    Texture everywhere: a constant around the brain would be a tool's background (preprocessing.background_value).
    """
    synth.write_dataset(folder, cases=1, shape=shape, layout="brats2021", seed=2)
    (case,) = layouts.discover(folder).cases
    rng = np.random.default_rng(0)
    for path in case.modalities.values():
        source = nib.load(path)
        values = np.abs(np.asarray(source.dataobj, dtype=np.float32)) + rng.uniform(1, 2, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(values, source.affine, source.header), path)
    return case




def test_predict_case_uses_balanced_slabs(tmp_path, tiny_model_path, monkeypatch):
    """predict_case runs the balanced window, not the requested one (numbers worked out by hand).

    The crop is the whole 40 x 36 x 27 volume. Windows of (40, 36, 20) at overlap 0 need 2 slabs
    along k; 2 slabs of 14 (27 / 2 rounded up) already cover it, 16 as a multiple of 4 (the tiny
    lightweight-unet's 2 poolings): the network must see 2 windows of 40 x 36 x 16, not of 20.
    """
    case = _case_filling_its_volume(tmp_path / "data", (40, 36, 27))
    network, setup = model_setup.load_predictor(tiny_model_path)
    assert setup.multiple == 4
    seen = record_batches(monkeypatch)
    settings = inference.PredictSettings(windows=tiling.WindowSettings(
        window=(40, 36, 20), overlap=0.0, batch_size=1, mirror=False))
    label_map, _, _ = inference.predict_case(network, setup, case, settings)
    assert label_map.shape == (40, 36, 27)
    assert seen == [(1, 40, 36, 16, 4), (1, 40, 36, 16, 4)]


def test_predict_case_runs_the_default_tiling(tmp_path, tiny_model_path, monkeypatch):
    """predict_case itself tiles with the model's default windows (seen by the network).

    A default window of 16 per axis at overlap 0.5 over the 40 x 36 x 27 crop: windows start every
    8 voxels, so 4 along i (0, 8, 16, 24 covers 40), 4 along j (36) and 3 along k (27); balancing
    keeps 16 on every axis (no smaller multiple of 4 keeps the overlap with that many windows).
    """
    case = _case_filling_its_volume(tmp_path / "data", (40, 36, 27))
    network, setup = model_setup.load_predictor(tiny_model_path)
    setup = dataclasses.replace(setup, window=(16, 16, 16))
    seen = record_batches(monkeypatch)
    label_map, _, _ = inference.predict_case(network, setup, case)
    assert label_map.shape == (40, 36, 27)
    windows = sum(shape[0] for shape in seen)
    assert {shape[1:] for shape in seen} == {(16, 16, 16, 4)}
    assert windows == 4 * 4 * 3


def test_weights_cancel_on_axes_a_window_spans():
    # Gaussian weights only along the tiled axis must give what full 3-D
    # weights give: the factors of the spanned axes are common to all windows.
    image = np.random.default_rng(1).normal(size=(12, 30, 10, 2)).astype(np.float32)

    def network(batch):  # position-dependent output, so weighting matters
        ramp = np.linspace(0.5, 1.5, batch.shape[2], dtype=np.float32)[None, None, :, None, None]
        return batch * ramp * np.linspace(1, 2, batch.shape[1], dtype=np.float32)[None, :, None, None, None]

    settings = tiling.WindowSettings(window=(12, 12, 10), overlap=0.5)
    out = tiling.sliding_window_predict(network, image, settings)
    weights = tiling.gaussian_importance((12, 12, 10))
    total = np.zeros(image.shape, np.float32)
    weight_sum = np.zeros(image.shape[:3], np.float32)
    for start in tiling.window_starts(30, 12, 0.5):
        region = (slice(None), slice(start, start + 12), slice(None))
        total[region] += network(image[region][None])[0] * weights[..., None]
        weight_sum[region] += weights
    np.testing.assert_allclose(out, total / weight_sum[..., None], rtol=1e-5, atol=1e-6)


def test_keras_models_run_one_static_graph_per_window_shape(tiny_model_path):
    network = keras.models.load_model(tiny_model_path)
    first = tiling.compiled_forward(network, (1, 8, 8, 8, 4))
    assert tiling.compiled_forward(network, (1, 8, 8, 8, 4)) is first
    out = first(np.zeros((1, 8, 8, 8, 4), np.float32))
    # Static: every size of the traced graph's output is known (Keras'
    # predict_on_batch relaxes to None after two shapes, which runs slower).
    assert first.get_concrete_function(np.zeros((1, 8, 8, 8, 4), np.float32)).output_shapes == out.shape
    for size in range(9, 9 + tiling.MAX_TRACED_SHAPES):
        tiling.compiled_forward(network, (1, size, 8, 8, 4))
    assert tiling.compiled_forward(network, (1, 8, 8, 8, 4)) is not first  # evicted, least recently used
    kept = tiling.compiled_forward(network, (1, 4, 4, 4, 4), keep=None)
    for size in range(20, 30):
        tiling.compiled_forward(network, (1, size, 4, 4, 4), keep=None)
    assert tiling.compiled_forward(network, (1, 4, 4, 4, 4), keep=None) is kept


def test_gaussian_importance_properties():
    weights = tiling.gaussian_importance((9, 8, 7))
    assert weights.max() == pytest.approx(1.0)
    assert weights.min() > 0
    assert weights[4, 3, 3] == weights.max()  # odd axis: peak in the middle
    for axis in range(3):
        np.testing.assert_allclose(weights, np.flip(weights, axis=axis), rtol=1e-6)
    assert weights[0, 0, 0] < weights[4, 0, 0] < weights[4, 3, 3]
    np.testing.assert_array_equal(tiling.gaussian_importance((4, 4, 4), 0), np.ones((4, 4, 4)))


def test_gaussian_weighting_favours_window_centres():
    # A model that outputs 1 at its window's centre region and 0 elsewhere
    # shows which window wins where windows overlap.
    class Marker:
        def __call__(self, batch):
            return np.ones(batch.shape[:4] + (1,), np.float32) * batch[..., :1].mean(axis=(1, 2, 3), keepdims=True)

    image = np.zeros((24, 8, 8, 1), np.float32)
    image[12:] = 1.0  # the second window (start 8) sees mostly ones
    settings = tiling.WindowSettings(window=(16, 8, 8), overlap=0.5)
    out = tiling.sliding_window_predict(Marker(), image, settings)[..., 0]
    first, second = image[0:16].mean(), image[8:24].mean()
    assert out[0, 0, 0] == pytest.approx(first)   # only the first window covers it
    assert out[-1, 0, 0] == pytest.approx(second)
    # Voxel 9 is near the first window's centre: its output is closer to `first`.
    assert abs(out[9, 0, 0] - first) < abs(out[9, 0, 0] - second)


def test_mirroring_tta_averages_flips():
    # An x-ramp model is not flip-equivariant: TTA of d(ramp) cancels the ramp.
    class Ramp:
        def __call__(self, batch):
            ramp = np.arange(batch.shape[1], dtype=np.float32)[None, :, None, None, None]
            return batch[..., :1] + ramp

    image = np.random.default_rng(1).normal(size=(8, 6, 4, 1)).astype(np.float32)
    settings = tiling.WindowSettings(window=(8, 6, 4), mirror=True)
    out = tiling.sliding_window_predict(Ramp(), image, settings)
    np.testing.assert_allclose(out, image + 3.5, atol=1e-5)  # mean ramp (0 + 7) / 2


def test_tta_of_a_real_model_is_flip_equivariant(tiny_model_path):
    network, _ = model_setup.load_predictor(tiny_model_path)
    image = np.random.default_rng(2).normal(size=(16, 16, 16, 4)).astype(np.float32)
    settings = tiling.WindowSettings(window=(16, 16, 16), mirror=True)
    out = tiling.sliding_window_predict(network, image, settings)
    flipped = tiling.sliding_window_predict(network, np.flip(image, axis=(0, 2)).copy(), settings)
    np.testing.assert_allclose(np.flip(flipped, axis=(0, 2)), out, atol=1e-4)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)  # softmax probabilities


def test_bare_keras_defaults_from_channels():
    setup = model_setup.setup_from_model(build_model("lightweight-unet", base_filters=4))
    assert setup.modalities == ("flair", "t1", "t1ce", "t2") and setup.target == "classes"
    assert setup.preprocess.crop == "bbox" and not setup.fixed_input
    regions = model_setup.setup_from_model(build_model("lightweight-unet", base_filters=4, num_classes=3))
    assert regions.target == "regions"
    flair = model_setup.setup_from_model(build_model("flair-unet", input_shape=(16, 16, 16, 1)))
    assert flair.modalities == ("flair",) and flair.target == "whole_tumor"
    assert flair.preprocess.crop == "center" and flair.window == (16, 16, 16) and flair.fixed_input
    with pytest.raises(ModelError, match="no default"):
        model_setup.setup_from_model(build_model("lightweight-unet", base_filters=4, num_classes=2))


def test_run_dir_config_is_used_and_checked(tmp_path):
    build_model("lightweight-unet", base_filters=4, num_classes=3).save(tmp_path / "best.keras")
    (tmp_path / "config.json").write_text('{"modalities": ["flair", "t1", "t1ce", "t2"], "target": "regions", '
                                          '"crop": "none", "crop_size": [8, 8, 8]}')
    _, setup = model_setup.load_predictor(tmp_path)
    assert setup.target == "regions" and setup.preprocess.crop == "none"
    (tmp_path / "config.json").write_text('{"modalities": ["flair"], "target": "regions"}')
    with pytest.raises(ModelError, match="1 modalities"):
        model_setup.load_predictor(tmp_path)


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        model_setup.load_predictor(tmp_path / "absent.keras")


def test_uncrop_puts_prediction_and_probabilities_on_the_source_grid(tmp_path, tiny_model_path):
    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout="brats2021", seed=3)
    case = layouts.discover(tmp_path / "d").cases[0]
    network, setup = model_setup.load_predictor(tiny_model_path)
    image, _, _ = volumes.read_case(case)
    label_map, probabilities, _ = inference.predict_case(
        network, setup, case, inference.PredictSettings(save_probabilities=True))
    assert label_map.shape == SHAPE == probabilities.shape[:3]
    (d0, h0, w0), (d1, h1, w1) = brain_bbox(image)
    box = np.zeros(SHAPE, bool)
    box[d0:d1, h0:h1, w0:w1] = True
    assert not box.all()  # the phantom has background around the brain
    # Outside the brain box nothing is predicted and background is certain.
    assert np.all(label_map[~box] == 0)
    assert np.all(probabilities[~box, 0] == 1.0)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("layout", synth.SYNTH_LAYOUTS)
def test_predict_writes_source_grid_nifti_in_the_release_scheme(tmp_path, tiny_model_path, layout):
    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout=layout, seed=1)
    dataset = layouts.discover(tmp_path / "d")
    network, setup = model_setup.load_predictor(tiny_model_path)
    results = inference.predict_dataset(network, setup, dataset.cases, tmp_path / "out")
    assert [r.error for r in results] == [None]
    _, _, properties = volumes.read_case(dataset.cases[0])
    written = nib.load(results[0].path)
    assert written.shape == properties["shape"]
    np.testing.assert_allclose(written.affine, properties["affine"])
    assert written.get_data_dtype() == np.uint8
    allowed = {0, 1, 2, 3} if dataset.label_scheme == "brats2023" else {0, 1, 2, 4}
    assert set(np.unique(np.asarray(written.dataobj))) <= allowed


def test_label_scheme_override(tmp_path, tiny_model_path):
    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout="brats2020")
    network, setup = model_setup.load_predictor(tiny_model_path)
    case = layouts.discover(tmp_path / "d").cases[0]
    # A model that always says ET makes the scheme visible.
    always_et = lambda batch: np.tile(np.eye(4, dtype=np.float32)[3], batch.shape[:4] + (1,))  # noqa: E731
    for scheme, et in (("brats2023", 3), ("brats2020", 4)):
        settings = inference.PredictSettings(label_scheme=scheme)
        label_map, _, _ = inference.predict_case(always_et, setup, case, settings)
        assert et in np.unique(label_map) and set(np.unique(label_map)) <= {0, et}


def test_refuses_to_overwrite_and_reports_failing_cases(tmp_path, tiny_model_path):
    synth.write_dataset(tmp_path / "d", cases=2, shape=SHAPE, layout="brats2021")
    cases = layouts.discover(tmp_path / "d").cases
    network, setup = model_setup.load_predictor(tiny_model_path)
    out = tmp_path / "out"
    inference.predict_dataset(network, setup, cases[:1], out)
    before = os.path.getmtime(out / f"{cases[0].id}.nii.gz")
    with pytest.raises(OutputExistsError, match=cases[0].id):
        inference.predict_dataset(network, setup, cases, out)
    assert os.path.getmtime(out / f"{cases[0].id}.nii.gz") == before
    # Break the second case: the first still completes and the failure names the case.
    os.remove(cases[1].modalities["t1"])
    results = inference.predict_dataset(network, setup, cases, out, overwrite=True)
    assert results[0].error is None
    assert cases[1].id in results[1].error


def test_cli_predict_exit_status_and_postprocess_syntax(tmp_path, tiny_model_path):
    synth.write_dataset(tmp_path / "d", cases=2, shape=SHAPE, layout="brats2023")
    cases = layouts.discover(tmp_path / "d").cases
    os.remove(cases[1].modalities["flair"])
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", tiny_model_path, str(tmp_path / "d"), str(tmp_path / "out"),
                                 "--postprocess", "min_component:voxels=5,per=class", "--overlap", "0.25"])
    assert result.exit_code == 1
    assert cases[1].id in result.output and "missing modality flair" in result.output
    assert (tmp_path / "out" / f"{cases[0].id}.nii.gz").exists()
    bad = runner.invoke(cli, ["predict", tiny_model_path, str(tmp_path / "d"), str(tmp_path / "o2"),
                              "--postprocess", "min_component:size=5"])
    assert bad.exit_code == 1 and "min_component" in bad.output and not (tmp_path / "o2").exists()


def test_parse_postprocess():
    from bratskeras.cli.inference import parse_postprocess

    assert parse_postprocess("et_to_ncr:voxels=500") == {"name": "et_to_ncr", "voxels": 500}
    assert parse_postprocess("average_pool:size=16x16x1") == {"name": "average_pool", "size": (16, 16, 1)}
    assert parse_postprocess("average_pool") == {"name": "average_pool"}


def _fill_background(path, value, dtype):
    """Rewrites a synth image with `value` outside the brain, stored as `dtype` (as some tools write scans)."""
    image = nib.load(path)
    array = np.asarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.where(array != 0, array, value).astype(dtype), image.affine), path)


def test_constant_background_predicts_like_zero_background(tmp_path, tiny_model_path):
    """The network sees the same input, and predict writes the same labels, as for a background of 0."""
    for name in ("zero", "constant"):
        synth.write_dataset(tmp_path / name, cases=1, shape=SHAPE, layout="brats2023", seed=5)
    zero, constant = (layouts.discover(tmp_path / n).cases[0] for n in ("zero", "constant"))
    for (modality, path), (value, dtype) in zip(sorted(constant.modalities.items()),
                                                [(-1000.0, np.float64), (-0.25, np.float64),
                                                 (0.5, np.float32), (-3, np.int16)]):
        _fill_background(path, value, dtype)
    keras_network, setup = model_setup.load_predictor(tiny_model_path)
    outputs = []
    for case in (zero, constant):
        seen = []

        def network(batch, seen=seen):
            seen.append(np.array(batch))
            return keras.ops.convert_to_numpy(keras_network(batch))

        label_map, _, properties = inference.predict_case(network, setup, case)
        outputs.append((seen, label_map, properties["input_warning"]))
    (zero_seen, zero_labels, zero_warning), (seen, labels_, warning) = outputs
    assert len(seen) == len(zero_seen) > 0
    for batch, expected in zip(seen, zero_seen):
        np.testing.assert_array_equal(batch, expected)
    np.testing.assert_array_equal(labels_, zero_labels)
    assert zero_warning is None and warning is None


def test_predict_warns_about_inputs_unlike_brats(tmp_path, tiny_model_path):
    """A 2 mm case is predicted, with one warning line naming it and what BraTS models expect."""
    synth.write_dataset(tmp_path / "d", cases=2, shape=SHAPE, layout="brats2021", seed=2)
    case = layouts.discover(tmp_path / "d").cases[1]
    for path in case.source_files():
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), volumes.brats_affine(image.shape, 2.0)), path)
    # A model that carries its input contract: predict guesses nothing, so the only warning is the input's.
    model = tmp_path / "tiny.keras"
    shutil.copy(tiny_model_path, model)
    write_keras(model, InputContract(modalities=("flair", "t1", "t1ce", "t2"), target="classes"))
    result = CliRunner().invoke(cli, ["predict", str(model), str(tmp_path / "d"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: case {case.id}: voxels 2 x 2 x 2 mm, not 1 mm isotropic; BraTS models expect "
                        "skull-stripped, 1 mm isotropic scans co-registered to SRI24 (240 x 240 x 155)"]
    assert (tmp_path / "out" / f"{case.id}.nii.gz").exists()


def _flair_rule_model(path, postprocess, modalities=("flair", "t1", "t1ce", "t2")):
    """A 1x1x1 convolution calling ET every voxel whose z-scored FLAIR exceeds 1, with a contract carrying
    `postprocess`: a model whose output is known, so what its own post-processing does can be checked.
    (Its rule reads channel 0: the first of `modalities`.)"""
    inputs = keras.Input((None, None, None, 4))
    rule = keras.layers.Conv3D(4, 1, name="flair_rule")
    network = keras.Model(inputs, rule(inputs))
    kernel = np.zeros((1, 1, 1, 4, 4), np.float32)
    kernel[..., 0, 3] = 1.0  # ET's logit: FLAIR (channel 0) - 1; background's: 0; NCR's and ED's: -10
    rule.set_weights([kernel, np.array([0.0, -10.0, -10.0, -1.0], np.float32)])
    network.save(path)
    write_keras(path, InputContract(modalities=modalities, target="classes", postprocess=postprocess))
    return str(path)


def test_predict_applies_the_model_s_own_postprocessing_unless_told_otherwise(tmp_path):
    from bratskeras.core import labels
    from bratskeras.predict.postprocessing import postprocess

    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout="brats2023", seed=3)
    case = layouts.discover(tmp_path / "d").cases[0]
    steps = ({"name": "et_enhancement", "percentile": 75},)
    model = _flair_rule_model(tmp_path / "rule.keras", steps)
    runner = CliRunner()
    own = runner.invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / "own")])
    assert own.exit_code == 0, own.output
    assert "postprocess et_enhancement:percentile=75" in own.output  # the header names the model's steps
    bare = runner.invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / "bare"), "--postprocess", "none"])
    assert bare.exit_code == 0 and "postprocess: none (--postprocess, in place of the model's" in bare.output
    read = lambda folder: np.asarray(nib.load(tmp_path / folder / f"{case.id}.nii.gz").dataobj)  # noqa: E731
    raw = labels.labels_to_classes(read("bare"), "brats2023")
    t1ce = np.asarray(nib.load(case.modalities["t1ce"]).dataobj, np.float32)
    expected = postprocess(raw, list(steps), images={"t1ce": t1ce})
    assert (expected != raw).any()  # the step has work to do on this case ...
    np.testing.assert_array_equal(labels.labels_to_classes(read("own"), "brats2023"), expected)  # ... and did it
    # Steps given on the command line replace the model's.
    given = runner.invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / "given"),
                                "--postprocess", "et_to_ncr:voxels=1"])
    assert given.exit_code == 0
    np.testing.assert_array_equal(read("given"), read("bare"))  # et_to_ncr below 1 voxel changes nothing


def test_a_model_s_steps_that_read_an_image_it_lacks_are_refused(tmp_path):
    inputs = keras.Input((None, None, None, 1))
    path = tmp_path / "flair.keras"
    keras.Model(inputs, keras.layers.Conv3D(4, 1)(inputs)).save(path)
    write_keras(path, InputContract(modalities=("flair",), target="classes",
                                    postprocess=({"name": "et_enhancement"},)))
    with pytest.raises(ModelError, match=r"reads the t1ce image, which is not among the model's inputs \(flair\)"):
        model_setup.load_predictor(str(path))


def test_a_model_s_region_thresholds_decode_its_probabilities(tmp_path):
    """The decoding step replaces argmax: predict's labels are the saved probabilities decoded by it."""
    from bratskeras.core import labels
    from bratskeras.predict.regions import regions_above

    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout="brats2023", seed=3)
    case = layouts.discover(tmp_path / "d").cases[0]
    model = _flair_rule_model(tmp_path / "rule.keras", ({"name": "region_thresholds", "wt": 0.2, "tc": 0.2,
                                                                   "et": 0.2},))
    result = CliRunner().invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / "out"),
                                      "--save-probabilities"])
    assert result.exit_code == 0, result.output
    assert "postprocess region_thresholds:wt=0.2,tc=0.2,et=0.2" in result.output
    written = labels.labels_to_classes(np.asarray(nib.load(tmp_path / "out" / f"{case.id}.nii.gz").dataobj),
                                       "brats2023")
    probabilities = np.asarray(nib.load(tmp_path / "out" / "probabilities" / f"{case.id}.nii.gz").dataobj)
    expected = regions_above(probabilities, "classes", {"WT": 0.2, "TC": 0.2, "ET": 0.2})
    np.testing.assert_array_equal(written, expected)
    # The rule's ET is likelier than 0.2 but not than background on some voxels: more ET than argmax finds.
    assert (written == 3).sum() > (np.argmax(probabilities, -1) == 3).sum()


def test_bias_refit_predicts_again_without_the_field_fitted_outside_the_first_tumour(tmp_path):
    """A model calling ET wherever z-scored FLAIR exceeds 1 marks the bright end of a biased scan; bias_refit
    predicts what the model gives the same scan with the field (fitted outside that first tumour) divided out."""
    from bratskeras.data.bias_field import divide_linear_field
    from bratskeras.predict.postprocessing import STEPS

    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout="brats2023", seed=3)
    case = layouts.discover(tmp_path / "d").cases[0]
    flair_path = case.modalities["flair"]
    flair = nib.load(flair_path)
    data = np.asarray(flair.dataobj, np.float32)
    ramp = np.exp(0.06 * np.arange(SHAPE[0], dtype=np.float32))[:, None, None]  # 6.4x brighter at the far end
    nib.save(nib.Nifti1Image(np.where(data != 0, data * ramp, 0).astype(np.float32), flair.affine), flair_path)
    model = _flair_rule_model(tmp_path / "rule.keras", ({"name": "bias_refit", "margin": 3},))
    runner = CliRunner()
    refit = runner.invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / "refit"),
                                "--save-probabilities"])
    assert refit.exit_code == 0, refit.output
    assert "postprocess bias_refit:margin=3" in refit.output
    # One window per pass, counted over both passes on one progress line.
    assert "window 2/2" in refit.output and "window 1/1" not in refit.output
    bare = runner.invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / "bare"), "--postprocess", "none"])
    assert bare.exit_code == 0, bare.output
    read = lambda folder: np.asarray(nib.load(tmp_path / folder / f"{case.id}.nii.gz").dataobj)  # noqa: E731
    # What bias_refit does, by hand: the first prediction, its tumour grown by 3 voxels left out of the fit.
    modalities = ("flair", "t1", "t1ce", "t2")  # the model's, in its channel order
    image, _, _ = volumes.read_case(case, modalities, with_labels=False)
    corrected = divide_linear_field(image, exclude=STEPS["bias_refit"].excluded(read("bare"), 3),
                                    modalities=modalities)
    for c, modality in enumerate(modalities):
        path = case.modalities[modality]
        nib.save(nib.Nifti1Image(corrected[..., c], nib.load(path).affine), path)
    by_hand = runner.invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / "by_hand"),
                                  "--postprocess", "none"])
    assert by_hand.exit_code == 0, by_hand.output
    np.testing.assert_array_equal(read("refit"), read("by_hand"))
    # The saved probabilities are the second pass's: its labels are their argmax (the model has no other step).
    from bratskeras.core import labels
    saved = np.asarray(nib.load(tmp_path / "refit" / "probabilities" / f"{case.id}.nii.gz").dataobj)
    np.testing.assert_array_equal(labels.labels_to_classes(read("refit"), "brats2023"), np.argmax(saved, -1))
    # The ramp made the first prediction call the bright end of the brain tumour; the refit no longer does.
    far_end = np.zeros(SHAPE, bool)
    far_end[-8:] = True
    assert (read("bare")[far_end] > 0).sum() > 3 * max(1, (read("refit")[far_end] > 0).sum())


def test_bias_refit_leaves_t1ce_as_it_is(tmp_path):
    """The same rule reading T1c (channel 0 of its contract) on a T1c with a 6.4x ramp: bias_refit does not
    correct T1c (bias_field.LEFT_AS_IS), so its second pass finds what its first found."""
    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout="brats2023", seed=3)
    case = layouts.discover(tmp_path / "d").cases[0]
    path = case.modalities["t1ce"]
    data = np.asarray(nib.load(path).dataobj, np.float32)
    ramp = np.exp(0.06 * np.arange(SHAPE[0], dtype=np.float32))[:, None, None]
    nib.save(nib.Nifti1Image(np.where(data != 0, data * ramp, 0).astype(np.float32), nib.load(path).affine), path)
    runner = CliRunner()
    outputs = {}
    for name, steps in (("refit", ({"name": "bias_refit", "margin": 3},)), ("bare", ())):
        model = _flair_rule_model(tmp_path / f"{name}.keras", steps, modalities=("t1ce", "t1", "flair", "t2"))
        result = runner.invoke(cli, ["predict", model, str(tmp_path / "d"), str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outputs[name] = np.asarray(nib.load(tmp_path / name / f"{case.id}.nii.gz").dataobj)
    far_end = np.zeros(SHAPE, bool)
    far_end[-8:] = True
    assert (outputs["bare"][far_end] > 0).sum() > 0  # the ramp's bright end is called tumour ...
    np.testing.assert_array_equal(outputs["refit"], outputs["bare"])  # ... and stays so: T1c is not corrected
