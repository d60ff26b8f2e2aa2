"""Post-processing steps and augmentation transforms as objects: one row each, owning options, checks, streams."""

import zlib

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.data import augment, resampling
from bratskeras.data import patch as patch_module
from bratskeras.data.augment import AUGMENTATION_SETS, Augmentation, augment_patch
from bratskeras.data.augmentations import ROTATIONS_90, Brightness, Mirror, Noise, Zoom
from bratskeras.data.patch import Patch, compose_symmetries
from bratskeras.predict import postprocessing
from bratskeras.predict.postprocessing import STEPS, Option, Step, check_step, postprocess

# --------------------------------------------------------------------------- post-processing steps


def test_each_step_row_carries_its_options_and_defaults():
    assert set(STEPS) == {"region_thresholds", "average_pool", "min_component", "major_components", "et_to_ncr",
                          "et_enhancement", "ed_hyperintensity", "ed_growth", "ed_fluid", "et_surface",
                          "et_growth", "bias_refit"}
    assert all(isinstance(step, Step) and step.name == name for name, step in STEPS.items())
    assert STEPS["average_pool"].settings({"name": "average_pool"}) == {"size": 16}
    assert STEPS["min_component"].settings({"name": "min_component", "voxels": 3}) == {"voxels": 3, "per": "region"}
    assert STEPS["min_component"].required == {"voxels"} and STEPS["average_pool"].required == set()
    assert STEPS["region_thresholds"].settings({"name": "region_thresholds", "wt": 0.3}) == {"wt": 0.3, "tc": 0.5,
                                                                                          "et": 0.5}
    assert STEPS["ed_hyperintensity"].modalities == ("flair",) and not STEPS["ed_hyperintensity"].decodes
    assert STEPS["ed_growth"].settings({"name": "ed_growth"}) == {"percentile": 99, "depth": 3}
    assert STEPS["et_surface"].settings({"name": "et_surface"}) == {"depth": 3, "share": 0.5}
    assert STEPS["et_surface"].modalities == ("t1ce",) and STEPS["ed_growth"].modalities == ("flair",)
    assert STEPS["ed_fluid"].settings({"name": "ed_fluid"}) == {"t1": 5, "t2": 90}
    assert STEPS["ed_fluid"].modalities == ("t1", "t2")
    assert STEPS["et_growth"].settings({"name": "et_growth"}) == {"percentile": 95, "depth": 2, "share": 0.15}
    assert STEPS["et_growth"].modalities == ("t1ce",)
    assert STEPS["bias_refit"].settings({"name": "bias_refit"}) == {"margin": 3} and STEPS["bias_refit"].refits
    assert [name for name, step in STEPS.items() if step.refits or step.decodes] == ["region_thresholds", "bias_refit"]


@pytest.mark.parametrize("step, message", [
    ({"name": "blur"}, "a post-processing step must be a dict with name in ['average_pool', 'bias_refit', 'ed_fluid', "
                       "'ed_growth', 'ed_hyperintensity', 'et_enhancement', 'et_growth', 'et_surface', 'et_to_ncr', "
                       "'major_components', "
                       "'min_component', 'region_thresholds'], received {'name': 'blur'}"),
    ({"name": "min_component"}, "step 'min_component' takes ['per', 'voxels'] (required ['voxels']); received []"),
    ({"name": "et_to_ncr", "voxels": 5, "x": 1}, "step 'et_to_ncr' takes ['voxels'] (required ['voxels']); "
                                                  "received ['voxels', 'x']"),
    ({"name": "min_component", "voxels": -1}, "step 'min_component': voxels must be a non-negative integer, "
                                              "received -1"),
    ({"name": "average_pool", "size": (2, 0, 2)}, "step 'average_pool': size must be a positive integer or 3 of "
                                                  "them (AxBxC), received (2, 0, 2)"),
    ({"name": "min_component", "voxels": 5, "per": "label"}, "min_component per must be 'region' or 'class', "
                                                             "received 'label'"),
])
def test_step_checks_keep_their_one_line_errors(step, message):
    with pytest.raises(ValueError) as error:
        check_step(step)
    assert str(error.value) == message


def test_a_step_is_one_row_no_branch_elsewhere(monkeypatch):
    class Invert(Step):
        name = "invert"
        options = {"times": Option(1, lambda step, value: None, "N")}
        summary = "flip the mask"

        def on_mask(self, mask, times):
            return mask ^ bool(times % 2)

    monkeypatch.setitem(STEPS, "invert", Invert())
    mask = np.zeros((3, 3, 3), bool)
    assert postprocess(mask, [{"name": "invert"}]).all()
    assert not postprocess(mask, [{"name": "invert", "times": 2}]).any()
    with pytest.raises(ValueError, match=r"step 'invert' takes \['times'\]"):
        postprocess(mask, [{"name": "invert", "voxels": 2}])


def test_predict_help_lists_every_step_from_the_table():
    help_text = " ".join(CliRunner().invoke(cli, ["predict", "--help"]).output.split())
    for step in STEPS.values():
        assert step.name in help_text and step.summary.split()[0] in help_text
    assert "per=region|class" in help_text


