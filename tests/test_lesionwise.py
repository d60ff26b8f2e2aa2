"""Lesion-wise metrics: hand-computed cases, then every value against the official brats-evaluation package."""

import json
import math
import os

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from bratskeras.cli import cli
from bratskeras.core import labels
from bratskeras.evaluate import lesionwise, surface
from bratskeras.evaluate import scoring as evaluation
from bratskeras.synth import phantoms as synth

NAN, INF = math.nan, math.inf


def cube(shape, corner, size, value=1, out=None):
    out = np.zeros(shape, np.uint8) if out is None else out
    out[tuple(slice(c, c + size) for c in corner)] = value
    return out


def same(a, b):
    """Equal to 1e-6, NaN equal to NaN, inf to inf."""
    if isinstance(a, float) and math.isnan(a) or isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-6


def test_one_found_one_missed_one_false_positive():
    shape = (24, 24, 24)
    ref = cube(shape, (2, 2, 2), 4)
    cube(shape, (14, 14, 14), 4, out=ref)
    pred = cube(shape, (2, 2, 2), 4)
    cube(shape, (2, 16, 2), 3, out=pred)
    result = lesionwise.group_metrics(pred > 0, ref > 0)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 1)
    assert result["rq"] == 0.5 and result["sq_dsc"] == 1.0 and result["pq_dsc"] == 0.5
    assert result["sq_hd95"] == 0.0 and result["sq_dsc_std"] == 0.0
    # Whole masks: 64 shared voxels of 64 + 27 and 128.
    assert result["global_bin_dsc"] == pytest.approx(2 * 64 / (91 + 128))


def test_hd95_of_two_shifted_cubes_by_hand():
    shape = (16, 16, 16)
    ref, pred = cube(shape, (4, 4, 4), 4) > 0, cube(shape, (4, 4, 5), 4) > 0
    # Surface voxels: 56 per cube; pooled distances are 0 or 1 (the shifted faces), 32 of 112 are 1.
    assert surface.hd95(pred, ref, (1.0, 1.0, 1.0)) == 1.0
    assert surface.hd95(pred, ref, (1.0, 1.0, 2.5)) == 2.5


def test_nsd_of_two_shifted_cubes_by_hand():
    shape = (16, 16, 16)
    ref, pred = cube(shape, (4, 4, 4), 4) > 0, cube(shape, (4, 4, 5), 4) > 0
    # 56 surface voxels each. 20 are 1 voxel from the other surface, 36 on it: the 16 of the face
    # the other cube lacks, and the 4 inner voxels of the face that lies inside the other cube.
    assert surface.nsd(pred, ref, (1.0, 1.0, 1.0)) == 1.0  # tolerance 1 voxel: all within
    assert surface.nsd(pred, ref, (1.0, 1.0, 1.0), tolerance=0.5) == pytest.approx(36 / 56)
    # At 2.5 mm along k the 16 face voxels are 2.5 mm away, beyond the default 1 mm tolerance;
    # the 4 inner ones are 1 mm (sideways) from the other surface's ring.
    assert surface.nsd(pred, ref, (1.0, 1.0, 2.5)) == pytest.approx(40 / 56)


@pytest.mark.parametrize("pred_lesion, ref_lesion, expected", [
    (False, False, {"tp": 0, "fp": 0, "fn": 0, "rq": NAN, "pq_dsc": NAN, "sq_dsc": NAN, "sq_hd95": NAN,
                    "global_bin_dsc": NAN, "global_bin_hd95": NAN}),
    (False, True, {"tp": 0, "fp": 0, "fn": 1, "rq": 0.0, "pq_dsc": 0.0, "sq_dsc": 0.0, "sq_hd95": INF,
                   "global_bin_dsc": 0.0, "global_bin_hd95": INF}),
    (True, False, {"tp": 0, "fp": 1, "fn": 0, "rq": 0.0, "pq_dsc": 0.0, "sq_dsc": 0.0, "sq_hd95": INF,
                   "global_bin_dsc": 0.0, "global_bin_hd95": INF}),
])
def test_edge_cases_of_the_configs(pred_lesion, ref_lesion, expected):
    shape = (12, 12, 12)
    pred = cube(shape, (1, 1, 1), 3) if pred_lesion else np.zeros(shape, np.uint8)
    ref = cube(shape, (6, 6, 6), 3) if ref_lesion else np.zeros(shape, np.uint8)
    result = lesionwise.group_metrics(pred > 0, ref > 0)
    assert all(same(result[k], v) for k, v in expected.items()), result
    assert math.isnan(result["sq_dsc_std"]) and math.isnan(result["sq_hd95_std"])


