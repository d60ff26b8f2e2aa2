"""Fault injection on inputs (issue #24 items 1, 8, 10, 14, 15): what discovery and reading do with them.

Covered: a case id found in two folders (inspect, predict, fit, evaluate,
show), inputs left out or not used (a broken case-folder symlink, a renamed
copy of a case, an empty case folder, NIfTI files in a folder not named like
a case; hidden package leftovers stay unnamed), NIfTI headers claiming more
voxels than volumes.MAX_VOXELS or more data than the file holds, misleading
errors (evaluate on a root of several tasks, fit --skip-bad-cases with every
case bad), Kaggle H5 volumes (image-only slices in predict, missing trailing
slices, one volume in two folders), --learning-rate, and the training
sampler under parallel calls. Volumes are 16^3 and the model a 4-filter
lightweight U-Net saved once per module: no test trains.
"""

import gzip
import os
import shutil
import threading

import h5py
import nibabel as nib
import numpy as np
import pytest
from cli_checks import invoke, one_line_error

from bratskeras.config.train_config import TrainConfig
from bratskeras.core.errors import ConfigError, DataError
from bratskeras.data import inspection, layouts, volumes
from bratskeras.data import pipeline as data
from bratskeras.evaluate import scoring as evaluation
from bratskeras.synth import phantoms as synth

