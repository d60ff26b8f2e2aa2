"""Synthetic BraTS-like geometric phantoms, and `write_dataset`, synth's entry point for every kind.

`write_dataset` (`bratskeras synth`) writes cases of a kind of
bratskeras.synth.kinds.KINDS: "simple", this module's geometric phantoms
described below (fast, used by the unit tests); "anatomy", heads on the
MNI152 brain template with realistic tissue contrasts and scanner variation
(bratskeras.synth.anatomy; the demo's); "synthseg", domain-randomised heads
on the same template (bratskeras.synth.synthseg; the pretrained models').
bratskeras.synth.writers writes each case as its layout's row names it.

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

import numpy as np
from scipy import ndimage

from bratskeras.core import labels
from bratskeras.data import layouts
from bratskeras.synth import kinds, writers

SYNTH_LAYOUTS = layouts.NAMES
DEFAULT_SHAPE = (64, 64, 48)

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


# --------------------------------------------------------------------------- datasets


def write_dataset(out_dir, cases=4, shape=DEFAULT_SHAPE, layout=writers.DEFAULT_LAYOUT, seed=0, overwrite=False,
                  task=None, kind="simple", settings="default", voxel_mm=1.0):
    """Writes `cases` phantoms to `out_dir` in a release's on-disk layout (bratskeras.synth.writers).

    Args:
        out_dir: target folder; must be absent or empty unless `overwrite`.
        cases: number of cases.
        shape: (D, H, W) voxels per case.
        layout: one of SYNTH_LAYOUTS (brats2017 also stands for 2018/2019).
        seed: dataset seed; case i uses (seed, i).
        overwrite: replace the dataset synth wrote in `out_dir` before, whole
            (its writers.SYNTH_MARKER manifest lists every file in it; a folder with
            other files is refused).
        task: a 2023-2025 task (labels.TASKS): the brats2023 layout with that
            task's case folders, modalities and label values (see writers.task_case_id).
        kind: a name of kinds.KINDS; "anatomy" and "synthseg" need nilearn (see
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
        if layout not in (writers.TASK_LAYOUT.name, writers.DEFAULT_LAYOUT):
            raise ValueError(f"a task is written in the {writers.TASK_LAYOUT.name} layout, not {layout}")
        layout = writers.TASK_LAYOUT.name
    if layout not in SYNTH_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(SYNTH_LAYOUTS)}")
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    row = layouts.LAYOUTS[layout]
    if voxel_mm != 1.0 and (not getattr(kinds.KINDS.get(kind), "takes_voxel_size", True)
                            or not row.reader.keeps_voxel_size):
        raise ValueError(f"a voxel size other than 1 mm is for anatomy heads in a NIfTI layout, not {kind} / {layout}")
    make = kinds.case_maker(kind, settings, task, voxel_mm)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    return writers.write_folder(out_dir, overwrite,
                                lambda staging: _write_cases(staging, cases, shape, row, seed, task, make, voxel_mm))


def _write_cases(out_dir, cases, shape, layout, seed, task, make, voxel_mm):
    """Writes every case into `out_dir` (the staging folder) as layout row `layout` names them; returns their folders."""
    if task is not None:
        scheme = labels.get_scheme(task)
        return [_write_task_case(out_dir, index, shape, (seed, index), scheme, layout) for index in range(cases)]
    return [writers.write_case(layout, out_dir, index, *make(shape, (seed, index)), voxel_mm=voxel_mm)
            for index in range(cases)]


def _write_task_case(out_dir, index, shape, seed, scheme, layout):
    """Writes one task phantom (`task_phantom`) with its scheme's classes, named as its task's cases are."""
    images, phantom = task_phantom(shape, seed, scheme)
    return writers.write_case(layout, out_dir, index, images, scheme_classes(phantom, scheme), scheme)


def scheme_classes(phantom, scheme):
    """make_case's classes (1 NCR, 2 ED, 3 ET, 4 fluid) -> `scheme`'s class indices, by class name."""
    classes = np.zeros(phantom.shape, dtype=np.uint8)
    for class_index, name in enumerate(scheme.names[1:], start=1):
        classes[np.isin(phantom, _STRUCTURES_OF[name])] = class_index
    return classes
