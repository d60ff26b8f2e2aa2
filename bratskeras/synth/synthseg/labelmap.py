"""SynthSeg stage 1, the label map: its values, the `Head` the transforms fill, and the healthy anatomy.

The template's label map (`template_labels`: ventricles, sulcal CSF, three
grey and three white matter T1 clusters of the MNI152 2009 template) is
placed in the grid (`Pose`), deformed (`Warp`, also pushed aside by the
lesions `tumours.Tumours` drew), given wider sulci and other ventricles
(`Atrophy`) and ventricles of other shapes (`VentricleShapes`). `stream`
gives each transform its own random generator, named after it.

Arrays are (D, H, W) = NIfTI axes (i, j, k) on BraTS's grid.
"""

import functools
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from bratskeras.core import checks
from bratskeras.core.labels import ALL_MODALITIES
from bratskeras.synth import anatomy

MODALITIES = ALL_MODALITIES
# Label map values. Healthy tissue first (0 is outside the head).
VENTRICLE, SULCAL_CSF = 1, 2
GM_CLUSTERS = (3, 4, 5)  # grey matter by rising template T1 intensity (cortex ... deep grey matter)
WM_CLUSTERS = (6, 7, 8)
VESSEL, DURA, OUTSIDE = 9, 10, 11  # enhancing vessels; a rim left by skull-stripping; the scalp beyond it
NECROSIS, NON_ENHANCING, CYST, ENHANCING, OEDEMA_A, OEDEMA_B = 12, 13, 14, 15, 16, 17
LABELS = 18
# BraTS classes (0 bg, 1 NCR/NETC, 2 ED, 3 ET) of the tumour labels.
CLASS_OF = {NECROSIS: 1, NON_ENHANCING: 1, CYST: 1, OEDEMA_A: 2, OEDEMA_B: 2, ENHANCING: 3}
CSF = (VENTRICLE, SULCAL_CSF)
PARENCHYMA = GM_CLUSTERS + WM_CLUSTERS
HEALTHY = CSF + PARENCHYMA


def stream(seed, name):
    """The random generator of step `name` for a case `seed` (int or sequence of ints)."""
    entropy = list(np.atleast_1d(np.asarray(seed, dtype=np.int64)).tolist()) + [zlib.crc32(name.encode())]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def uniform(rng, bounds, size=None):
    """One draw (or `size` draws) uniform in (min, max) `bounds`."""
    return rng.uniform(bounds[0], bounds[1], size=size)


def check_share(name, value):
    """ValueError unless `value`, the share of heads a step applies to, is within [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


def check_range(name, bounds, low=-np.inf, high=np.inf):
    """ValueError unless `bounds` is (min, max) with low <= min <= max <= high (core.checks.pair_within)."""
    problem = checks.failure(checks.pair_within(low, high), name, bounds)
    if problem is not None:
        raise ValueError(problem)


@dataclass
class Head:
    """What the transforms build up, one field per stage.

    Attributes:
        shape: (D, H, W) output voxels; voxel_mm: their isotropic size.
        points: float32 (3, D, H, W) mm offsets of the voxels from the brain's centre.
        to_template: (3, 3) output mm -> template voxels; template_centre (3,)
            the template voxel the grid's centre maps to.
        lesions: list of dicts (type, centre mm (3,), volume ml, ...), `Tumours`.
        labels: uint8 (D, H, W) label map (the constants above).
        images: dict modality -> float32 (D, H, W); mask: bool (D, H, W), the
            skull-stripping mask (zero outside).
    """

    shape: tuple
    voxel_mm: float
    points: np.ndarray = None
    to_template: np.ndarray = None
    template_centre: np.ndarray = None
    lesions: list = field(default_factory=list)
    labels: np.ndarray = None
    images: dict = field(default_factory=dict)
    mask: np.ndarray = None


@functools.lru_cache(maxsize=1)
def template_labels():
    """uint8 label map on the template grid: ventricles, sulcal CSF, 3 GM and 3 WM T1 clusters.

    The clusters are the terciles of the template's T1 inside each hard
    tissue class; ventricles are CSF deeper than 12 mm inside the brain.
    """
    import nibabel as nib

    maps = anatomy.load_template()
    t1 = np.asarray(nib.load(anatomy.template_file("t1")).dataobj, dtype=np.float32)
    brain = maps[3] > 0
    tissue = np.argmax(maps[:3], axis=0)  # 0 CSF, 1 GM, 2 WM
    labels = np.zeros(brain.shape, dtype=np.uint8)
    depth = ndimage.distance_transform_edt(brain)
    csf = brain & (tissue == 0)
    labels[csf] = SULCAL_CSF
    labels[csf & (depth > 12)] = VENTRICLE
    for cls, clusters in ((1, GM_CLUSTERS), (2, WM_CLUSTERS)):
        inside = brain & (tissue == cls)
        edges = np.quantile(t1[inside], [1 / 3, 2 / 3])
        labels[inside] = np.asarray(clusters, dtype=np.uint8)[np.digitize(t1[inside], edges)]
    labels.setflags(write=False)
    return labels


@dataclass(frozen=True)
class Pose:
    """Places the template in the grid: rotation, per-axis scale (head size), a few mm of shift."""

    name = "pose"
    rotation_degrees: float = 12.0
    scale: tuple = (0.82, 1.05)
    shift_mm: float = 6.0

    def __post_init__(self):
        check_range("scale", self.scale, 0.5, 1.5)

    def __call__(self, head, rng):
        head.to_template = anatomy.random_affine(rng, self)
        centre, _ = anatomy.brain_box()
        head.template_centre = centre + rng.uniform(-self.shift_mm, self.shift_mm, size=3)
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(head.voxel_mm) for n in head.shape]
        head.points = np.stack(np.meshgrid(*axes, indexing="ij"))



@dataclass(frozen=True)
class Warp:
    """Samples the template's label map through the pose, a smooth random displacement and the mass effect."""

    name = "warp"
    deformation_mm: float = 8.0
    wavelength_mm: tuple = (40.0, 140.0)

    def __call__(self, head, rng):
        points = head.points
        displaced = np.stack([points[a] + anatomy.waves(points, rng, 4, self.wavelength_mm, self.deformation_mm)
                              for a in range(3)])
        for lesion in head.lesions:  # tissue near a lesion samples from closer in: it is pushed outwards
            offset = displaced - lesion["centre"][:, None, None, None]
            radius = 12.0 + 1.2 * lesion["whole_ml"] ** (1 / 3) * 6.2
            weight = lesion["push"] * np.exp(-(offset**2).sum(0) / (2 * radius**2))
            displaced = displaced - offset * weight[None]
        coords = np.tensordot(head.to_template.astype(np.float32), displaced, axes=1)
        coords += head.template_centre.astype(np.float32)[:, None, None, None]
        head.labels = ndimage.map_coordinates(template_labels(), coords, order=0, mode="constant", cval=0,
                                              prefilter=False).astype(np.uint8)


