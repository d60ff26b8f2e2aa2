"""Resume states: variables restored by name, one-line refusals, crash safety, old format refused."""

import bratskeras  # noqa: F401  (oneDNN settings before TensorFlow loads)

# isort: split
import json
import os

import keras
import numpy as np
import pytest

from bratskeras.core.errors import ConfigError
from bratskeras.training import resume_state, state_names


def small_model(layer_names, units=(4, 4), dropout=True):
    """Dense layers of the same shape named `layer_names`, in that order, plus a dropout's seed state."""
    inputs = keras.Input((4,))
    x = inputs
    for name, width in zip(layer_names, units):
        x = keras.layers.Dense(width, name=name)(x)
    if dropout:
        x = keras.layers.Dropout(0.5, seed=3, name="drop")(x)
    return keras.Model(inputs, x)


def built_optimizer(model):
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    return optimizer


def randomize(model, optimizer, seed):
    rng = np.random.default_rng(seed)
    for variable in [*model.variables, *optimizer.variables]:
        if "float" in str(variable.dtype):
            variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))


def save(tmp_path, model, optimizer, epoch=1):
    run_dir = str(tmp_path / "run")
    resume_state.save_state(run_dir, epoch, model, optimizer, {"learning_rate": 1e-3, "callbacks": {}})
    return run_dir


