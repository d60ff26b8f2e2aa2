"""The 2023-2025 tasks: the label-scheme table, discovery, inspection and synth of every task."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bratskeras.cli import cli
from bratskeras.core import labels
from bratskeras.core.errors import DataError
from bratskeras.data import inspection, layouts, volumes
from bratskeras.synth import phantoms as synth

SHAPE = (28, 28, 20)


@pytest.mark.parametrize("name", sorted(labels.SCHEMES))
def test_scheme_table_is_consistent(name):
    scheme = labels.SCHEMES[name]
    assert scheme.labels[0] == 0 and len(set(scheme.labels)) == len(scheme.labels)
    assert len(scheme.names) == len(scheme.labels)
    for _, classes in scheme.regions:
        assert all(0 < c < len(scheme.labels) for c in classes)
    for _, values in scheme.lesion_groups:
        assert set(values) <= set(scheme.labels) - {0}


def test_official_groups_of_the_issue():
    """The brats-evaluation configs' groups (copied into labels.py's docstring)."""
    groups = {name: dict(labels.SCHEMES[name].lesion_groups) for name in labels.TASKS}
    assert groups["gli"] == {"netc": (1,), "snfh": (2,), "et": (3,), "rc": (4,), "tc": (1, 3), "wt": (1, 2, 3)}
    assert groups["mets"] == {"et": (3,), "rc": (4,), "tc": (1, 3), "wt": (1, 2, 3)}
    assert groups["ped"] == {"et": (1,), "netc": (2,), "cc": (3,), "ed": (4,), "tc": (1, 2, 3), "wt": (1, 2, 3, 4)}
    assert groups["men"] == groups["goat"] == groups["brats2023"] == {"et": (3,), "tc": (1, 3), "wt": (1, 2, 3)}
    assert groups["menrt"] == {"gtv": (1,)} and labels.SCHEMES["menrt"].modalities == ("t1ce",)


@pytest.mark.parametrize("task, case_id, needs_task", [
    ("brats2023", "BraTS-GLI-00000-000", False),
    ("gli", "BraTS-GLI-00000-000", True),
    ("mets", "BraTS-MET-00000-000", False),
    ("ped", "BraTS-PED-00000-000", False),
    ("men", "BraTS-MEN-00000-000", False),
    ("goat", "BraTS-GoAT-00000", False),
    ("menrt", "BraTS-MEN-RT-0000-1", False),
])
def test_every_task_is_written_discovered_inspected_and_read(tmp_path, task, case_id, needs_task):
    synth.write_dataset(tmp_path, cases=2, shape=SHAPE, task=task, seed=3)
    dataset, report = inspection.inspect_dataset(tmp_path, task=task if needs_task else None)
    scheme = labels.SCHEMES[task]
    assert dataset.layout == "brats2023" and dataset.label_scheme == task
    assert dataset.cases[0].id == case_id and report.problems == []
    assert set(dataset.cases[0].modalities) == set(scheme.modalities)
    image, seg, _ = volumes.read_case(dataset.cases[0])
    assert image.shape == SHAPE + (len(scheme.modalities),)
    _, phantom = synth.task_phantom(SHAPE, (3, 0), scheme)
    assert np.array_equal(seg, synth.scheme_classes(phantom, scheme))
    assert report.cases[0].labels == np.asarray(scheme.labels)[np.unique(seg)].tolist()
    if task != "mets":  # a metastasis case may have no necrotic core or no cavity
        assert report.cases[0].labels == list(scheme.labels)  # every structure present, cavity and cyst included


def test_cavity_and_cyst_follow_each_scheme():
    _, phantom = synth.make_case(SHAPE, 7, fluid="cyst")
    assert (phantom == 4).any()
    ped = synth.scheme_classes(phantom, labels.SCHEMES["ped"])
    assert np.array_equal(ped == 3, phantom == 4)  # CC is ped's 3
    assert np.array_equal(ped == 1, phantom == 3)  # ET is ped's 1
    gtv = synth.scheme_classes(phantom, labels.SCHEMES["menrt"])
    assert np.array_equal(gtv == 1, np.isin(phantom, (1, 3)))
    plain, _ = synth.make_case(SHAPE, 7)
    again, _ = synth.make_case(SHAPE, 7, fluid=None)
    assert all(np.array_equal(plain[m], again[m]) for m in plain)


def test_post_treatment_glioma_needs_the_task(tmp_path):
    synth.write_dataset(tmp_path, cases=1, shape=SHAPE, task="gli")
    _, report = inspection.inspect_dataset(tmp_path)
    assert len(report.problems) == 1
    assert "label values [4] are not in the brats2023 scheme" in report.problems[0]
    assert "gli, mets, ped" in report.problems[0]


def test_mixed_tasks_and_old_layouts_are_refused(tmp_path):
    synth.write_dataset(tmp_path / "a", cases=1, shape=SHAPE, task="mets")
    synth.write_dataset(tmp_path / "b", cases=1, shape=SHAPE, task="ped")
    with pytest.raises(DataError, match="several tasks found .*mets, ped"):
        layouts.discover(tmp_path)
    with pytest.raises(DataError, match="BraTS-MET-00000-000: its folder name says task mets, not ped"):
        layouts.discover(tmp_path, task="ped")  # --task chooses only where the folder names do not tell
    assert layouts.discover(tmp_path / "b", task="ped").label_scheme == "ped"
    synth.write_dataset(tmp_path / "c", cases=1, shape=SHAPE, layout="brats2021")
    with pytest.raises(DataError, match="not brats2021"):
        layouts.discover(tmp_path / "c", task="gli")


def test_cli_synth_and_inspect_with_task(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["synth", str(tmp_path / "d"), "--task", "gli", "--cases", "1",
                                  "--shape", "24,24,16"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, ["inspect", str(tmp_path / "d")]).exit_code == 1
    result = runner.invoke(cli, ["inspect", str(tmp_path / "d"), "--task", "gli", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["label_scheme"] == "gli" and payload["cases"][0]["labels"] == [0, 1, 2, 3, 4]


def test_classic_classes_are_written_in_each_task_labels():
    classic = np.array([0, 1, 2, 3])
    assert labels.classic_to_labels(classic, "ped").tolist() == [0, 2, 4, 1]  # NCR->NETC, ED->ED, ET->ET
    assert labels.classic_to_labels(classic, "menrt").tolist() == [0, 1, 0, 1]  # core is GTV
    assert labels.classic_to_labels(classic, "brats2020").tolist() == [0, 1, 2, 4]
    assert labels.classic_to_labels(classic, "gli").tolist() == [0, 1, 2, 3]


def test_fit_needs_the_task_of_schemes_with_their_own_classes(tmp_path):
    labels.require_trainable("men", "d")
    labels.require_trainable("gli", "d", task="gli")
    with pytest.raises(DataError, match=r"the gli scheme \(NETC, SNFH, ET, RC\) has its own classes; pass --task gli"):
        labels.require_trainable("gli", "d")
    from bratskeras.training.prepare import labelled_cases

    synth.write_dataset(tmp_path, cases=1, shape=SHAPE, task="ped")
    with pytest.raises(DataError, match="ped scheme"):
        labelled_cases(tmp_path)
    assert len(labelled_cases(tmp_path, task="ped")[0]) == 1


@pytest.mark.parametrize("task, classic_class, value", [("ped", 3, 1), ("ped", 1, 2), ("men", 3, 3)])
def test_predict_writes_the_task_values(tmp_path, task, classic_class, value):
    import keras

    from bratskeras.models import build_model
    from bratskeras.predict import inference, model_setup

    keras.utils.set_random_seed(0)
    build_model("lightweight-unet", base_filters=4).save(tmp_path / "tiny.keras")
    _, setup = model_setup.load_predictor(str(tmp_path / "tiny.keras"))
    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, task=task)
    case = layouts.discover(tmp_path / "d").cases[0]

    def always(batch):  # a model that always says `classic_class` makes the written value visible
        return np.tile(np.eye(4, dtype=np.float32)[classic_class], batch.shape[:4] + (1,))

    label_map, _, _ = inference.predict_case(always, setup, case, inference.PredictSettings())
    assert set(np.unique(label_map)) == {0, value}