@dataclass(frozen=True)
class Atrophy:
    """Wider sulci (CSF grown into cortex) and larger or smaller ventricles, in mm."""

    name = "atrophy"
    sulci_mm: tuple = (0.0, 2.5)
    ventricles_mm: tuple = (-2.0, 5.0)

    def __call__(self, head, rng):
        voxel = head.voxel_mm
        sulci = int(round(uniform(rng, self.sulci_mm) / voxel))
        if sulci > 0:
            grown = ndimage.binary_dilation(head.labels == SULCAL_CSF, iterations=sulci)
            head.labels[grown & np.isin(head.labels, GM_CLUSTERS)] = SULCAL_CSF
        ventricles = int(round(uniform(rng, self.ventricles_mm) / voxel))
        inside = head.labels == VENTRICLE
        if ventricles > 0:
            grown = ndimage.binary_dilation(inside, iterations=ventricles) & (head.labels > 0)
            head.labels[grown & ~inside] = VENTRICLE
        elif ventricles < 0:
            head.labels[inside & ~ndimage.binary_erosion(inside, iterations=-ventricles)] = WM_CLUSTERS[1]


@dataclass(frozen=True)
class VentricleShapes:
    """Ventricles shaped unlike the template's: a smooth warp of their own and a left/right asymmetry.

    Real ventricles differ far more between heads than a deformed template
    gives (asymmetric, compressed, with wide or slit horns); a network that
    has seen one ventricle shape calls the others necrosis or oedema. Voxels
    the ventricles leave become deep white matter; they grow only into
    healthy tissue.
    """

    name = "ventricle_shapes"
    deformation_mm: tuple = (2.0, 7.0)
    asymmetry_mm: tuple = (-3.0, 3.0)  # one hemisphere's ventricle grown (> 0) or shrunk (< 0)

    def __post_init__(self):
        check_range("deformation_mm", self.deformation_mm, 0.0, 20.0)
        check_range("asymmetry_mm", self.asymmetry_mm, -10.0, 10.0)

    def __call__(self, head, rng):
        inside = head.labels == VENTRICLE
        if not inside.any():
            return
        amplitude = uniform(rng, self.deformation_mm) / head.voxel_mm
        index = np.indices(head.shape, dtype=np.float32)
        coords = np.stack([index[a] + anatomy.waves(head.points, rng, 3, (15.0, 45.0), amplitude)
                           for a in range(3)])
        warped = ndimage.map_coordinates(inside.astype(np.float32), coords, order=1, mode="constant") > 0.5
        side = head.points[0] > 0 if rng.random() < 0.5 else head.points[0] <= 0
        steps = int(round(uniform(rng, self.asymmetry_mm) / head.voxel_mm))
        if steps > 0:
            warped |= ndimage.binary_dilation(warped, iterations=steps) & side
        elif steps < 0:
            warped &= ndimage.binary_erosion(warped, iterations=-steps) | ~side
        head.labels[inside & ~warped] = WM_CLUSTERS[1]
        head.labels[warped & ~inside & np.isin(head.labels, HEALTHY)] = VENTRICLE
