"""The training targets' table (bratskeras.core.targets) and the registry's model facts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bratskeras.core import labels, targets
from bratskeras.core.errors import ModelError
from bratskeras.models import build_model, list_models, model_facts
from bratskeras.models.layers import PadToMultiple


def _classes(rng, count, shape=(3, 5, 4, 6)):
    return rng.integers(0, count, size=shape).astype(np.uint8)


@pytest.mark.parametrize("name", targets.NAMES)
def test_numpy_and_tensorflow_graph_give_the_same_target(name):
    """The pipeline encodes inside tf.data (graph tensors); numpy callers get the same values and dtype."""
    classes = _classes(np.random.default_rng(0), 4)[..., None]
    expected = targets.classes_to_target(classes, name)
    dataset = tf.data.Dataset.from_tensors(classes).map(targets.get_target(name).encode)
    (from_graph,) = list(dataset.as_numpy_iterator())
    np.testing.assert_array_equal(from_graph, expected)
    assert from_graph.dtype == expected.dtype == np.dtype(targets.TARGETS[name].y_dtype)
    assert expected.shape == classes.shape[:-1] + (targets.TARGETS[name].y_channels(),)


@pytest.mark.parametrize("name", targets.NAMES)
def test_numpy_and_keras_tensors_decode_to_the_same_classes(name):
    """Numpy arrays run the table with numpy's functions, tensors with keras.ops: one definition, same classes."""
    rng = np.random.default_rng(3)
    target = targets.get_target(name)
    y = targets.classes_to_target(_classes(rng, 4), name)
    output = rng.normal(size=y.shape[:-1] + (target.channels(),)).astype(np.float32)
    for from_logits in (False, True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(target.decode_output(tf.constant(output), from_logits)),
                                      target.decode_output(output, from_logits))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(target.decode_target(tf.constant(y))),
                                  target.decode_target(y))
    assert isinstance(target.decode_target(y), np.ndarray)  # numpy in, numpy out: no TensorFlow round trip


