"""Synthetic BraTS-like phantoms written in the real on-disk layouts.

Two kinds (`write_dataset(kind=...)`, `bratskeras synth --kind`): "simple",
this module's geometric phantoms described below (fast, used by the unit
tests), and "anatomy", heads on the MNI152 brain template with realistic
tissue contrasts and scanner variation (bratskeras.synth.anatomy; the demo's).

Each case is a skull-stripped head: white matter inside grey matter inside a
CSF rim, plus two ventricles, and one tumor made of a necrotic core (NCR),
an enhancing rim (ET) and surrounding edema (ED), with irregular borders,
random size and position. For the 2023-2025 tasks (`task`) a fluid-filled
structure joins it where the task's scheme has one: a resection cavity (RC;
gli) carved into the tumor, or a cyst (CC; ped) inside it; MEN-RT cases
get T1c alone and their GTV is the tumor core (NCR + ET). Labels are
written in the task's own values (labels.SCHEMES).

Metastasis cases (mets; `_TUMOR_OF` gives a task's tumor kind of TUMORS)
have several lesions instead, as BraTS-MET cases do: 1 to 6 at 64x64x48
(up to 10 on finer grids), enhancing-lesion diameters drawn log-uniformly
from 10-40 mm for the first and 3-20 mm for the others (relative to a
~145 mm brain; never below 1.5 voxels in radius), each an enhancing rim
around a necrotic core (most lesions of 10 mm or more) or a solid enhancing
nodule, in its own edema halo. Halos may merge; rims never touch, so each
lesion is its own 26-connected ET component. 30 % of the cases have a
resection cavity in the first lesion.

Tissue contrasts follow real MRI: ET is bright on T1ce, necrosis dark on
T1ce and bright on T2, edema bright on FLAIR and T2, CSF dark on FLAIR and
bright on T2. A smooth multiplicative bias field and noise are added, then
each modality is scaled to int16. Everything is deterministic per seed:
case `i` of a dataset uses seed (seed, i).

Arrays are (D, H, W) = NIfTI axes (i, j, k); the affine is BraTS's
diag(-1, -1, 1) at 1 mm (volumes.brats_affine).
"""

import contextlib
import csv
import json
import os
import shutil

import numpy as np
from scipy import ndimage

from bratskeras.core import labels
from bratskeras.core.errors import OutputExistsError
from bratskeras.data import layouts, volumes
from bratskeras.platform import claims, outputs

SYNTH_LAYOUTS = layouts.NAMES
DEFAULT_SHAPE = (64, 64, 48)
# "simple": the geometric phantoms of this module (fast, no extra package);
# "anatomy": bratskeras.synth.anatomy's cases on the MNI152 template (the `anatomy` extra).
# "synthseg": bratskeras.synth.synthseg's domain-randomised heads on the same template (the pretrained models' data).
KINDS = ("simple", "anatomy", "synthseg")
# Written last into every dataset synth writes: a JSON manifest of its files
# ({"written_by": "bratskeras synth", "files": [relative paths]}). --overwrite
# replaces only a folder whose files are all listed in it.
SYNTH_MARKER = ".bratskeras-synth"
# What bratskeras itself adds to a dataset later: the preprocessing cache (fit's default --cache-dir).
_DERIVED = {".bratskeras_cache"}

# Mean intensity of each tissue per modality, on a 0..1 scale.
# Tissue order: CSF, GM, WM, NCR, ED, ET, fluid (cavity or cyst: like CSF).
_TISSUES = ("csf", "gm", "wm", "ncr", "ed", "et", "fluid")
_CONTRAST = {
    "flair": (0.10, 0.55, 0.45, 0.50, 0.95, 0.70, 0.12),
    "t1": (0.25, 0.55, 0.75, 0.30, 0.45, 0.55, 0.22),
    "t1ce": (0.25, 0.55, 0.75, 0.15, 0.45, 1.00, 0.22),
    "t2": (1.00, 0.60, 0.40, 0.90, 0.85, 0.65, 1.00),
}
# Phantom structures (make_case's classes: 1 NCR, 2 ED, 3 ET, 4 fluid) that
# make up each class name of labels.SCHEMES; a structure a scheme does not
# name is background there (MEN-RT's edema).
_STRUCTURES_OF = {"NCR": (1,), "NETC": (1,), "ED": (2,), "SNFH": (2,), "ET": (3,),
                  "RC": (4,), "CC": (4,), "GTV": (1, 3)}