def test_scheme_check_belongs_to_its_step():
    postprocessing.check_steps([{"name": "min_component", "voxels": 1}], "menrt")
    with pytest.raises(ValueError, match="needs ET and NCR classes"):
        postprocessing.check_steps([{"name": "et_to_ncr", "voxels": 1}], "menrt")


# --------------------------------------------------------------------------- augmentation transforms


@pytest.fixture
def eager_kernels(monkeypatch):
    """The patch's kernels run as plain TF: these tests are about draws and codes, and XLA's
    compile (seconds, once per process) is test_augment's to pay."""
    monkeypatch.setattr(patch_module, "xla_kernel", lambda name, function: function)


def _case(shape=(12, 12, 8)):
    rng = np.random.default_rng(3)
    image = tf.constant(rng.normal(size=shape + (2,)).astype(np.float32))
    label = tf.constant(rng.integers(0, 4, size=shape + (1,)).astype(np.uint8))
    return image, label


def test_sets_keep_each_transforms_probabilities_and_ranges():
    paper, nnunet = AUGMENTATION_SETS["paper"], AUGMENTATION_SETS["nnunet"]
    assert paper.names == ("rot90", "mirror", "axial_rotation", "gamma", "scale_shift")
    assert (paper["mirror"].probability, paper["axial_rotation"].degrees) == (0.5, 0.0)
    assert (paper["gamma"].probability, paper["gamma"].range) == (0.3, (0.7, 1.5))
    assert (paper["scale_shift"].scale, paper["scale_shift"].shift) == (0.1, 0.1)
    assert nnunet.names == ("rotation_3d", "zoom", "elastic", "noise", "blur", "brightness", "contrast",
                            "low_resolution", "mirror", "gamma")
    assert (nnunet["rotation_3d"].probability, nnunet["rotation_3d"].degrees) == (0.2, 30.0)
    assert (nnunet["zoom"].probability, nnunet["zoom"].range) == (0.2, (0.7, 1.4))
    assert (nnunet["elastic"].probability, nnunet["elastic"].voxels, nnunet["elastic"].wavelength) == \
        (0.2, 4.0, (24.0, 64.0))
    assert (nnunet["noise"].probability, nnunet["noise"].variance) == (0.1, (0.0, 0.1))
    assert (nnunet["blur"].probability, nnunet["blur"].sigma) == (0.2, (0.5, 1.0))
    assert (nnunet["brightness"].probability, nnunet["brightness"].range) == (0.15, (0.75, 1.25))
    assert (nnunet["contrast"].probability, nnunet["contrast"].range) == (0.15, (0.75, 1.25))
    assert (nnunet["low_resolution"].probability, nnunet["low_resolution"].zoom) == (0.25, (0.5, 1.0))
    assert (nnunet["mirror"].probability, nnunet["gamma"].probability, nnunet["gamma"].range) == (0.5, 0.3, (0.7, 1.5))


def test_streams_are_named_and_stable():
    seed = tf.constant([4, 9], tf.int64)
    mirror = augment.stream(seed, "mirror").numpy()
    assert np.array_equal(mirror, augment.stream(seed, "mirror").numpy())
    assert not np.array_equal(mirror, augment.stream(seed, "rot90").numpy())
    assert not np.array_equal(mirror, augment.stream(tf.constant([4, 10], tf.int64), "mirror").numpy())
    # crc32, not Python's per-process salted hash(): the same draws in every process.
    assert mirror[1] == zlib.crc32(b"mirror")


@pytest.mark.parametrize("position", [0, 2, 5])
def test_inserting_a_transform_leaves_the_others_draws(position, eager_kernels):
    """A transform whose draws leave the patch as it is (noise of variance 0, always applied), inserted
    anywhere, must not change the result: the others draw from their own named streams."""
    image, label = _case()
    paper = AUGMENTATION_SETS["paper"]
    transforms = list(paper)
    transforms.insert(position, Noise(probability=1.0, variance=(0.0, 0.0)))
    inserted = Augmentation(tuple(transforms))
    labels = set()
    for step in range(4):
        seed = tf.constant([2, step], tf.int64)
        x, y = augment_patch(image, label, seed, paper)
        x_inserted, y_inserted = augment_patch(image, label, seed, inserted)
        assert np.array_equal(y.numpy(), y_inserted.numpy())
        np.testing.assert_allclose(x.numpy(), x_inserted.numpy(), atol=1e-6)
        labels.add(y.numpy().tobytes())
    assert len(labels) > 1  # the transforms did draw


def test_leaving_out_a_transform_leaves_the_others_draws(eager_kernels):
    image, label = _case()
    base = AUGMENTATION_SETS["paper"].with_options(mirror={"probability": 0.5})
    with_brightness = Augmentation((Brightness(probability=1.0, range=(1.0, 1.0)),) + base.transforms)
    for step in range(4):
        seed = tf.constant([7, step], tf.int64)
        left_out = augment_patch(image, label, seed, with_brightness.without("brightness"))
        kept = augment_patch(image, label, seed, with_brightness)
        assert np.array_equal(left_out[1].numpy(), kept[1].numpy())
        np.testing.assert_allclose(left_out[0].numpy(), kept[0].numpy(), atol=1e-6)


