
import numpy as np
import pytest
from scipy import ndimage

from bratskeras.core.errors import OutputExistsError
from bratskeras.data import layouts
from bratskeras.synth import phantoms as synth

LESIONS = ndimage.generate_binary_structure(3, 3)  # 26-connectivity, as lesion-wise scoring counts lesions


def test_make_case_is_deterministic_per_seed():
    a_images, a_classes = synth.make_case((24, 24, 20), seed=(0, 1))
    b_images, b_classes = synth.make_case((24, 24, 20), seed=(0, 1))
    c_images, _ = synth.make_case((24, 24, 20), seed=(0, 2))
    assert np.array_equal(a_classes, b_classes)
    assert all(np.array_equal(a_images[m], b_images[m]) for m in layouts.MODALITIES)
    assert not np.array_equal(a_images["flair"], c_images["flair"])


def test_tumor_contrasts_follow_real_mri():
    images, classes = synth.make_case((48, 48, 40), seed=3)
    assert set(np.unique(classes)) == {0, 1, 2, 3}
    brain = images["t1"] > 0
    mean = {m: {k: images[m][(classes == k) & brain].mean() for k in range(4)} for m in layouts.MODALITIES}
    assert mean["t1ce"][3] > 1.3 * mean["t1ce"][0]  # ET bright on T1ce
    assert mean["t1ce"][1] < mean["t1ce"][0]  # necrosis dark on T1ce
    assert mean["flair"][2] > 1.3 * mean["flair"][0]  # edema bright on FLAIR
    assert mean["t2"][2] > mean["t2"][0] * 0.95  # edema bright on T2
    assert images["t1"].dtype == np.int16 and images["t1"][~brain].max() == 0


def test_write_refuses_non_empty_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        synth.write_dataset(tmp_path, cases=1, shape=(16, 16, 16))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]



def test_metastasis_cases_have_several_lesions_of_varied_size():
    counts, sizes, cores, cavities = [], [], 0, 0
    for index in range(8):
        images, classes = synth.task_phantom(synth.DEFAULT_SHAPE, (0, index), "mets")
        assert set(np.unique(classes)) <= {0, 1, 2, 3, 4} and (classes[images["t1"] == 0] == 0).all()
        lesions, count = ndimage.label(classes == 3, LESIONS)
        counts.append(count)
        sizes += np.bincount(lesions.ravel())[1:].tolist()
        cores += ndimage.label(classes == 1, LESIONS)[1]
        cavities += bool((classes == 4).any())
        if not (classes == 4).any():  # rims never touch and every core has one (a cavity may cut a rim)
            assert ndimage.label(np.isin(classes, (1, 3)), LESIONS)[1] == count
    assert min(counts) >= 1 and max(counts) <= 6 and sum(c > 1 for c in counts) >= 6
    assert max(sizes) > 20 * min(sizes)  # a large first lesion beside small ones
    assert 0 < cores < sum(counts)  # rims around a necrotic core, and solid nodules
    assert 0 < cavities < 8  # a resection cavity in some cases only


def test_metastasis_cases_are_deterministic_per_seed():
    a_images, a_classes = synth.task_phantom((32, 32, 24), (4, 1), "mets")
    b_images, b_classes = synth.task_phantom((32, 32, 24), (4, 1), "mets")
    _, c_classes = synth.task_phantom((32, 32, 24), (4, 2), "mets")
    assert np.array_equal(a_classes, b_classes) and not np.array_equal(a_classes, c_classes)
    assert all(np.array_equal(a_images[m], b_images[m]) for m in layouts.MODALITIES)


def test_metastasis_counts_scale_with_the_grid():
    assert [synth._most_metastases(s) for s in ((28, 28, 20), (64, 64, 48), (240, 240, 155))] == [3, 6, 10]
    with pytest.raises(ValueError, match="unknown tumor kind"):
        synth.make_case((16, 16, 16), tumor="lymphoma")
