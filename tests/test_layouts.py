import os

import nibabel as nib
import numpy as np
import pytest

from bratskeras.core import labels
from bratskeras.core.errors import DataError
from bratskeras.data import layouts, volumes
from bratskeras.synth import phantoms as synth

SHAPE = (20, 20, 16)


@pytest.mark.parametrize("layout, scheme, case_id", [
    ("brats2017", "brats2020", "Brats17_SYN_001_1"),
    ("brats2020", "brats2020", "BraTS20_Training_001"),
    ("brats2021", "brats2020", "BraTS2021_00000"),
    ("brats2023", "brats2023", "BraTS-GLI-00000-000"),
    ("kaggle-h5", "brats2020", "volume_1"),
])
def test_each_layout_is_discovered_and_read(tmp_path, layout, scheme, case_id):
    synth.write_dataset(tmp_path, cases=2, shape=SHAPE, layout=layout, seed=5)
    dataset = layouts.discover(tmp_path)  # root is an ancestor of the case folders
    assert dataset.layout == layout and dataset.label_scheme == scheme
    assert len(dataset.cases) == 2 and dataset.cases[0].id == case_id
    assert set(dataset.cases[0].modalities) == set(layouts.MODALITIES)
    image, seg, properties = volumes.read_case(dataset.cases[0], ("t1ce", "flair"))
    _, expected = synth.make_case(SHAPE, (5, 0))
    assert image.shape == SHAPE + (2,) and image.dtype == np.float32
    assert np.array_equal(seg, expected)  # labels come back as classes 0..3
    assert properties["shape"] == SHAPE and properties["spacing"] == (1.0, 1.0, 1.0)


def test_h5_channel_order_is_configurable(tmp_path):
    synth.write_dataset(tmp_path, cases=1, shape=SHAPE, layout="kaggle-h5")
    default = volumes.read_case(layouts.discover(tmp_path).cases[0], ("flair",))[0]
    swapped = layouts.discover(tmp_path, channel_order=("flair", "t1ce", "t2", "t1"))
    assert np.array_equal(volumes.read_case(swapped.cases[0], ("t1",))[0], default)


def test_brats2020_quirks(tmp_path):
    synth.write_dataset(tmp_path, cases=2, shape=SHAPE, layout="brats2020")
    parent = tmp_path / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    assert (parent / "name_mapping.csv").exists()
    case_dir = parent / "BraTS20_Training_002"
    os.rename(case_dir / "BraTS20_Training_002_seg.nii", case_dir / "W39_1998.09.19_Segm.nii")
    validation = tmp_path / "BraTS20_Validation_001"
    validation.mkdir()
    for m in layouts.MODALITIES:
        os.link(parent / "BraTS20_Training_001" / f"BraTS20_Training_001_{m}.nii",
                validation / f"BraTS20_Validation_001_{m}.nii")
    dataset = layouts.discover(tmp_path)
    assert dataset.case("BraTS20_Training_002").seg.endswith("W39_1998.09.19_Segm.nii")
    unlabelled = dataset.case("BraTS20_Validation_001")
    assert unlabelled.seg is None and not unlabelled.expects_seg
    assert volumes.read_case(unlabelled)[1] is None


def test_layout_override_and_errors(tmp_path):
    with pytest.raises(DataError, match="no BraTS cases"):
        layouts.discover(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        layouts.discover(tmp_path / "absent")
    synth.write_dataset(tmp_path / "a", cases=1, shape=SHAPE, layout="brats2021")
    synth.write_dataset(tmp_path / "b", cases=1, shape=SHAPE, layout="brats2023")
    with pytest.raises(DataError, match="several layouts"):
        layouts.discover(tmp_path)
    assert layouts.discover(tmp_path, layout="brats2023").cases[0].id == "BraTS-GLI-00000-000"


def test_write_label_map_round_trips_on_source_grid(tmp_path):
    synth.write_dataset(tmp_path / "d", cases=1, shape=SHAPE, layout="brats2023")
    case = layouts.discover(tmp_path / "d").cases[0]
    _, seg, properties = volumes.read_case(case)
    out = tmp_path / "pred.nii.gz"
    volumes.write_label_map(labels.classes_to_labels(seg, "brats2023"), properties, out)
    written = nib.load(out)
    source = nib.load(case.seg)
    assert np.allclose(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj))


@pytest.mark.parametrize("scheme", ["brats2020", "brats2023"])
def test_label_scheme_round_trip(scheme):
    classes = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    on_disk = labels.classes_to_labels(classes, scheme)
    assert on_disk.max() == (4 if scheme == "brats2020" else 3)
    assert np.array_equal(labels.labels_to_classes(on_disk, scheme), classes)


@pytest.mark.parametrize("name", [n for n in layouts.NAMES if layouts.LAYOUTS[n].case_pattern is not None])
def test_synth_writes_the_files_the_layout_table_describes(tmp_path, name):
    """One table for discovery and synth: its case folders match the pattern, its files the suffixes."""
    layout = layouts.LAYOUTS[name]
    (folder,) = synth.write_dataset(tmp_path, cases=1, shape=SHAPE, layout=name)
    case_id = os.path.basename(folder)
    assert layout.case_pattern.match(case_id)
    expected = {f"{case_id}{layout.separator}{suffix}{layout.extension}" for suffix in layout.suffixes.values()}
    expected.add(f"{case_id}{layout.separator}seg{layout.extension}")
    assert set(os.listdir(folder)) == expected
    assert layouts.discover(tmp_path).layout == name
