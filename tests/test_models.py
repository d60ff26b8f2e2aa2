"""Model builders: paper parameter counts, Table 1, shapes, saving, mixed precision."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core import model_presets
from bratskeras.core.errors import ModelError
from bratskeras.models import build_model, list_models
from bratskeras.models.summary import compare_with_paper, layer_table, load_reference

PAPER_COUNTS = {
    "flair-unet": 13_522_721,
    "lightweight-unet": 340_596,
    "medium-unet-16": 2_867_956,
    "medium-unet-32": 11_465_188,
    "deep-unet-16": 11_536_756,
    "deep-unet-32": 46_137_060,
}


def test_registry_lists_every_paper_model():
    assert list_models() == list(PAPER_COUNTS)


@pytest.mark.parametrize("name", list(PAPER_COUNTS))
def test_parameter_count_matches_paper(name):
    count = build_model(name).count_params()
    assert count == PAPER_COUNTS[name]
    # The count `bratskeras models` prints without building: it cannot drift from the built model.
    assert model_presets.parameter_count(name) == count


def test_flair_unet_layers_follow_table_1_in_order():
    model = build_model("flair-unet")
    table = load_reference("flair_unet_table1.json")["layers"]
    weighted_or_named = [
        (r["name"], r["type"], r["params"])
        for r in layer_table(model)
        if r["type"] not in ("InputLayer", "PadToMultiple", "CropToReference")
    ]
    assert weighted_or_named == [(r["name"], r["type"], r["params"]) for r in table]
    assert len(table) == 28


def test_flair_unet_has_only_the_deepest_skip():
    model = build_model("flair-unet")
    concats = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert [c.name for c in concats] == ["concatenate_1"]
    assert [t._keras_history[0].name for t in concats[0].input] == ["deconvolution3d_1", "conv3d_4"]


def test_compare_detects_a_wrong_row():
    model = build_model("flair-unet")
    table = load_reference("flair_unet_table1.json")["layers"]
    from bratskeras.models.summary import compare_with_table

    broken = [dict(row) for row in table]
    broken[3]["params"] += 1
    _, ok = compare_with_table(layer_table(model), broken)
    assert not ok
    lines, ok, _ = compare_with_paper("flair-unet", model)
    assert ok and sum(line["status"] == "extra" for line in lines) == 3


def test_lightweight_internals_follow_the_paper():
    model = build_model("lightweight-unet")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.GroupNormalization)]
    # groups=-1 becomes one group per channel once built: instance norm.
    assert norms and all(n.groups == n.input.shape[-1] and not n.center and not n.scale and n.epsilon == 1e-5 for n in norms)
    acts = [layer for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert acts and all(abs(a.negative_slope - 0.01) < 1e-9 for a in acts)
    assert model.get_layer("head_dropout").rate == 0.3
    assert isinstance(model.get_layer("head_dropout"), keras.layers.SpatialDropout3D)
    assert model.get_layer("head").kernel.shape == (1, 1, 1, 16, 4)


def test_kaiming_init_variance_uses_fan_in():
    model = build_model("lightweight-unet", input_shape=(8, 8, 8, 4))
    kernel = keras.ops.convert_to_numpy(model.get_layer("dec1_conv0").kernel)
    fan_in = 3 * 3 * 3 * kernel.shape[3]
    expected = 2.0 / ((1 + 0.01**2) * fan_in)
    assert abs(kernel.var() / expected - 1) < 0.1


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_full_volume_forward_keeps_spatial_shape_lightweight():
    model = build_model("lightweight-unet", input_shape=(240, 240, 155, 4))
    out = model.predict(np.zeros((1, 240, 240, 155, 4), np.float32), verbose=0)
    assert out.shape == (1, 240, 240, 155, 4)


@pytest.mark.slow
def test_flair_unet_forward_on_paper_crop():
    model = build_model("flair-unet")
    out = model.predict(np.zeros((1, 192, 192, 154, 1), np.float32), verbose=0)
    assert out.shape == (1, 192, 192, 154, 1)


def test_padded_model_gives_same_output_in_graph_and_eager_mode():
    # Guards the oneDNN Pad -> Conv3D fusion bug that PadToMultiple avoids.
    model = build_model("lightweight-unet", input_shape=(12, 12, 10, 4), base_filters=4)
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 10, 4)).astype(np.float32)
    eager = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-5)


@pytest.mark.parametrize("shape", [(17, 20, 9), (16, 16, 16), (1, 3, 5)])
def test_odd_shapes_round_trip_on_dynamic_models(shape):
    model = build_model("lightweight-unet", base_filters=4)
    x = np.random.default_rng(0).normal(size=(1, *shape, 4)).astype(np.float32)
    assert model(x, training=False).shape == (1, *shape, 4)


def test_flair_unet_odd_shape_small_width():
    model = build_model("flair-unet", input_shape=(None, None, None, 1))
    x = np.zeros((1, 24, 20, 13, 1), np.float32)
    assert model(x, training=False).shape == (1, 24, 20, 13, 1)


def test_flair_unet_accepts_full_volume_shape_statically():
    model = build_model("flair-unet", input_shape=(240, 240, 155, 1))
    assert model.output_shape == (None, 240, 240, 155, 1)


@pytest.mark.parametrize("name,input_shape", [
    ("lightweight-unet", (12, 12, 10, 4)),
    ("flair-unet", (16, 16, 14, 1)),
])
def test_save_and_reload_with_safe_mode_gives_identical_outputs(tmp_path, name, input_shape):
    overrides = {"base_filters": 4} if name != "flair-unet" else {}
    model = build_model(name, input_shape=input_shape, **overrides)
    x = np.random.default_rng(1).normal(size=(2, *input_shape)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", ["lightweight-unet", "flair-unet"])
def test_outputs_are_float32_under_mixed_precision(policy, name):
    keras.mixed_precision.set_global_policy(policy)
    overrides = {"base_filters": 4} if name != "flair-unet" else {}
    channels = 4 if name != "flair-unet" else 1
    model = build_model(name, input_shape=(16, 16, 12, channels), **overrides)
    inner = model.get_layer("conv3d_5" if name == "flair-unet" else "enc0_conv0")
    assert inner.compute_dtype == policy.split("_")[1]
    assert model.output.dtype == "float32"


@pytest.mark.parametrize("name", ["lightweight-unet", "flair-unet"])
def test_forward_pass_runs_in_bfloat16_on_cpu(name):
    # float16 MaxPool3D has kernels on GPUs only, so only bfloat16 runs here.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    overrides = {"base_filters": 4} if name != "flair-unet" else {}
    channels = 4 if name != "flair-unet" else 1
    model = build_model(name, input_shape=(16, 16, 12, channels), **overrides)
    out = model(np.ones((1, 16, 16, 12, channels), np.float32), training=False)
    assert out.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_overrides_change_the_family_member():
    model = build_model("lightweight-unet", base_filters=4, num_classes=3, input_shape=(8, 8, 8, 2))
    assert model.output_shape == (None, 8, 8, 8, 3)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "unet-9000"}, "unknown model"),
    ({"name": "lightweight-unet", "input_shape": (64, 64, 4)}, "(D, H, W, channels)"),
    ({"name": "lightweight-unet", "input_shape": (64, 64, 0, 4)}, "positive"),
    ({"name": "lightweight-unet", "input_shape": (64, 64, 64, None)}, "channel"),
    ({"name": "lightweight-unet", "filters": 3}, "unknown argument"),
])
def test_bad_names_and_impossible_shapes_raise_clear_errors(kwargs, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(**kwargs)


def test_cli_summary_compare_passes_for_flair_unet():
    result = CliRunner().invoke(cli, ["summary", "flair-unet", "--compare"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "|" in line]
    assert sum(line.endswith(" match") for line in rows) == 28
    assert sum(line.endswith(" extra") for line in rows) == 3
    assert "13,522,721" in result.output


def test_cli_summary_json_schema():
    result = CliRunner().invoke(cli, ["summary", "lightweight-unet", "--json", "--compare"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["params"] == 340_596 and payload["matches_paper"] is True
    assert payload["layers"][-1] == {"name": "head", "type": "Conv3D", "params": 68}
    assert set(payload["layers"][0]) == {"name", "type", "params"}


def test_cli_summary_with_input_shape_shows_output_shapes():
    result = CliRunner().invoke(cli, ["summary", "lightweight-unet", "--input-shape", "32,32,30,4"])
    assert result.exit_code == 0, result.output
    assert "(None, 32, 32, 30, 4)" in result.output


def test_cli_unknown_model_is_one_line_error():
    result = CliRunner().invoke(cli, ["summary", "unet-9000"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: unknown model 'unet-9000'; expected one of: flair-unet, lightweight-unet, "
        "medium-unet-16, medium-unet-32, deep-unet-16, deep-unet-32"
    ]


def test_cli_models_lists_counts():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    for name, count in PAPER_COUNTS.items():
        assert name in result.output and f"{count:,d}" in result.output


def test_instance_normalization_equals_group_normalization_forward_and_backward():
    import tensorflow as tf

    from bratskeras.models.layers import InstanceNormalization

    x = tf.constant(np.random.default_rng(3).normal(2.0, 3.0, size=(2, 6, 5, 4, 3)).astype(np.float32))
    group = keras.layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5)
    fused = InstanceNormalization(center=False, scale=False, epsilon=1e-5)
    outputs, grads = [], []
    for layer in (group, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y**3)
        outputs.append(y.numpy())
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
    np.testing.assert_allclose(grads[1], grads[0], atol=1e-4)
    assert abs(outputs[1][0, ..., 0].mean()) < 1e-5 and abs(outputs[1][1, ..., 2].std() - 1) < 1e-3
    # Dynamic batch size: map_fn for 2 samples, a reshape for 1.
    dynamic = tf.function(fused.call, input_signature=[tf.TensorSpec([None, 6, 5, 4, 3])])
    np.testing.assert_allclose(dynamic(x).numpy(), outputs[0], atol=1e-5)
    np.testing.assert_allclose(dynamic(x[1:]).numpy(), outputs[0][1:], atol=1e-5)


def test_normalized_conv3d_matches_conv3d_and_only_drops_a_zero_bias_gradient():
    import tensorflow as tf

    from bratskeras.models.layers import InstanceNormalization, NormalizedConv3D

    x = tf.random.stateless_normal((2, 6, 5, 4, 3), seed=(1, 2))
    target = tf.random.stateless_normal((2, 6, 5, 4, 8), seed=(3, 4))
    plain, normalized = keras.layers.Conv3D(8, 3, padding="same"), NormalizedConv3D(8, 3, padding="same")
    plain.build(x.shape)
    normalized.build(x.shape)
    normalized.set_weights(plain.get_weights())
    normalized.bias.assign(tf.random.stateless_normal((8,), seed=(5, 6)))
    plain.bias.assign(normalized.bias)
    norm = InstanceNormalization()
    for training in (False, True):
        np.testing.assert_allclose(normalized(x, training=training), plain(x), rtol=1e-6, atol=1e-6)

    def gradients(layer):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((norm(layer(x, training=True)) - target) ** 2)
        return tape.gradient(loss, [layer.kernel, layer.bias])

    (kernel_plain, bias_plain), (kernel_normalized, bias_normalized) = gradients(plain), gradients(normalized)
    np.testing.assert_allclose(kernel_normalized, kernel_plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bias_normalized, np.zeros(8))
    # Under the norm the true bias gradient is zero up to rounding, while the kernel's is not.
    assert np.abs(bias_plain).max() < 1e-4 * np.abs(kernel_plain).max()