_FLUID = {"RC": "cavity", "CC": "cyst"}
# Tumor kind of a task's phantoms by scheme name (TUMORS); a scheme not named
# here gets one glioma-like tumor.
_TUMOR_OF = {"mets": "metastases"}

# Metastases (_metastases). The phantom's brain spans about 1.7 grid units
# on every axis whatever the shape, a real brain about 145 mm: one grid unit
# stands for about 85 mm, so a lesion keeps its real size relative to the brain.
_MM_PER_UNIT = 85.0
# Enhancing-lesion diameters, drawn log-uniformly (most lesions are small):
# the first lesion, the one that brought the patient in, and the others.
_FIRST_DIAMETER_MM = (10.0, 40.0)
_OTHER_DIAMETER_MM = (3.0, 20.0)
# Coarse grids cannot show a 3 mm lesion: no radius falls below this.
_MIN_RADIUS_VOXELS = 1.5
# Small metastases are solid nodules; larger ones mostly have a necrotic core.
_CORE_MIN_DIAMETER_MM = 10.0
_CORE_PROBABILITY = 0.75
# Cases with a resection cavity (RC) among the metastasis phantoms.
_CAVITY_FRACTION = 0.3


def make_case(shape=DEFAULT_SHAPE, seed=0, fluid=None, tumor="glioma"):
    """Generates one phantom.

    Args:
        shape: (D, H, W) voxels.
        seed: int or sequence of ints for numpy's default_rng.
        fluid: None, "cavity" (a resection cavity carved into the tumor's
            core and rim) or "cyst" (a cyst inside the tumor); without it the
            phantom is the same as before fluids existed, draw for draw.
        tumor: a key of TUMORS: "glioma" (one tumor) or "metastases"
            (several lesions; a cavity in some cases only).

    Returns:
        images: dict modality -> int16 (D, H, W), background exactly 0.
        classes: uint8 (D, H, W) class indices (0 bg, 1 NCR, 2 ED, 3 ET, 4 fluid).
    """
    if tumor not in TUMORS:
        raise ValueError(f"unknown tumor kind {tumor!r}; expected one of {', '.join(TUMORS)}")
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    tissue, brain = _anatomy(grid, rng)
    classes = TUMORS[tumor](grid, brain, rng, fluid)
    tissue = np.where(classes > 0, classes + 2, tissue)  # NCR/ED/ET/fluid -> tissue 3/4/5/6
    bias = _bias_field(grid, rng)
    images = {}
    for modality, means in _CONTRAST.items():
        volume = np.asarray(means, dtype=np.float32)[tissue]
        # Partial-volume blur so borders are not single-voxel steps.
        volume = ndimage.gaussian_filter(volume, sigma=0.7, mode="constant")
        volume = volume * bias + rng.normal(0.0, 0.035, size=shape).astype(np.float32)
        scale = rng.uniform(600, 1400)
        volume = np.clip(volume * scale, 1, 32767) * brain
        images[modality] = volume.astype(np.int16)
    return images, classes


def task_phantom(shape, seed, scheme):
    """make_case as a task writes it: the fluid its scheme names (_FLUID), its tumor kind (_TUMOR_OF).

    Args:
        shape, seed: as make_case.
        scheme: a labels.SCHEMES name or LabelScheme.

    Returns:
        make_case's (images, classes); classes in make_case's indices
        (scheme_classes converts them to the scheme's).
    """
    scheme = labels.get_scheme(scheme)
    fluid = next((_FLUID[name] for name in scheme.names if name in _FLUID), None)
    return make_case(shape, seed, fluid=fluid, tumor=_TUMOR_OF.get(scheme.name, "glioma"))