def _apply_code(volume, code):
    """numpy reference of a symmetry code: optional D/H transpose (bit 0), then reverse D, H, W (bits 1-3)."""
    out = np.swapaxes(volume, 0, 1) if code & 1 else volume
    axes = tuple(axis for axis in range(3) if code >> (axis + 1) & 1)
    return np.flip(out, axes) if axes else out


def test_rotation_codes_are_np_rot90():
    volume = np.arange(3 * 3 * 2).reshape(3, 3, 2, 1)
    for k, code in enumerate(ROTATIONS_90):
        assert np.array_equal(_apply_code(volume, code), np.rot90(volume, k, axes=(0, 1)))


def test_composed_symmetries_are_applying_one_after_the_other():
    volume = np.arange(3 * 3 * 2).reshape(3, 3, 2, 1)
    first, then = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    composed = compose_symmetries(tf.constant(first.ravel(), tf.int32), tf.constant(then.ravel(), tf.int32))
    for a, b, c in zip(first.ravel(), then.ravel(), composed.numpy()):
        assert np.array_equal(_apply_code(_apply_code(volume, a), b), _apply_code(volume, c)), (a, b, c)


def test_held_symmetry_and_affine_resolve_in_one_pass(eager_kernels):
    image, label = _case()
    patch = Patch(image, label).symmetry(tf.constant(3)).affine(tf.constant([2.0, 1.0]), tf.constant([0.5, 0.0]))
    resolved = patch.resolved()
    expected = _apply_code(image.numpy(), 3) * [2.0, 1.0] + [0.5, 0.0]
    np.testing.assert_allclose(resolved.image.numpy(), expected, atol=1e-6)
    assert np.array_equal(resolved.label.numpy(), _apply_code(label.numpy(), 3))


def test_an_inactive_transform_draws_nothing(eager_kernels):
    image, label = _case()
    x, y = augment_patch(image, label, tf.constant([0, 0]), Augmentation((Mirror(probability=0.0),)))
    assert np.array_equal(x.numpy(), image.numpy()) and np.array_equal(y.numpy(), label.numpy())


@pytest.mark.parametrize("make, message", [
    (lambda: Mirror(probability=1.5), "augmentation 'mirror': probability must be in [0.0, 1.0], got 1.5"),
    (lambda: Zoom(range=(1.4, 0.7)), "augmentation 'zoom': range must be (min, max) within"),
    (lambda: Zoom(range=0.7), "augmentation 'zoom': range must be (min, max) within"),
    (lambda: Mirror(probability="often"), "augmentation 'mirror': probability must be in"),
    (lambda: Augmentation((Mirror(), Mirror())), "each transform may appear once"),
    (lambda: AUGMENTATION_SETS["paper"].with_options(zoom={"probability": 1.0}), "no transform 'zoom'"),
    (lambda: AUGMENTATION_SETS["paper"].with_options(mirror={"sigma": 1.0}), "bad transform option"),
    (lambda: AUGMENTATION_SETS["paper"].with_options(mirror={"probability": -1}),
     "augmentation 'mirror': probability must be in"),
])
def test_transforms_check_their_options(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_low_resolution_reads_back_what_a_resize_down_and_up_gives():
    """resampling.coarsened (static shapes) equals nearest-down then linear-up through tf.image.resize."""


    rng = np.random.default_rng(0)
    for shape, small in (((16, 16, 16, 2), (8, 11, 5)), ((20, 12, 9, 1), (10, 12, 3)), ((7, 7, 7, 1), (1, 7, 4))):
        volume = tf.constant(rng.normal(size=shape).astype(np.float32))
        resized = resampling.resize_3d(resampling.resize_3d(volume, small, "nearest"), shape[:3], "bilinear")
        np.testing.assert_allclose(resampling.coarsened(volume, tf.constant(small)), resized, atol=1e-5)


@pytest.mark.slow  # XLA compiles both sets: in CI's second run (pytest -q -m slow)
@pytest.mark.parametrize("name", ["paper", "nnunet"])
def test_every_augmentation_set_compiles_under_xla(name):
    """`fit --augment-on device` on a GPU runs the train step under XLA (jit_compile auto): every
    transform must have compile-time shapes (a resize to a drawn size has none)."""
    augmentation = AUGMENTATION_SETS[name]
    step = tf.function(lambda image, label, seed: augment_patch(image, label, seed, augmentation), jit_compile=True)
    image, label = step(tf.random.normal((16, 16, 16, 4)), tf.zeros((16, 16, 16, 1), tf.uint8),
                        tf.constant([1, 2], tf.int64))
    assert image.shape == (16, 16, 16, 4) and label.shape == (16, 16, 16, 1)
