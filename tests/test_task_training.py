"""fit and predict on the 2023-2025 schemes' own classes: 5 classes with RC, MEN-RT's GTV from T1c alone."""

import keras
import numpy as np
import pytest

from bratskeras.config.train_config import resolve_config
from bratskeras.core import labels
from bratskeras.core.errors import ConfigError, DataError
from bratskeras.data import layouts
from bratskeras.export import exporter as export
from bratskeras.export.formats import FORMATS
from bratskeras.predict import inference, model_setup
from bratskeras.synth import phantoms as synth
from bratskeras.training.fit import fit

SHAPE = (24, 24, 16)
TINY = {"model_overrides": {"base_filters": 4}, "epochs": 1, "steps_per_epoch": 1, "batch_size": 2,
        "patch_size": (16, 16, 16), "crop": "none", "precision": "float32", "checkpoint_every": 1}


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
@pytest.mark.parametrize("task, target, outputs, modalities", [
    ("gli", "classes", 5, ("flair", "t1", "t1ce", "t2")),
    ("menrt", "classes", 2, ("t1ce",)),
    ("gli", "regions", 4, ("flair", "t1", "t1ce", "t2")),  # WT, TC, ET, RC
    ("menrt", "regions", 1, ("t1ce",)),  # GTV
])
def test_fit_trains_the_task_classes_and_predict_writes_its_values(tmp_path, task, target, outputs, modalities):
    synth.write_dataset(tmp_path / "data", cases=3, shape=SHAPE, task=task, seed=4)
    config = resolve_config("lightweight2020", {**TINY, "task": task, "target": target,
                                                "modalities": labels.SCHEMES[task].modalities})
    assert config.loss == {"classes": "dice_ce", "regions": "region_dice_bce"}[target]
    result = fit(config, str(tmp_path / "data"), str(tmp_path / "run"), verbose=0)
    model = keras.saving.load_model(str(tmp_path / "run" / "best.keras"), safe_mode=True)
    assert model.input_shape[-1] == len(modalities) and model.output_shape[-1] == outputs
    assert set(result.heldout_dice) == {"WT", "TC", "ET"}
    logged = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"dice_wt", "dice_tc", "dice_et", "val_dice_wt"} <= set(logged)
    network, setup = model_setup.load_predictor(str(tmp_path / "run"))
    assert setup.task == task and setup.modalities == modalities and setup.target == target
    case = layouts.discover(tmp_path / "data", task=task).cases[0]

    def always_last(batch):  # a model that always says the last class shows which values are written
        return np.tile(np.eye(outputs, dtype=np.float32)[-1], batch.shape[:4] + (1,))

    label_map, _, _ = inference.predict_case(always_last, setup, case, inference.PredictSettings())
    assert set(np.unique(label_map)) <= {0, labels.SCHEMES[task].labels[-1]}
    assert labels.SCHEMES[task].labels[-1] in np.unique(label_map)  # 4 = RC for gli, 1 = GTV for MEN-RT
    if target == "regions" and task == "gli":
        _check_exported_probabilities(tmp_path / "run", model, tmp_path / "served")


def _check_exported_probabilities(run, model, out):
    """A task's 4 region logits look like the classic 4 classes: the export must take the run's sigmoid, not softmax."""
    report = export.export_model(str(run / "best.keras"), "saved_model", out=str(out))
    image = np.random.default_rng(0).standard_normal((1, 16, 16, 16, 4)).astype(np.float32)
    served = FORMATS["saved_model"].run(report.path, image)
    logits = keras.ops.convert_to_numpy(model(image, training=False))
    np.testing.assert_allclose(served, 1 / (1 + np.exp(-logits)), atol=1e-5)


def test_a_task_dataset_needs_its_task_and_classes_target(tmp_path):
    synth.write_dataset(tmp_path / "data", cases=2, shape=SHAPE, task="mets")
    with pytest.raises(DataError, match="pass --task mets"):
        fit(resolve_config("lightweight2020", TINY), str(tmp_path / "data"), str(tmp_path / "run"), verbose=0)
    with pytest.raises(DataError, match="folder name says task mets, not ped"):
        fit(resolve_config("lightweight2020", {**TINY, "task": "ped"}), str(tmp_path / "data"),
            str(tmp_path / "run2"), verbose=0)
    with pytest.raises(ConfigError, match="use target classes or regions"):
        resolve_config("lightweight2020", {**TINY, "task": "gli", "target": "whole_tumor"})