def test_targets_of_known_classes():
    classes = np.array([0, 1, 2, 3], np.uint8)
    np.testing.assert_array_equal(targets.classes_to_target(classes, "regions"),
                                  [[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(targets.classes_to_target(classes, "whole_tumor")[..., 0], [0, 1, 1, 1])
    np.testing.assert_array_equal(targets.classes_to_target(classes, "classes")[..., 0], classes)


@pytest.mark.parametrize("scheme", sorted(labels.SCHEMES))
def test_classes_round_trip_through_the_classes_target_for_every_scheme(scheme):
    count = len(labels.get_scheme(scheme).labels)
    classes = _classes(np.random.default_rng(1), count)
    target = targets.get_target("classes")
    y = targets.classes_to_target(classes, "classes")
    np.testing.assert_array_equal(target.decode_target(y), classes)
    # A one-hot output of `count` channels (the task's model) decodes to the same classes.
    one_hot = np.eye(count, dtype=np.float32)[classes]
    assert target.channels(scheme) == count
    np.testing.assert_array_equal(targets.output_to_classes(one_hot, "classes"), classes)


@pytest.mark.parametrize("scheme", sorted(labels.SCHEMES))
def test_classic_classes_round_trip_through_regions_for_every_scheme(scheme):
    """Regions and whole tumor are defined on the classic classes every scheme maps to (LabelScheme.classic)."""
    count = len(labels.get_scheme(scheme).labels)
    classic = labels.to_classic(_classes(np.random.default_rng(2), count), scheme)
    regions = targets.classes_to_target(classic, "regions")
    np.testing.assert_array_equal(targets.regions_to_classes(regions > 0.5), classic)
    # From probabilities and from logits alike.
    np.testing.assert_array_equal(targets.output_to_classes(np.where(regions > 0, 0.9, 0.1), "regions"), classic)
    np.testing.assert_array_equal(
        targets.output_to_classes(6 * regions - 3, "regions", from_logits=True), classic)
    whole = targets.classes_to_target(classic, "whole_tumor")
    decoded = targets.output_to_classes(whole, "whole_tumor")
    np.testing.assert_array_equal(decoded, np.where(classic > 0, targets.WHOLE_TUMOR_CLASS, 0))


@pytest.mark.parametrize("scheme", labels.TASKS)
def test_a_task_s_own_classes_round_trip_through_its_regions(scheme):
    """A task's regions target (gli: WT, TC, ET, RC; ped: WT, TC, ET, CC; MEN-RT: GTV) encodes and decodes its classes."""
    count = len(labels.get_scheme(scheme).labels)
    classes = _classes(np.random.default_rng(5), count)
    target = targets.get_target("regions")
    y = target.encode(classes, scheme)
    assert y.shape == classes.shape + (len(labels.get_scheme(scheme).regions),) == classes.shape + (
        target.channels(scheme),)
    for (_, members), channel in zip(labels.get_scheme(scheme).regions, np.moveaxis(y, -1, 0)):
        np.testing.assert_array_equal(channel, np.isin(classes, members))
    np.testing.assert_array_equal(target.decode_target(y, scheme), classes)
    np.testing.assert_array_equal(targets.output_to_classes(6 * y - 3, "regions", from_logits=True, scheme=scheme),
                                  classes)
    # The tf.data graph and Keras tensors run the same table.
    (from_graph,) = tf.data.Dataset.from_tensors(classes).map(lambda c: target.encode(c, scheme)).as_numpy_iterator()
    np.testing.assert_array_equal(from_graph, y)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(target.decode_output(tf.constant(y), scheme=scheme)),
                                  classes)


def test_task_region_composition():
    """Each region writes the class only it has; a region touching no other (RC) is written first, so tumor wins."""
    assert labels.SCHEMES["gli"].region_composition() == ((3, 4), (0, 2), (1, 1), (2, 3))
    assert labels.SCHEMES["ped"].region_composition() == ((0, 4), (1, 2), (2, 1), (3, 3))  # ED, NETC, ET, CC
    assert labels.SCHEMES["menrt"].region_composition() == ((0, 1),)
    rc_and_et = np.array([[1, 1, 1, 1], [0, 0, 0, 1]], bool)  # WT, TC, ET, RC
    np.testing.assert_array_equal(targets.regions_to_classes(rc_and_et, "gli"), [3, 4])
    with pytest.raises(ValueError, match="4 channels last"):
        targets.regions_to_classes(np.zeros((2, 3), bool), "gli")


def test_region_composition_is_derived_from_the_region_classes():
    assert targets.REGION_COMPOSITION == ((0, 2), (1, 1), (2, 3))  # WT -> ED, TC -> NCR, ET -> ET
    assert labels.CLASS_NAMES[targets.WHOLE_TUMOR_CLASS] == "ED"


def test_a_core_voxel_outside_whole_tumor_still_counts_as_tumor():
    regions = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(targets.regions_to_classes(regions), [1, 3, 0])


def test_unknown_target_and_bad_region_shape_are_refused():
    with pytest.raises(ValueError, match="target must be one of"):
        targets.get_target("voxels")
    with pytest.raises(ValueError, match="3 channels last"):
        targets.regions_to_classes(np.zeros((4, 2), bool))


def test_channels_and_activations():
    assert [targets.TARGETS[n].channels() for n in targets.NAMES] == [4, 3, 1]
    assert targets.TARGETS["classes"].channels("gli") == 5 and targets.TARGETS["classes"].channels("menrt") == 2
    assert targets.TARGETS["regions"].channels("gli") == 4 and targets.TARGETS["regions"].channels("menrt") == 1
    assert [targets.TARGETS[n].activation for n in targets.NAMES] == ["softmax", "sigmoid", "sigmoid"]
    assert [targets.target_for_channels(c) for c in (4, 3, 1, 5)] == ["classes", "regions", "whole_tumor", None]


# ------------------------------------------------------------------ registry facts


@pytest.mark.parametrize("name", list_models())
def test_registry_pooling_multiple_matches_the_built_network(name):
    facts = model_facts(name)
    shape = (None, None, None, len(facts.modalities))
    overrides = {"base_filters": 2} if facts.classes_arg else {}
    network = build_model(name, input_shape=shape, **overrides)
    padding = [layer.multiple for layer in network.layers if isinstance(layer, PadToMultiple)]
    assert padding == [facts.pooling_multiple]  # a size-free input pads to exactly that multiple
    assert network.input_shape[-1] == len(facts.modalities)


def test_registry_facts_of_the_two_families():
    flair = model_facts("flair-unet")
    assert (flair.modalities, flair.targets, flair.output, flair.pooling_multiple) == (
        ("flair",), ("whole_tumor",), "probabilities", 16)
    light = model_facts("lightweight-unet")
    assert light.outputs_logits and light.pooling_multiple == 4 and light.classes_arg == "num_classes"
    assert model_facts("lightweight-unet", levels=5).pooling_multiple == 16
    assert set(light.targets) == set(targets.NAMES)
    with pytest.raises(ModelError, match="unknown model"):
        model_facts("unet-9000")