def _grid(shape):
    """Open grid of coordinates in [-1, 1] per axis (broadcastable to `shape`)."""
    return np.ogrid[tuple(slice(-1.0, 1.0, complex(0, n)) for n in shape)]


def _radius(grid, centre, radii):
    """Ellipsoidal normalised radius: 1 on the ellipsoid surface."""
    return np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)))


def _anatomy(grid, rng):
    """Tissue indices (0 CSF, 1 GM, 2 WM) and the brain mask, both (D, H, W)."""
    radii = rng.uniform(0.78, 0.92, size=3)
    r = _radius(grid, rng.uniform(-0.04, 0.04, size=3), radii)
    # Folding: the GM/WM border wobbles like gyri.
    folds = 0.05 * np.sin(14 * grid[0] + rng.uniform(0, 6)) * np.cos(12 * grid[1] + rng.uniform(0, 6))
    tissue = np.where(r < 0.70 + folds, 2, np.where(r < 0.93, 1, 0)).astype(np.uint8)
    for side in (-1, 1):
        centre = (side * rng.uniform(0.10, 0.16), rng.uniform(-0.1, 0.05), rng.uniform(-0.05, 0.1))
        ventricle = _radius(grid, centre, (0.07, 0.25, 0.12) * rng.uniform(0.8, 1.2, size=3)) < 1
        tissue[ventricle] = 0
    return tissue, (r < 1.0).astype(np.float32)


def _tumor(grid, brain, rng):
    """Class indices (D, H, W) of one tumor (NCR core, ET rim, ED halo) inside the brain."""
    centre = rng.uniform(-0.4, 0.4, size=3)
    size = rng.uniform(0.18, 0.32)
    r = _radius(grid, centre, size * rng.uniform(0.8, 1.2, size=3))
    # Irregular borders: a few low-frequency waves along random directions.
    for _ in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        projection = sum(d * g for d, g in zip(direction, grid))
        r = r * (1 + 0.12 * np.sin(rng.uniform(4, 9) * projection + rng.uniform(0, 6)))
    core_fraction = rng.uniform(0.55, 0.75)
    edema_extent = rng.uniform(1.5, 2.1)
    classes = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), dtype=np.uint8)
    classes[r < edema_extent] = 2
    classes[r < 1.0] = 3
    classes[r < core_fraction] = 1
    classes[brain == 0] = 0
    return classes


def _glioma(grid, brain, rng, fluid):
    """One tumor (_tumor), with its cavity or cyst (_add_fluid) when `fluid` names one; (D, H, W) classes."""
    classes = _tumor(grid, brain, rng)
    if fluid is not None:
        classes = _add_fluid(grid, classes, brain > 0, rng, fluid)
    return classes