SHAPE = (16, 16, 16)
TINY_FIT = ["--model-arg", "base_filters=4", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--patch-size", "16,16,16", "--precision", "float32", "--quiet"]




def _write(root, cases=2, seed=1, **options):
    """A synthetic brats2021 dataset (or `layout=`/`task=`) of 16^3 cases at `root`; its case folders."""
    return [os.fspath(f) for f in synth.write_dataset(root, cases=cases, shape=SHAPE, seed=seed,
                                                      **{"layout": "brats2021", **options})]


@pytest.fixture()
def duplicated(tmp_path):
    """data/a holds BraTS2021_00000 and _00001, data/b another BraTS2021_00000: (root, the two copies)."""
    root = tmp_path / "data"
    first = _write(root / "a", cases=2, seed=1)[0]
    second = _write(root / "b", cases=1, seed=2)[0]
    return root, (first, second)


# ------------------------------------------------------------------ item 1: duplicate case ids


def test_discovery_names_a_duplicate_case_id_and_uses_no_copy(duplicated):
    root, copies = duplicated
    dataset = layouts.discover(root)
    assert [c.id for c in dataset.cases] == ["BraTS2021_00001"]
    assert len(dataset.duplicates) == 1
    assert "BraTS2021_00000" in dataset.duplicates[0] and all(c in dataset.duplicates[0] for c in copies)
    with pytest.raises(DataError, match="several folders"):
        dataset.refuse_duplicates()


def test_inspect_reports_a_duplicate_case_id_as_a_problem(duplicated):
    root, copies = duplicated
    result = invoke("inspect", root)
    assert result.exit_code == 1, result.output
    assert "1 problem(s)" in result.output
    assert all(c in result.output for c in copies)


def test_predict_refuses_a_duplicate_case_id_before_any_work(duplicated, tiny_model, tmp_path):
    root, copies = duplicated
    out = tmp_path / "out"
    one_line_error(invoke("predict", tiny_model, root, out), "BraTS2021_00000", *copies)
    assert not out.exists()


def test_fit_refuses_a_duplicate_case_id_and_skips_every_copy_when_asked(duplicated, tmp_path):
    root, copies = duplicated
    one_line_error(invoke("fit", root, "--out", tmp_path / "run", *TINY_FIT), "BraTS2021_00000", *copies)
    dataset, report = inspection.inspect_dataset(root)
    cases, lines = inspection.require_clean(dataset, report, skip_bad=True)
    assert [c.id for c in cases] == ["BraTS2021_00001"]
    assert any(all(c in line for c in copies) for line in lines)


def test_evaluate_refuses_to_score_one_prediction_against_two_references(duplicated, tmp_path):
    root, copies = duplicated
    predictions = tmp_path / "pred"
    predictions.mkdir()
    for folder in (copies[0], os.path.join(os.path.dirname(copies[0]), "BraTS2021_00001")):
        name = os.path.basename(folder)
        shutil.copy(os.path.join(folder, f"{name}_seg.nii.gz"), predictions / f"{name}.nii.gz")
    with pytest.raises(DataError, match="BraTS2021_00000"):
        evaluation.evaluate(predictions, root)
    one_line_error(invoke("evaluate", predictions, root), *copies)


def test_one_h5_volume_in_two_folders_is_a_duplicate(tmp_path):
    folder = _write(tmp_path / "a", cases=1, layout="kaggle-h5")[0]
    shutil.copytree(folder, tmp_path / "b")
    dataset = layouts.discover(tmp_path)
    assert dataset.cases == [] and len(dataset.duplicates) == 1
    assert folder in dataset.duplicates[0] and str(tmp_path / "b") in dataset.duplicates[0]


# ------------------------------------------------------------------ item 8: inputs not used are named


@pytest.fixture()
def untidy(tmp_path):
    """Two good cases plus: a broken case-folder symlink, a renamed copy, an empty case folder,
    predictions kept in data/preds, and the package's own hidden leftovers."""
    root = tmp_path / "data"
    folders = _write(root, cases=2, seed=3)
    (root / "BraTS2021_00009").symlink_to(tmp_path / "gone", target_is_directory=True)
    shutil.copytree(folders[1], root / "BraTS2021_00001 (copy)")
    (root / "BraTS2021_00007").mkdir()
    (root / "preds").mkdir()
    shutil.copy(os.path.join(folders[0], "BraTS2021_00000_seg.nii.gz"), root / "preds" / "BraTS2021_00000.nii.gz")
    (root / ".bratskeras_cache").mkdir()
    shutil.copy(os.path.join(folders[0], "BraTS2021_00000_t1.nii.gz"), root / ".bratskeras_cache" / "x_t1.nii.gz")
    shutil.copy(os.path.join(folders[0], "BraTS2021_00000_t1.nii.gz"),
                os.path.join(folders[0], ".tmp-1-ab12cd34-BraTS2021_00000_t1.nii.gz"))
    problems = {"broken": root / "BraTS2021_00009", "copy": root / "BraTS2021_00001 (copy)",
                "empty": root / "BraTS2021_00007"}
    return root, problems, root / "preds"


def test_discovery_names_every_input_it_does_not_use(untidy):
    root, problems, preds = untidy
    dataset = layouts.discover(root)
    assert [c.id for c in dataset.cases] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert dataset.cases[0].extra_files == []  # the hidden .tmp-* leftover is not an input
    for path in problems.values():
        assert sum(str(path) in line for line in dataset.skipped) == 1, (path, dataset.skipped)
    assert len(dataset.skipped) == 3
    assert len(dataset.ignored) == 1 and str(preds) in dataset.ignored[0] and "not read" in dataset.ignored[0]
    assert not any(".bratskeras_cache" in line for line in dataset.skipped + dataset.ignored)


def test_inspect_lists_inputs_left_out_as_problems_and_ignored_ones_by_name(untidy):
    root, problems, preds = untidy
    result = invoke("inspect", root)
    assert result.exit_code == 1, result.output
    assert "3 problem(s), 0 warning(s), 1 input(s) ignored" in result.output
    assert "broken symlink" in result.output and "without NIfTI files" in result.output
    assert "renamed copy" in result.output
    assert f"ignored: {preds}" in result.output


def test_predictions_beside_the_data_are_ignored_by_name_not_a_problem(tmp_path):
    root = tmp_path / "data"
    folder = _write(root, cases=1)[0]
    (root / "preds").mkdir()
    shutil.copy(os.path.join(folder, "BraTS2021_00000_seg.nii.gz"), root / "preds" / "BraTS2021_00000.nii.gz")
    result = invoke("inspect", root)
    assert result.exit_code == 0, result.output
    assert f"ignored: {root / 'preds'}" in result.output


def test_predict_names_the_inputs_it_leaves_out_and_predicts_the_rest(untidy, tiny_model, tmp_path):
    root, problems, preds = untidy
    out = tmp_path / "out"
    result = invoke("predict", tiny_model, root, out)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    for path in [*problems.values(), preds]:
        assert str(path) in result.output
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["BraTS2021_00000.nii.gz", "BraTS2021_00001.nii.gz"]


def test_fit_gets_the_ignored_inputs_with_the_skipped_problems(untidy):
    root, problems, preds = untidy
    dataset, report = inspection.inspect_dataset(root)
    with pytest.raises(DataError, match="3 input"):
        inspection.require_clean(dataset, report)
    _, lines = inspection.require_clean(dataset, report, skip_bad=True)
    assert len(lines) == 4 and str(preds) in lines[-1]


# ------------------------------------------------------------------ item 10: header sizes


def _huge_header(reference, path, shape=(32767, 32767, 32767)):
    """Writes at `path` a gzipped NIfTI holding only a header (copied from `reference`) that claims `shape`."""
    header = nib.load(reference).header.copy()
    header.set_data_shape(shape)
    with gzip.open(path, "wb") as stream:
        header.write_to(stream)


def test_a_header_claiming_too_many_voxels_is_refused_before_reading(tmp_path):
    folder = _write(tmp_path / "data", cases=1)[0]
    flair = os.path.join(folder, "BraTS2021_00000_flair.nii.gz")
    _huge_header(flair, flair)
    assert os.path.getsize(flair) < 200
    with pytest.raises(DataError, match="32767x32767x32767"):
        volumes.load_nifti(flair)
    wide = tmp_path / "wide.nii.gz"  # 1024 x 1024 x 512: once 1.1 GB allocated by inspect before failing
    _huge_header(flair.replace("flair", "t1"), wide, (1024, 1024, 512))
    with pytest.raises(DataError, match="1024x1024x512 voxels, more than"):
        volumes.load_label_map(wide)
    result = invoke("inspect", tmp_path / "data")
    assert result.exit_code == 1 and "Traceback" not in result.output and "MemoryError" not in result.output
    assert f"{flair}: header claims 32767x32767x32767 voxels" in result.output


def test_a_truncated_uncompressed_nifti_names_its_sizes(tmp_path):
    image = nib.Nifti1Image(np.ones((8, 8, 8), np.int16), np.eye(4))
    path = tmp_path / "short.nii"
    nib.save(image, path)
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) - 100)
    with pytest.raises(DataError, match="short.nii: holds .* bytes.*needs"):
        volumes.load_label_map(path)