def test_swapped_same_shaped_layers_restore_by_name(tmp_path):
    """Positionally, a's weights would land in b and b's in a (same shapes): by name they must not."""
    saved_model = small_model(["a", "b"])
    saved_optimizer = built_optimizer(saved_model)
    randomize(saved_model, saved_optimizer, seed=0)
    run_dir = save(tmp_path, saved_model, saved_optimizer)

    swapped = small_model(["b", "a"])  # same shapes, the variables in the other order
    optimizer = built_optimizer(swapped)
    assert [v.shape for v in swapped.variables] == [v.shape for v in saved_model.variables]
    state = resume_state.load_state(resume_state.latest_state(run_dir), swapped, optimizer)
    assert state["epoch"] == 1
    for name in ("a", "b"):
        for mine, theirs in zip(swapped.get_layer(name).weights, saved_model.get_layer(name).weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # The Adam slots follow their variables, not their positions.
    named = state_names.state_variables(swapped, optimizer)
    reference = state_names.state_variables(saved_model, saved_optimizer)
    for name, variable in named.items():
        np.testing.assert_array_equal(np.asarray(variable.numpy()), np.asarray(reference[name].numpy()), name)
    assert {"optimizer/adam/a/kernel/momentum", "optimizer/adam/b/bias/velocity"} <= set(named)


def test_names_ignore_keras_process_wide_counters(tmp_path):
    """A second model/optimizer in the same process gets seed_generator_N / adam_N paths: same state names."""
    first = small_model(["a", "b"])
    second = small_model(["a", "b"])
    names_first = set(state_names.state_variables(first, built_optimizer(first)))
    names_second = set(state_names.state_variables(second, built_optimizer(second)))
    assert names_first == names_second
    assert "model/drop/seed_generator_state" in names_first
    # A Sequential's variable paths (and so Keras' slot names) start with "sequential_N".
    sequential = [keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")]) for _ in range(2)]
    names = [set(state_names.state_variables(m, built_optimizer(m))) for m in sequential]
    assert names[0] == names[1] and "optimizer/adam/sequential/d/kernel/momentum" not in names[0]
    assert "optimizer/adam/d/kernel/momentum" in names[0]


def test_renamed_variable_is_refused_naming_it(tmp_path):
    saved_model = small_model(["a", "b"])
    run_dir = save(tmp_path, saved_model, built_optimizer(saved_model))
    renamed = small_model(["a", "c"])
    before = [v.numpy().copy() for v in renamed.variables]
    with pytest.raises(ConfigError) as error:
        resume_state.load_state(resume_state.latest_state(run_dir), renamed, built_optimizer(renamed))
    message = str(error.value)
    assert "\n" not in message and "model/c/" in message and "not in the saved state" in message
    # Nothing was restored half-way.
    for value, variable in zip(before, renamed.variables):
        np.testing.assert_array_equal(value, variable.numpy())


def test_other_shape_or_missing_or_extra_variable_is_refused_naming_it(tmp_path):
    saved_model = small_model(["a", "b"])
    run_dir = save(tmp_path, saved_model, built_optimizer(saved_model))
    prefix = resume_state.latest_state(run_dir)

    wider = small_model(["a", "b"], units=(4, 5))
    with pytest.raises(ConfigError, match=r"variable model/b/bias has shape \(4,\) in the saved state, \(5,\) here"):
        resume_state.load_state(prefix, wider, built_optimizer(wider))

    without_dropout = small_model(["a", "b"], dropout=False)
    with pytest.raises(ConfigError, match="holds variable model/drop/seed_generator_state, which this model"):
        resume_state.load_state(prefix, without_dropout, built_optimizer(without_dropout))


def test_a_save_killed_before_the_pointer_moved_leaves_the_previous_state(tmp_path, monkeypatch):
    model = small_model(["a", "b"])
    optimizer = built_optimizer(model)
    randomize(model, optimizer, seed=1)
    run_dir = save(tmp_path, model, optimizer, epoch=1)
    epoch_one = {name: np.asarray(v.numpy()).copy() for name, v in state_names.state_variables(model, optimizer).items()}

    randomize(model, optimizer, seed=2)

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed  # as a kill -9 after the files of epoch 2 were written, before state/checkpoint moved

    import tensorflow as tf

    monkeypatch.setattr(tf.train.CheckpointManager, "_record_state", die)
    with pytest.raises(Killed):
        save(tmp_path, model, optimizer, epoch=2)
    monkeypatch.undo()

    prefix = resume_state.latest_state(run_dir)
    assert os.path.basename(prefix) == "epoch-1" and resume_state.read_state(prefix)["epoch"] == 1
    fresh = small_model(["a", "b"])
    fresh_optimizer = built_optimizer(fresh)
    resume_state.load_state(prefix, fresh, fresh_optimizer)
    for name, variable in state_names.state_variables(fresh, fresh_optimizer).items():
        np.testing.assert_array_equal(np.asarray(variable.numpy()), epoch_one[name], name)

    # The next complete save publishes epoch 2 and removes epoch 1.
    save(tmp_path, model, optimizer, epoch=2)
    assert os.path.basename(resume_state.latest_state(run_dir)) == "epoch-2"
    left = sorted(os.listdir(os.path.join(run_dir, "state")))
    assert left == ["checkpoint", "epoch-2.data-00000-of-00001", "epoch-2.index", "epoch-2.json"]
    assert set(resume_state.saved_variables(resume_state.latest_state(run_dir))) == set(
        state_names.state_variables(model, optimizer))


def test_state_of_an_older_version_is_refused_in_one_line(tmp_path):
    """Run folders from before states were saved by name: state/LATEST + state/epoch-NNNN/model.npz."""
    folder = tmp_path / "run" / "state" / "epoch-0002"
    folder.mkdir(parents=True)
    np.savez(folder / "model.npz", np.zeros((4, 4)), np.zeros(4))
    np.savez(folder / "optimizer.npz", np.zeros(()))
    (folder / "state.json").write_text(json.dumps({"epoch": 2}))
    (tmp_path / "run" / "state" / "LATEST").write_text("epoch-0002")
    with pytest.raises(ConfigError) as error:
        resume_state.latest_state(str(tmp_path / "run"))
    message = str(error.value)
    assert "\n" not in message and "epoch-0002" in message and "older bratskeras" in message


def test_state_whose_json_was_removed_is_refused_not_restarted(tmp_path):
    model = small_model(["a", "b"])
    run_dir = save(tmp_path, model, built_optimizer(model), epoch=3)
    os.remove(os.path.join(run_dir, "state", "epoch-3.json"))
    with pytest.raises(ConfigError, match=r"epoch-3\.json: missing"):
        resume_state.latest_state(run_dir)