def test_case_metrics_uses_the_task_groups():
    shape = (20, 20, 20)
    ref = cube(shape, (2, 2, 2), 6, value=4)  # a resection cavity only
    result = lesionwise.case_metrics(ref, ref, "gli")
    assert list(result) == ["netc", "snfh", "et", "rc", "tc", "wt"]
    assert result["rc"]["sq_dsc"] == 1.0 and math.isnan(result["wt"]["sq_dsc"])
    assert list(lesionwise.case_metrics(ref[:, :, :] * 0, ref * 0, "menrt")) == ["gtv"]


# --------------------------------------------------------------------------- the official package

def _official():
    """brats_evaluation's evaluate_single_exam and metrics_parser, or a skip naming why."""
    try:
        from brats_evaluation import evaluation as official_evaluation
        from brats_evaluation import metrics_parser
        from panoptica import Panoptica_Evaluator
    except ImportError as error:
        pytest.skip(f"the official brats-evaluation package cannot be imported ({error}); "
                    "pip install -e '.[test]'")
    return official_evaluation, metrics_parser, Panoptica_Evaluator


_EVALUATORS = {}


def official_case(task, pred_path, ref_path):
    """The official per-group dict of one case, exactly as brats-evaluation's main computes it."""
    official_evaluation, _, evaluator_class = _official()
    from importlib.resources import files

    config = labels.SCHEMES[task].official_config
    if config not in _EVALUATORS:
        path = files("brats_evaluation").joinpath("configs", f"config_{config}.yaml")
        _EVALUATORS[config] = evaluator_class.load_from_config(str(path))
    result = official_evaluation.evaluate_single_exam(pred_path, ref_path, os.path.basename(ref_path),
                                                      _EVALUATORS[config])
    assert "error" not in result, result
    return result


def write_label(array, path, zooms=(1.0, 1.0, 1.0), affine=None):
    image = nib.Nifti1Image(np.asarray(array, np.uint8), np.diag([*zooms, 1.0]) if affine is None else affine)
    image.set_data_dtype(np.uint8)
    nib.save(image, path)


def blobs(rng, shape, values, count):
    """Up to `count` random ellipsoids of random values: lesions that touch, nest and split."""
    out = np.zeros(shape, np.uint8)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(count):
        centre, radii = rng.uniform(0, shape), rng.uniform(1.5, 8, 3)
        out[sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1] = rng.choice(values)
    return out


def perturbed(rng, ref, values):
    """A prediction of `ref`: shifted, grown, thinned, emptied or kept, plus 0-2 false-positive lesions."""
    kind = rng.integers(5)
    if kind == 0:
        pred = np.roll(ref, tuple(rng.integers(-3, 4, 3)), axis=(0, 1, 2))
    elif kind == 1:
        pred = ndimage.grey_dilation(ref, size=(2, 2, 2))
    elif kind == 2:
        pred = np.where(rng.random(ref.shape) < 0.15, 0, ref)
    elif kind == 3:
        pred = np.zeros_like(ref)
    else:
        pred = ref.copy()
    extra = blobs(rng, ref.shape, [1], int(rng.integers(0, 3)))
    return np.where(extra > 0, rng.choice(values), pred).astype(np.uint8)


def assert_matches_official(ours, official):
    assert set(ours) == {k for k in official if k != "subject_name"}
    for group, values in ours.items():
        for name, value in values.items():
            assert same(value, official[group][name]), (group, name, value, official[group][name])