def test_predict_fails_the_case_with_a_huge_header_and_goes_on(tmp_path, tiny_model):
    folders = _write(tmp_path / "data", cases=2)
    flair = os.path.join(folders[0], "BraTS2021_00000_flair.nii.gz")
    _huge_header(flair, flair)
    out = tmp_path / "out"
    result = invoke("predict", tiny_model, tmp_path / "data", out)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "1/2 case(s) written" in result.output
    assert f"error: {flair}: header claims" in result.output
    assert [p.name for p in out.glob("*.nii.gz")] == ["BraTS2021_00001.nii.gz"]


# ------------------------------------------------------------------ item 14: errors that say what is wrong


def test_evaluate_on_a_root_of_several_tasks_names_them_and_their_folders(tmp_path):
    _write(tmp_path / "ref" / "a", cases=1, layout="brats2023", task="mets")
    _write(tmp_path / "ref" / "b", cases=1, layout="brats2023", task="ped")
    (tmp_path / "pred").mkdir()
    with pytest.raises(DataError, match="several tasks") as error:
        evaluation.evaluate(tmp_path / "pred", tmp_path / "ref")
    assert str(tmp_path / "ref" / "a") in str(error.value) and "--task" in str(error.value)
    one_line_error(invoke("evaluate", tmp_path / "pred", tmp_path / "ref"), "several tasks",
                    tmp_path / "ref" / "b")