def _metastases(grid, brain, rng, fluid):
    """Class indices (D, H, W) of 1 to _most_metastases(brain.shape) metastases inside the brain.

    grid is _grid's open grid, brain the float (D, H, W) brain mask, fluid
    None or "cavity".

    Each lesion is an enhancing rim around a necrotic core (most lesions of
    at least _CORE_MIN_DIAMETER_MM) or a solid enhancing nodule, with its own
    edema halo. Halos of neighbours may merge; rims and cores never touch
    (at least two voxels apart), so every lesion is its own 26-connected ET
    component, as lesion-wise scoring counts them. The first lesion is the
    large one (_FIRST_DIAMETER_MM); with fluid="cavity", _CAVITY_FRACTION of
    the cases had it resected. A lesion that finds no free place is dropped.
    """
    shape = brain.shape
    spacing = 2.0 / np.maximum(np.asarray(shape) - 1, 1)  # grid units per voxel, per axis
    # Grid-unit depth inside the brain, on every `step`-th voxel (a full-size
    # grid's transform would take seconds), less what the coarse grid may miss:
    # a lesion's centre lies deeper than its reach.
    step = max(1, min(shape) // 48)
    depth = ndimage.distance_transform_edt(brain[::step, ::step, ::step] > 0, sampling=step * spacing)
    depth -= (step - 1) * np.linalg.norm(spacing)
    gap = 2 * spacing.max()
    classes = np.zeros(shape, dtype=np.uint8)
    placed, first_lesion = [], None
    for index in range(int(rng.integers(1, _most_metastases(shape) + 1))):
        low, high = _FIRST_DIAMETER_MM if index == 0 else _OTHER_DIAMETER_MM
        diameter = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        radii = np.maximum(diameter / 2 / _MM_PER_UNIT * rng.uniform(0.85, 1.15, size=3),
                           _MIN_RADIUS_VOXELS * spacing)
        # Two border waves of +-8 % shrink r to 0.92^2 = 0.85 at least: the
        # lesion (r < 1) lies within 1 / 0.85 = 1.18 of its largest radius.
        reach = 1.2 * radii.max()
        centre = _free_centre(depth, step * spacing, reach, placed, gap, rng)
        if centre is None:
            continue
        placed.append((centre, reach))
        # Core radius as a fraction of the lesion's; 0: a solid nodule. The
        # rim keeps at least one voxel, else the core would show as a hole.
        has_core = diameter >= _CORE_MIN_DIAMETER_MM and rng.random() < _CORE_PROBABILITY
        core = min(rng.uniform(0.35, 0.7), 1 - 1 / (radii / spacing).min()) if has_core else 0.0
        core = core if core >= 0.25 else 0.0
        edema = rng.uniform(1.3, 2.5)
        # Only the voxels the halo can reach: ten lesions over a full-size grid would take seconds.
        box = tuple(slice(max(int(np.floor((c - edema * reach + 1) / s)), 0),
                          int(np.ceil((c + edema * reach + 1) / s)) + 1) for c, s in zip(centre, spacing))
        r = _lesion_radius(tuple(g[_along(axis, box[axis])] for axis, g in enumerate(grid)), centre, radii, rng)
        view = classes[box]
        view[(r < edema) & (view == 0)] = 2  # edema does not cover a neighbour's rim or core
        view[r < 1.0] = 3
        view[r < core] = 1
        if first_lesion is None:
            first_lesion = np.zeros(shape, dtype=bool)
            first_lesion[box] = r < 1.0
    classes[brain == 0] = 0
    if fluid is not None and first_lesion is not None and rng.random() < _CAVITY_FRACTION:
        # Carved into the first lesion only: _add_fluid sizes the cavity by the tumor it is given.
        carved = _add_fluid(grid, np.where(first_lesion, classes, 0), brain > 0, rng, fluid)
        classes[carved == 4] = 4
    return classes


def _most_metastases(shape):
    """Most lesions per case: 6 at 64x64x48, 10 at BraTS' 240x240x155, fewer on coarser grids (lesions fill them)."""
    return int(np.clip(round(np.cbrt(np.prod(shape)) / 9.5), 1, 10))


def _free_centre(depth, spacing, reach, placed, gap, rng, tries=30):
    """A lesion centre (3,) in grid units, on a voxel of `depth` (its voxel size `spacing`), or None.

    The centre lies at least `reach` inside the brain and `gap` beyond the
    reach of every lesion in `placed` ((centre, reach) pairs).
    """
    inside = np.flatnonzero(depth > reach)
    for _ in range(tries if inside.size else 0):
        centre = np.asarray(np.unravel_index(inside[rng.integers(inside.size)], depth.shape)) * spacing - 1.0
        if all(np.linalg.norm(centre - other) > reach + other_reach + gap for other, other_reach in placed):
            return centre
    return None


def _along(axis, item):
    """Index of an open-grid array (np.ogrid) that applies `item` to `axis` only."""
    return tuple(item if a == axis else slice(None) for a in range(3))


def _lesion_radius(grid, centre, radii, rng):
    """Normalised radius (1 on the lesion's border) over `grid`, with two low-frequency border waves."""
    r = _radius(grid, centre, radii)
    for _ in range(2):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        # In the lesion's own units, so small and large lesions get the same few bumps.
        projection = sum(d * (g - c) / rad for d, g, c, rad in zip(direction, grid, centre, radii))
        r = r * (1 + 0.08 * np.sin(rng.uniform(1.5, 3.5) * projection + rng.uniform(0, 6)))
    return r


def _add_fluid(grid, classes, brain, rng, fluid):
    """Adds class 4: a cavity around a random voxel of the tumor core (surgery removed part of it) or a cyst inside."""
    tumor = np.argwhere(np.isin(classes, (1, 3)))
    if tumor.size == 0:
        return classes
    shape = classes.shape
    centre_voxel = tumor[rng.integers(len(tumor))] if fluid == "cavity" else tumor.mean(axis=0)
    centre = [2.0 * c / max(n - 1, 1) - 1.0 for c, n in zip(centre_voxel, shape)]
    extent = (tumor.max(axis=0) - tumor.min(axis=0) + 1) / np.asarray(shape)
    radii = np.maximum(extent * rng.uniform(0.35, 0.55, size=3), 2.5 / np.asarray(shape))
    inside = _radius(grid, centre, radii) < 1
    # A cyst lies within the lesion; a cavity may reach past it, but stays beside it.
    reach = classes > 0 if fluid == "cyst" else ndimage.binary_dilation(classes > 0, iterations=2) & brain
    classes = classes.copy()
    classes[inside & reach] = 4
    return classes


def _bias_field(grid, rng):
    """Smooth multiplicative field, about +-15 %, (D, H, W) float32."""
    x, y, z = grid
    a = rng.uniform(-0.15, 0.15, size=4)
    return np.exp(a[0] * x + a[1] * y + a[2] * z + a[3] * x * y).astype(np.float32)


# make_case's tumor kinds: tumor(grid, brain, rng, fluid) -> classes (D, H, W).
TUMORS = {"glioma": _glioma, "metastases": _metastases}


# --------------------------------------------------------------------------- writing


def write_dataset(out_dir, cases=4, shape=DEFAULT_SHAPE, layout="brats2020", seed=0, overwrite=False,
                  task=None, kind="simple", settings="default", voxel_mm=1.0):
    """Writes `cases` phantoms to `out_dir` in a release's on-disk layout.

    Args:
        out_dir: target folder; must be absent or empty unless `overwrite`.
        cases: number of cases.
        shape: (D, H, W) voxels per case.
        layout: one of SYNTH_LAYOUTS (brats2017 also stands for 2018/2019).
        seed: dataset seed; case i uses (seed, i).
        overwrite: replace the dataset synth wrote in `out_dir` before, whole
            (its SYNTH_MARKER manifest lists every file in it; a folder with
            other files is refused).
        task: a 2023-2025 task (labels.TASKS): the brats2023 layout with that
            task's case folders, modalities and label values (see `task_case_id`).
        kind: one of KINDS; "anatomy" and "synthseg" need nilearn (see
            bratskeras.synth.anatomy) and take `shape` in voxels of `voxel_mm`
            (anatomy.grid_shape: whole heads).
        settings: the anatomy generator's ranges, a name of anatomy.SETTINGS
            ("default" for training, "heldout" for other ranges) or an
            anatomy.AnatomySettings; for "synthseg" a synthseg.GENERATORS name
            or a tuple of its transforms; ignored for "simple".
        voxel_mm: isotropic voxel size of anatomy and synthseg heads (1: BraTS's grid; 3:
            the demo's cheaper training heads, `shape` anatomy.grid_shape(3)).
            The NIfTI affines carry it. Anatomy in a NIfTI layout only.

    Returns:
        The list of written case folder paths (kaggle-h5: the slice folder).

    Raises:
        OutputExistsError: `out_dir` is not empty and `overwrite` is False.
    """
    if task is not None:
        if task not in labels.TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(labels.TASKS)}")
        if layout not in ("brats2023", "brats2020"):
            raise ValueError(f"a task is written in the brats2023 layout, not {layout}")
        layout = "brats2023"
    if layout not in SYNTH_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(SYNTH_LAYOUTS)}")
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if voxel_mm != 1.0 and (kind == "simple" or layout == "kaggle-h5"):
        raise ValueError(f"a voxel size other than 1 mm is for anatomy heads in a NIfTI layout, not {kind} / {layout}")
    make = _case_maker(kind, settings, task, voxel_mm)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    out_dir = os.fspath(out_dir)
    # One writer at a time; the dataset is built beside out_dir and swapped in complete, so a kill or a full
    # disk leaves out_dir as it was, and --overwrite replaces the whole earlier dataset, never merges into it.
    with claims.claim_folder(out_dir, "synth"):
        _check_out_dir(out_dir, overwrite)
        staging = claims.staging_folder(out_dir)
        try:
            with _names_final_paths(staging, out_dir):
                folders = _write_cases(staging, cases, shape, layout, seed, task, make, voxel_mm)
                _write_manifest(staging)
            claims.publish_folder(staging, out_dir, last=SYNTH_MARKER)
        finally:
            if os.path.lexists(staging):
                shutil.rmtree(staging, ignore_errors=True)
    return [os.path.join(out_dir, os.path.relpath(folder, staging)) for folder in folders]