def edge_cases(task):
    """Named (prediction, reference) pairs of the edge cases, in `task`'s values, 48^3."""
    shape = (48, 48, 48)
    values = [v for v in labels.SCHEMES[task].labels if v]
    ref = np.zeros(shape, np.uint8)
    for index, value in enumerate(values):  # one lesion of every label, and a second of the first
        cube(shape, (4 + 10 * index, 4, 4), 6, value, out=ref)
    cube(shape, (30, 30, 30), 5, values[0], out=ref)
    missed = ref.copy()
    missed[28:40, 28:40, 28:40] = 0
    false_positive = cube(shape, (40, 40, 4), 4, values[-1], out=ref.copy())
    touching = ref.copy()
    touching[4:10, 10:12, 4:10] = values[0]  # grows the first lesion into a neighbour's
    return {"identical": (ref, ref), "missed lesion": (missed, ref), "false positive": (false_positive, ref),
            "empty prediction": (np.zeros_like(ref), ref), "empty reference": (ref, np.zeros_like(ref)),
            "both empty": (np.zeros_like(ref), np.zeros_like(ref)), "merged lesions": (touching, ref)}


@pytest.mark.parametrize("task", labels.TASKS)
def test_edge_cases_match_the_official_package(tmp_path, task):
    _official()
    for name, (pred, ref) in edge_cases(task).items():
        pred_path, ref_path = str(tmp_path / f"{task}-pred.nii.gz"), str(tmp_path / f"{task}-ref.nii.gz")
        write_label(pred, pred_path)
        write_label(ref, ref_path)
        ours = lesionwise.case_metrics(pred, ref, task)
        try:
            assert_matches_official(ours, official_case(task, pred_path, ref_path))
        except AssertionError as error:
            raise AssertionError(f"{task}, {name}: {error}") from None


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_the_official_package(tmp_path, seed):
    """Random lesions of every task, some at anisotropic spacing (the official axis pairing)."""
    _official()
    rng = np.random.default_rng(seed)
    for index, task in enumerate(labels.TASKS):
        values = [v for v in labels.SCHEMES[task].labels if v]
        shape = tuple(int(s) for s in rng.integers(30, 49, 3))
        ref = blobs(rng, shape, values, int(rng.integers(0, 7)))
        pred = perturbed(rng, ref, values)
        zooms = tuple(float(z) for z in rng.choice([0.5, 1.0, 2.0, 3.0], 3)) if index % 2 else (1.0, 1.0, 1.0)
        write_label(pred, tmp_path / "pred.nii.gz", zooms)
        write_label(ref, tmp_path / "ref.nii.gz", zooms)
        ours = lesionwise.case_metrics(pred, ref, task, zooms)
        try:
            assert_matches_official(ours, official_case(task, str(tmp_path / "pred.nii.gz"),
                                                        str(tmp_path / "ref.nii.gz")))
        except AssertionError as error:
            raise AssertionError(f"seed {seed}, {task}, spacing {zooms}: {error}") from None


@pytest.mark.slow  # in CI's second run (pytest -q -m slow), not the default suite
def test_full_size_synthetic_case_matches_the_official_package(tmp_path):
    """One 240 x 240 x 155 post-treatment glioma with a cavity, predicted shifted and with a false positive."""
    _official()
    _, phantom = synth.make_case((240, 240, 155), 11, fluid="cavity")
    ref = synth.scheme_classes(phantom, labels.SCHEMES["gli"])
    pred = cube(ref.shape, (20, 200, 20), 5, 3, out=np.roll(ref, (2, -1, 1), axis=(0, 1, 2)))
    write_label(pred, tmp_path / "pred.nii.gz")
    write_label(ref, tmp_path / "ref.nii.gz")
    assert_matches_official(lesionwise.case_metrics(pred, ref, "gli"),
                            official_case("gli", str(tmp_path / "pred.nii.gz"), str(tmp_path / "ref.nii.gz")))


