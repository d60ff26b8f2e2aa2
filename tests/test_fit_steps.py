"""fit's named steps that need no training: process settings put back, and the fit command's plans."""

import json
import os
import random

import keras
import numpy as np
import pytest

from bratskeras.config.train_config import resolve_config
from bratskeras.core import run_folder
from bratskeras.core.errors import ConfigError, OutputExistsError
from bratskeras.training import demo, plan
from bratskeras.training.fit import process_settings


def test_process_settings_put_the_dtype_policy_and_random_states_back():
    keras.mixed_precision.set_global_policy("float32")
    random.seed(11)
    np.random.seed(11)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    config = resolve_config("lightweight2020", {"precision": "mixed_bfloat16", "seed": 3})
    with process_settings(config) as (policy, _):
        assert policy == "mixed_bfloat16" == keras.mixed_precision.global_policy().name
        seeded = random.random()
    assert keras.mixed_precision.global_policy().name == "float32"
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    random.seed(3)
    assert random.random() == seeded  # the run itself was seeded by its config


def test_process_settings_put_the_policy_back_when_the_run_fails():
    keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(RuntimeError, match="boom"):
        with process_settings(resolve_config("lightweight2020", {"precision": "mixed_bfloat16"})):
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_plan_new_resolves_the_preset_and_refuses_a_run_folder_in_use(tmp_path):
    run = plan.plan_new(str(tmp_path / "data"), str(tmp_path / "run"), None, {"epochs": 3})
    assert (run.config.preset, run.config.epochs, run.resume, run.heldout_dir) == ("lightweight2020", 3, False, None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        plan.plan_new(str(tmp_path / "data"), str(tmp_path / "busy"), "flair2017", {})
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_plan_resume_needs_the_data_dir_of_a_run_that_is_not_a_demo(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(resolve_config("lightweight2020").to_json())
    with pytest.raises(plan.MissingDataDir, match="needs the DATA_DIR"):
        plan.plan_resume(str(run_dir), None, None, {})
    run = plan.plan_resume(str(run_dir), str(tmp_path / "data"), None, {"epochs": 200})
    assert run.resume and run.config.epochs == 200 and run.heldout_dir is None
    # A demo run continues on the phantoms in its folder, and scores its held-out ones.
    (run_dir / run_folder.DEMO_DATA_DIR).mkdir()
    demo_run = plan.plan_resume(str(run_dir), None, None, {})
    assert (demo_run.data_dir, demo_run.heldout_dir) == demo.demo_folders(str(run_dir / run_folder.DEMO_DATA_DIR))
    with pytest.raises(ConfigError, match="nothing to resume"):
        plan.plan_resume(str(tmp_path / "absent"), None, None, {})


def test_plan_demo_claims_the_folder_and_writes_its_phantoms(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(demo, "write_demo_data", lambda root, seed: written.append(root) or demo.demo_folders(root))
    lines = []
    run = plan.plan_demo(str(tmp_path / "demo"), None, {"epochs": 1}, echo=lines.append)
    assert written == [os.path.join(str(tmp_path / "demo"), run_folder.DEMO_DATA_DIR)]
    assert run.time_limit == demo.DEMO_TIME_LIMIT and run.config.epochs == 1
    assert lines == [f"demo: writing synthetic BraTS 2020 phantoms ({demo.DEMO_KIND}) to {written[0]}"]
    assert os.listdir(tmp_path / "demo")  # claimed (its marker) before the phantoms went in
    saved = json.loads(run.config.to_json())
    if demo.DEMO_OVERRIDES.get("init_from"):  # a fine-tuning demo: architecture and inputs from its source
        from bratskeras.training.init_from import source_config

        source = source_config(demo.DEMO_OVERRIDES["init_from"])
        assert saved["init_from"] == demo.DEMO_OVERRIDES["init_from"]
        assert all(saved[key] == source[key] for key in ("model", "crop", "modalities"))
        for key in ("spacing", "patch_size"):  # the grid and patch may be the demo's own (init_from.ADJUSTABLE)
            wanted = demo.DEMO_OVERRIDES.get(key)
            assert saved[key] == (list(wanted) if wanted is not None else source[key])
        assert saved["learning_rate"] == demo.DEMO_OVERRIDES["learning_rate"]  # how to train: the demo's own
    else:
        assert run.config.patch_size == demo.DEMO_OVERRIDES["patch_size"]
        assert saved["crop"] == demo.DEMO_OVERRIDES["crop"]
        assert saved["spacing"] == list(demo.DEMO_OVERRIDES["spacing"])