def _write_cases(out_dir, cases, shape, layout, seed, task, make, voxel_mm):
    """Writes every case into `out_dir` (the staging folder); returns their folders."""
    if task is not None:
        return [_write_task_case(out_dir, index, shape, (seed, index), labels.get_scheme(task))
                for index in range(cases)]
    writer = _WRITERS[layout]
    extra = {"voxel_mm": voxel_mm} if voxel_mm != 1.0 else {}
    return [writer(out_dir, index, *make(shape, (seed, index)), **extra) for index in range(cases)]


def _dataset_files(root):
    """Relative paths of the files under `root`, bratskeras' own bookkeeping (claim, marker, cache) aside."""
    found = []
    for parent, folders, files in os.walk(root):
        if parent == root:
            folders[:] = [f for f in folders if f not in _DERIVED]
            files = [f for f in files if f not in (SYNTH_MARKER, claims.CLAIM_FILE)]
        found += [os.path.relpath(os.path.join(parent, name), root) for name in files]
    return sorted(found)


def _write_manifest(root):
    """Writes SYNTH_MARKER, the list of every file synth wrote under `root`, last."""
    with outputs.atomic_path(os.path.join(root, SYNTH_MARKER)) as tmp, open(tmp, "w") as stream:
        json.dump({"written_by": "bratskeras synth", "files": _dataset_files(root)}, stream)