def test_evaluate_cli_matches_the_official_package_and_parser(tmp_path):
    """`bratskeras evaluate --lesion-wise --json` per case and its summary vs brats-evaluation and its parser."""
    _, metrics_parser, _ = _official()
    synth.write_dataset(tmp_path / "ref", cases=4, shape=(48, 48, 40), task="mets", seed=2)
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "pred")
    official = {"metrics": [], "missings": []}
    for index, folder in enumerate(_case_folders(tmp_path / "ref")):
        ref_path = str(tmp_path / "ref" / folder / f"{folder}-seg.nii.gz")
        if index == 3:  # no prediction: scored as missing
            official["missings"].append(folder)
            continue
        ref_image = nib.load(ref_path)
        ref = np.asarray(ref_image.dataobj)
        pred = perturbed(rng, ref, [1, 2, 3, 4]) if index else np.zeros_like(ref)
        write_label(pred, tmp_path / "pred" / f"{folder}.nii.gz", affine=ref_image.affine)
        official["metrics"].append(official_case("mets", str(tmp_path / "pred" / f"{folder}.nii.gz"), ref_path))
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--lesion-wise",
                                      "--json", "--workers", "2"])
    assert result.exit_code == 1, result.output  # one case missing
    payload = json.loads(result.stdout)
    for row, expected in zip(payload["cases"], official["metrics"]):
        assert_matches_official(row["lesion_wise"], expected)
    with open(tmp_path / "official.json", "w") as stream:
        json.dump(official, stream)
    metrics_parser.parse_seg_results(str(tmp_path / "official.json"), str(tmp_path / "official.csv"))
    import pandas

    table = pandas.read_csv(tmp_path / "official.csv").set_index("subject_id")
    parser_names = {"tp": "all_instance_tp", "fp": "all_instance_fp", "fn": "all_instance_fn",
                    "rq": "all_instance_f1", "sq_dsc": "lesionwise_dsc_mean", "sq_dsc_std": "lesionwise_dsc_std",
                    "sq_hd95": "lesionwise_hd95_mean", "sq_hd95_std": "lesionwise_hd95_std",
                    "sq_nsd": "lesionwise_nsd_mean", "sq_nsd_std": "lesionwise_nsd_std",
                    "global_bin_dsc": "global_dsc", "global_bin_hd95": "global_hd95", "global_bin_nsd": "global_nsd"}
    for group, stats in payload["summary"]["lesion_wise"].items():
        for name, column in parser_names.items():
            for stat in ("mean", "std", "median"):
                assert same(stats[name][stat], float(table.loc[stat, f"{column}_{group}"])), (group, name, stat)


def test_evaluate_counts_a_deleted_metastasis_as_missed(tmp_path):
    """A mets phantom against itself with its smallest lesion (ET and NETC) deleted: one missed ET lesion."""
    synth.write_dataset(tmp_path / "ref", cases=1, shape=(48, 48, 40), task="mets", seed=0)
    folder = _case_folders(tmp_path / "ref")[0]
    ref_image = nib.load(tmp_path / "ref" / folder / f"{folder}-seg.nii.gz")
    ref = np.asarray(ref_image.dataobj)
    n_et = ndimage.label(ref == 3, ndimage.generate_binary_structure(3, 3))[1]
    cores, n_cores = ndimage.label(np.isin(ref, (1, 3)), ndimage.generate_binary_structure(3, 3))
    assert n_et >= 2 and n_cores == n_et
    smallest = 1 + np.argmin(np.bincount(cores.ravel())[1:])
    os.makedirs(tmp_path / "pred")
    write_label(np.where(cores == smallest, 0, ref), tmp_path / "pred" / f"{folder}.nii.gz", affine=ref_image.affine)
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--lesion-wise",
                                      "--task", "mets", "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    et = json.loads(result.stdout)["cases"][0]["lesion_wise"]["et"]
    assert (et["tp"], et["fp"], et["fn"]) == (n_et - 1, 0, 1)
    assert et["sq_dsc"] == 1.0 and et["rq"] == pytest.approx((n_et - 1) / (n_et - 0.5))


def test_lesionwise_csv_and_text(tmp_path):
    synth.write_dataset(tmp_path / "ref", cases=2, shape=(32, 32, 24), task="ped")
    os.makedirs(tmp_path / "pred")
    for folder in _case_folders(tmp_path / "ref"):
        image = nib.load(tmp_path / "ref" / folder / f"{folder}-seg.nii.gz")
        nib.save(image, tmp_path / "pred" / f"{folder}.nii.gz")
    result = evaluation.evaluate(tmp_path / "pred", tmp_path / "ref", lesion_wise=True)
    header = evaluation.rows_to_csv(result.rows).splitlines()[0].split(",")
    assert "cc_pq_dsc" in header and "ed_global_bin_hd95" in header
    assert result.rows[0]["lesion_wise"]["cc"]["sq_dsc"] == 1.0
    text = evaluation.lesionwise_table(result.summary["lesion_wise"])
    assert text.splitlines()[0].split()[1:] == ["et", "netc", "cc", "ed", "tc", "wt"]
    assert any(line.startswith("pq_dsc") for line in text.splitlines())


def _case_folders(root):
    """The case folders synth wrote (not its .bratskeras-synth marker file)."""
    return sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
