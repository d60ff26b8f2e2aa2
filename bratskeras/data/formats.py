"""The file formats a layout's cases are stored in, each reading and writing a whole case.

Each layouts.LAYOUTS row names its format (`Layout.reader`); discovery,
reading (volumes.read_case), scoring (volumes.read_labels) and synth's
writers (bratskeras.synth.writers) ask the case's format, never the
layout's name:

    NIFTI_FILES  a case folder of NIfTI files: one per modality and one label
                 file, named <case id><separator><suffix><extension>
    H5_SLICES    Kaggle's flat folder of <case id>_slice_<s>.h5 files, one per
                 axial slice: `image` (H, W, 4) in volumes.H5_CHANNEL_ORDER and
                 one-hot `mask` (H, W, 3) in volumes.H5_MASK_CLASSES

Arrays are (D, H, W) = NIfTI voxel axes (i, j, k); images gain a trailing
channel axis. The volume-level reading and checks are bratskeras.data.volumes'.
"""

import os

import numpy as np

from bratskeras.core import labels
from bratskeras.data import volumes
from bratskeras.platform import outputs


class NiftiFiles:
    """A case folder holding one NIfTI file per modality and one label file (every release but Kaggle's H5)."""

    name = "nifti"
    # The files carry an affine: any isotropic voxel size can be written (synth's anatomy heads).
    keeps_voxel_size = True

    @staticmethod
    def source_files(case):
        """The case's modality files, then its label file when it has one."""
        return list(case.modalities.values()) + ([case.seg] if case.seg else [])

    @staticmethod
    def read(case, modalities, with_labels):
        """volumes.read_case of a NIfTI case: (image (D, H, W, C) float32, seg (D, H, W) uint8 or None, properties)."""
        channels, reference = [], None
        for modality in modalities:
            path = case.modalities[modality]
            array, image = volumes.load_nifti(path)
            volumes.raise_first(volumes.volume_problems(path, array))
            if reference is None:
                reference = (path, image)
            volumes.raise_first([volumes.geometry_problem(path, image, *reference)])
            channels.append(array)
        seg = None
        if case.seg and with_labels:
            seg_array, seg_image = volumes.load_nifti(case.seg)
            volumes.raise_first(volumes.volume_problems(case.seg, seg_array, is_label=True))
            volumes.raise_first([volumes.geometry_problem(case.seg, seg_image, *reference)])
            seg = labels.labels_to_classes(seg_array, case.label_scheme, source=case.seg)
        image = reference[1]
        properties = {
            "affine": np.asarray(image.affine, dtype=np.float64),
            "header": image.header,
            "shape": tuple(int(s) for s in image.shape[:3]),
            "spacing": tuple(float(z) for z in image.header.get_zooms()[:3]),
            "files": case.source_files(),
        }
        return np.stack(channels, axis=-1), seg, properties

    @staticmethod
    def read_labels(case):
        """(class map uint8 (D, H, W), nibabel image, spacing (3,) mm) of the case's label file alone."""
        array, image = volumes.load_label_map(case.seg)
        classes = labels.labels_to_classes(array, case.label_scheme, source=case.seg)
        return classes, image, tuple(float(z) for z in image.header.get_zooms()[:3])

    @staticmethod
    def write(folder, naming, case_id, images, classes, scheme, voxel_mm=1.0):
        """Writes one case folder: a file per modality of `scheme` and the label file, as `naming` names them.

        Args:
            folder: the case folder (created).
            naming: a layouts.Layout (its suffixes, separator, label suffix, extension).
            case_id: the case's id, the files' stem.
            images: modality -> int16 (D, H, W).
            classes: uint8 (D, H, W) class indices of `scheme`, written as its label values.
            scheme: a labels.SCHEMES name or LabelScheme.
            voxel_mm: isotropic voxel size the affines carry.

        Returns:
            `folder`.
        """
        os.makedirs(folder, exist_ok=True)
        for modality in labels.get_scheme(scheme).modalities:
            path = os.path.join(folder, naming.file_name(case_id, naming.suffixes[modality]))
            _save_nifti(images[modality], path, voxel_mm)
        label_path = os.path.join(folder, naming.file_name(case_id, naming.label_suffix))
        _save_nifti(labels.classes_to_labels(classes, scheme), label_path, voxel_mm)
        return folder


class H5Slices:
    """Kaggle's BraTS 2020 copy: a flat folder of one H5 file per axial slice of each volume."""

    name = "h5 slices"
    # No affine: slices are 1 mm BraTS voxels by assumption.
    keeps_voxel_size = False

    @staticmethod
    def source_files(case):
        """The case's slice files, by slice index."""
        return list(case.slices)

    @staticmethod
    def read(case, modalities, with_labels):
        """volumes.read_case of a slice-file case: slices stacked along the last spatial axis."""
        volumes.raise_first(volumes.h5_slice_problems(case))
        images, masks = zip(*(volumes.load_h5_slice(p, with_mask=with_labels) for p in case.slices))
        volume = np.stack(images, axis=2)  # (H, W, S, 4): slices become the last spatial axis
        volumes.raise_first(volumes.volume_problems(f"case {case.id}", volume))
        order = [case.channel_order.index(m) for m in modalities]
        seg = volumes.h5_mask_to_classes(np.stack(masks, axis=2), f"case {case.id}") if with_labels else None
        shape = volume.shape[:3]
        properties = {"affine": volumes.brats_affine(shape), "header": None, "shape": tuple(shape),
                      "spacing": (1.0, 1.0, 1.0), "files": list(case.slices)}
        return np.ascontiguousarray(volume[..., order]), seg, properties

    @classmethod
    def read_labels(cls, case):
        """(class map uint8 (D, H, W), None: no image header, spacing (3,) mm); reads the whole slices."""
        _, seg, properties = cls.read(case, labels.get_scheme(case.label_scheme).modalities, True)
        return seg, None, properties["spacing"]

    @staticmethod
    def write(folder, naming, case_id, images, classes, scheme=None, voxel_mm=1.0):
        """Writes <case_id>_slice_<s>.h5 along the last axis, channels in volumes.H5_CHANNEL_ORDER.

        `classes` are the classic class indices (volumes.H5_MASK_CLASSES one-hot);
        `scheme` and `voxel_mm` are not stored (no label values, no affine).
        """
        import h5py

        os.makedirs(folder, exist_ok=True)
        volume = np.stack([images[m] for m in volumes.H5_CHANNEL_ORDER], axis=-1).astype(np.float32)
        mask = np.stack([classes == c for c in volumes.H5_MASK_CLASSES], axis=-1).astype(np.uint8)
        for s in range(volume.shape[2]):
            path = os.path.join(folder, f"{case_id}_slice_{s}{naming.extension}")
            with outputs.names_target(path), h5py.File(path, "w") as handle:
                handle.create_dataset("image", data=volume[:, :, s])
                handle.create_dataset("mask", data=mask[:, :, s])
        return folder


NIFTI_FILES = NiftiFiles()
H5_SLICES = H5Slices()


def _save_nifti(array, path, voxel_mm=1.0):
    """Writes (D, H, W) `array` with BraTS's affine at `voxel_mm` (volumes.brats_affine), units mm."""
    import nibabel as nib

    image = nib.Nifti1Image(array, volumes.brats_affine(array.shape, voxel_mm))
    image.header.set_xyzt_units("mm", "sec")
    with outputs.names_target(path):
        nib.save(image, path)