@contextlib.contextmanager
def _names_final_paths(staging, out_dir):
    """Re-raises an OSError from the block with the file's final path under `out_dir`, not its staging one."""
    try:
        yield
    except OSError as error:
        if error.errno is None:
            raise
        name = os.fspath(error.filename) if error.filename is not None else out_dir
        if name.startswith(staging):
            name = out_dir + name[len(staging):]
        raise OSError(error.errno, error.strerror or os.strerror(error.errno), name) from None


def _case_maker(kind, settings, task, voxel_mm=1.0):
    """make_case(shape, seed) -> (images, classes) of the phantom kind asked for.

    Raises:
        ValueError: unknown kind or settings; anatomy with a task.
        ConfigError: anatomy without nilearn (the message says what to install).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "simple":
        return make_case
    from bratskeras.synth import anatomy

    if task is not None:
        raise ValueError(f"{kind} phantoms have the classic NCR/ED/ET classes: write a --task with kind simple")
    anatomy.check_available()
    if kind == "synthseg":
        from bratskeras.synth import synthseg

        if isinstance(settings, str) and settings not in synthseg.GENERATORS:
            raise ValueError(f"unknown synthseg generator {settings!r}; expected one of "
                             f"{', '.join(synthseg.GENERATORS)}")
        return lambda shape, seed: synthseg.make_case(shape, seed, settings, voxel_mm)
    if isinstance(settings, str):
        if settings not in anatomy.SETTINGS:
            raise ValueError(f"unknown anatomy settings {settings!r}; expected one of {', '.join(anatomy.SETTINGS)}")
        settings = anatomy.SETTINGS[settings]
    return lambda shape, seed: anatomy.make_case(shape, seed, settings, voxel_mm)


def _check_out_dir(out_dir, overwrite):
    """Writing into a non-empty folder needs `overwrite`, and only a dataset synth wrote is replaced.

    Raises:
        OutputExistsError: not a folder; not empty without `overwrite`; or
            not empty and not written by synth (a real dataset with the
            same case names would otherwise be replaced by phantoms), or
            holding files synth did not write (named).
    """
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"{out_dir}: exists and is not a folder")
    entries = claims.folder_entries(out_dir) if os.path.isdir(out_dir) else []
    if entries and not overwrite:
        raise OutputExistsError(f"{out_dir}: folder is not empty (pass --overwrite to write into it)")
    if entries and SYNTH_MARKER not in entries:
        raise OutputExistsError(f"{out_dir}: folder is not empty and was not written by bratskeras synth; "
                                "--overwrite replaces only synth's own phantoms")
    if entries:
        foreign = _foreign_files(out_dir)
        if foreign:
            raise OutputExistsError(f"{out_dir}: holds files bratskeras synth did not write ({', '.join(foreign[:3])}"
                                    f"{', ...' if len(foreign) > 3 else ''}); --overwrite replaces a whole synth "
                                    "dataset, so move them out or choose another folder")


def _foreign_files(out_dir):
    """Files under `out_dir` that its SYNTH_MARKER manifest does not list (all of them for an unreadable one)."""
    try:
        with open(os.path.join(out_dir, SYNTH_MARKER)) as stream:
            listed = set(json.load(stream)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        # A marker of an older bratskeras (one line of text) lists nothing: nothing is known to be synth's.
        return [f"{SYNTH_MARKER} (no manifest of synth's files)"]
    return [path for path in _dataset_files(out_dir) if path not in listed]


def _save_nifti(array, path, voxel_mm=1.0):
    import nibabel as nib

    image = nib.Nifti1Image(array, volumes.brats_affine(array.shape, voxel_mm))
    image.header.set_xyzt_units("mm", "sec")
    with outputs.names_target(path):
        nib.save(image, path)


def _write_case_folder(folder, case_id, images, classes, scheme, suffixes, separator, ext, label="seg",
                       voxel_mm=1.0):
    os.makedirs(folder, exist_ok=True)
    for modality, suffix in suffixes.items():
        _save_nifti(images[modality], os.path.join(folder, f"{case_id}{separator}{suffix}{ext}"), voxel_mm)
    seg = labels.classes_to_labels(classes, scheme)
    _save_nifti(seg, os.path.join(folder, f"{case_id}{separator}{label}{ext}"), voxel_mm)
    return folder


_OLD_SUFFIXES = layouts.LAYOUTS["brats2021"].suffixes
_GLI_SUFFIXES = layouts.LAYOUTS["brats2023"].suffixes


def _write_brats2017(out_dir, index, images, classes, voxel_mm=1.0):
    grade = "HGG" if index % 2 == 0 else "LGG"
    case_id = f"Brats17_SYN_{index + 1:03d}_1"
    return _write_case_folder(os.path.join(out_dir, grade, case_id), case_id, images, classes,
                              "brats2020", _OLD_SUFFIXES, "_", ".nii.gz", voxel_mm=voxel_mm)


def _write_brats2020(out_dir, index, images, classes, voxel_mm=1.0):
    parent = os.path.join(out_dir, "BraTS2020_TrainingData", "MICCAI_BraTS2020_TrainingData")
    case_id = f"BraTS20_Training_{index + 1:03d}"
    folder = _write_case_folder(os.path.join(parent, case_id), case_id, images, classes,
                                "brats2020", _OLD_SUFFIXES, "_", ".nii", voxel_mm=voxel_mm)
    _append_csv_rows(parent, case_id, index)
    return folder


def _append_csv_rows(parent, case_id, index):
    """The Kaggle copy keeps name_mapping.csv and survival_info.csv beside the cases."""
    rows = {
        "name_mapping.csv": (["Grade", "BraTS_2020_subject_ID"], ["HGG", case_id]),
        "survival_info.csv": (["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"],
                              [case_id, 40 + index % 40, 100 + 10 * index, "GTR"]),
    }
    for name, (header, row) in rows.items():
        path = os.path.join(parent, name)
        new = not os.path.exists(path)
        with outputs.names_target(path), open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(header)
            writer.writerow(row)


def _write_brats2021(out_dir, index, images, classes, voxel_mm=1.0):
    case_id = f"BraTS2021_{index:05d}"
    return _write_case_folder(os.path.join(out_dir, case_id), case_id, images, classes,
                              "brats2020", _OLD_SUFFIXES, "_", ".nii.gz", voxel_mm=voxel_mm)


def _write_brats2023(out_dir, index, images, classes, voxel_mm=1.0):
    case_id = f"BraTS-GLI-{index:05d}-000"
    return _write_case_folder(os.path.join(out_dir, case_id), case_id, images, classes,
                              "brats2023", _GLI_SUFFIXES, "-", ".nii.gz", voxel_mm=voxel_mm)


def task_case_id(scheme, index):
    """The case folder name of a 2023-2025 task, e.g. BraTS-MET-00003-000, BraTS-MEN-RT-0003-1."""
    prefix = scheme.prefixes[0] if scheme.prefixes else "GLI"
    if prefix == "MEN-RT":
        return f"BraTS-MEN-RT-{index:04d}-1"
    if prefix == "GoAT":
        return f"BraTS-GoAT-{index:05d}"
    return f"BraTS-{prefix}-{index:05d}-000"


def scheme_classes(phantom, scheme):
    """make_case's classes (1 NCR, 2 ED, 3 ET, 4 fluid) -> `scheme`'s class indices, by class name."""
    classes = np.zeros(phantom.shape, dtype=np.uint8)
    for class_index, name in enumerate(scheme.names[1:], start=1):
        classes[np.isin(phantom, _STRUCTURES_OF[name])] = class_index
    return classes


def _write_task_case(out_dir, index, shape, seed, scheme):
    images, phantom = task_phantom(shape, seed, scheme)
    case_id = task_case_id(scheme, index)
    # MEN-RT ships <case>_t1c and <case>_gtv; the other tasks <case>-<suffix> and <case>-seg.
    separator, label = ("_", "gtv") if scheme.modalities == ("t1ce",) else ("-", "seg")
    suffixes = {m: _GLI_SUFFIXES[m] for m in scheme.modalities}
    return _write_case_folder(os.path.join(out_dir, case_id), case_id, images, scheme_classes(phantom, scheme),
                              scheme, suffixes, separator, ".nii.gz", label)


def _write_kaggle_h5(out_dir, index, images, classes):
    """Writes volume_<index+1>_slice_<s>.h5 along the last axis, channels in layouts.H5_CHANNEL_ORDER."""
    import h5py

    folder = os.path.join(out_dir, "BraTS2020_training_data", "content", "data")
    os.makedirs(folder, exist_ok=True)
    volume = np.stack([images[m] for m in layouts.H5_CHANNEL_ORDER], axis=-1).astype(np.float32)
    mask = np.stack([classes == c for c in layouts.H5_MASK_CLASSES], axis=-1).astype(np.uint8)
    for s in range(volume.shape[2]):
        path = os.path.join(folder, f"volume_{index + 1}_slice_{s}.h5")
        with outputs.names_target(path), h5py.File(path, "w") as handle:
            handle.create_dataset("image", data=volume[:, :, s])
            handle.create_dataset("mask", data=mask[:, :, s])
    return folder


_WRITERS = {
    "brats2017": _write_brats2017,
    "brats2020": _write_brats2020,
    "brats2021": _write_brats2021,
    "brats2023": _write_brats2023,
    "kaggle-h5": _write_kaggle_h5,
}