def test_fit_skip_bad_cases_with_every_case_bad_names_them(tmp_path):
    folders = _write(tmp_path / "data", cases=2)
    for folder in folders:
        case_id = os.path.basename(folder)
        os.remove(os.path.join(folder, f"{case_id}_t1ce.nii.gz"))
    line = one_line_error(invoke("fit", tmp_path / "data", "--skip-bad-cases", "--out", tmp_path / "run",
                                   *TINY_FIT), "all 2 case(s) have problems", "BraTS2021_00000", "BraTS2021_00001")
    assert "t1ce" in line


# ------------------------------------------------------------------ item 15: H5 slices, learning rate, sampler


def test_predict_reads_no_h5_mask(tmp_path, tiny_model):
    folder = _write(tmp_path / "data", cases=1, layout="kaggle-h5")[0]
    for name in os.listdir(folder):
        with h5py.File(os.path.join(folder, name), "a") as handle:
            del handle["mask"]
    result = invoke("predict", tiny_model, tmp_path / "data", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "volume_1.nii.gz").exists()


def test_missing_trailing_h5_slices_are_a_named_problem(tmp_path):
    folder = _write(tmp_path / "data", cases=2, layout="kaggle-h5")[0]
    for index in (13, 14, 15):
        os.remove(os.path.join(folder, f"volume_2_slice_{index}.h5"))
    dataset, report = inspection.inspect_dataset(tmp_path / "data")
    assert report.cases[0].problems == []
    assert report.cases[1].problems == ["case volume_2: missing slices [13, 14, 15] "
                                        "(3 of the 16 slices the dataset's volumes have)"]
    with pytest.raises(DataError, match="volume_2: missing slices"):
        volumes.read_case(dataset.case("volume_2"))


@pytest.mark.parametrize("rate", [-1.0, 0.0, float("nan"), float("inf")])
def test_learning_rate_must_be_positive_and_finite(rate):
    with pytest.raises(ConfigError, match="--learning-rate"):
        TrainConfig(learning_rate=rate)


def test_fit_refuses_a_negative_learning_rate_in_one_line(tmp_path):
    _write(tmp_path / "data", cases=2)
    one_line_error(invoke("fit", tmp_path / "data", "--out", tmp_path / "run", "--learning-rate", "-1", *TINY_FIT),
                    "--learning-rate", "-1")


class _FakeCached:
    def load(self):
        return np.zeros(SHAPE + (1,), np.float32), np.zeros(SHAPE, np.uint8), np.zeros((0, 3), np.int64)


def _sampler(n=5, seed=7):
    return data._TrainSampler([_FakeCached() for _ in range(n)], data.PipelineConfig(patch_size=SHAPE, seed=seed))


def _expected_case(index, n=5, seed=7):
    rounds, position = divmod(index, n)
    return int(np.random.default_rng([seed, rounds]).permutation(n)[position])


def test_sampler_survives_a_call_from_another_round_between_its_check_and_its_read():
    """The interleaving that raced under tf.data's parallel map, replayed in one thread.

    Another round's call runs between this call's "is my round's order there?"
    and its read of it; a sampler sharing a "latest order" dict lost the order
    (KeyError at a round boundary).
    """
    sampler = _sampler()
    n = 5

    class Interleaving(dict):
        entered = False

        def __contains__(self, key):
            if not Interleaving.entered:
                Interleaving.entered = True
                sampler.case_index(n + 1)  # an element of the next round, from "another thread"
            return super().__contains__(key)

    sampler.orders = Interleaving({0: np.random.default_rng([7, 0]).permutation(n)})
    assert sampler.case_index(2) == _expected_case(2)


def test_sampler_order_is_reproducible_across_threads_and_rounds():
    sampler = _sampler()
    indices = list(range(40))
    results = {}
    barrier = threading.Barrier(4)

    def work(offset):
        barrier.wait()
        for index in indices[offset::4][::-1] + indices[offset::4]:
            results.setdefault(index, set()).add(int(sampler.case_index(index)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {i: v for i, v in results.items()} == {i: {_expected_case(i)} for i in indices}
