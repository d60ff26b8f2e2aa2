"""SynthSeg-style heads: random label maps painted with random contrasts through a random scanner.

SynthSeg (Billot et al., Medical Image Analysis 2023) trains a segmentation
network only on images synthesised from label maps, with the intensities of
each label drawn from Gaussian mixtures whose parameters are randomised, and
it then segments real scans of any contrast. FetalSynthSeg found that plain
Gaussian intensities beat physics-based simulation and that subdividing the
tissue classes by intensity clusters matters for robustness. This module
builds BraTS heads that way, on the MNI152 2009 template that the `anatomy`
extra ships (bratskeras.synth.anatomy.load_template):

1. a label map: the template's CSF (ventricles and sulci apart), grey and
   white matter, each parenchyma class cut into intensity clusters of the
   template's T1 (deep grey matter falls apart from cortex), deformed by a
   random affine and a strong smooth displacement field, with atrophy
   (wider sulci) and ventricles of varied size;
2. tumours as real gliomas come (TUMOUR_TYPES): ring-enhancing glioblastoma
   around necrosis, non-enhancing diffuse low-grade glioma, solid enhancing,
   cystic with a thin rim, patchy enhancement in a non-enhancing core; 1 to 3
   lesions, deep or cortical, 3-250 ml, pushing the tissue aside; oedema
   (two intensity clusters) spreading along white matter;
3. intensities per label and modality from Gaussians over wide ranges (and in
   a share of heads fully random healthy contrasts), keeping only the
   contrasts that define the BraTS classes (`Contrasts`): oedema bright on
   FLAIR and T2, enhancing tumour bright on T1c above every other tissue but
   enhancing vessels, necrosis and cysts dark on T1 and T1c; plus enhancing
   healthy structures (vessels, choroid plexus) that are not tumour;
4. acquisition: thick-slice or anisotropic blur, registration blur, partial
   volume, a smooth bias field, gamma, Rician noise, an arbitrary intensity
   scale, and an imperfect skull-stripping mask (a rim of dura left, or
   cortex cut off).

Each step is a `Transform`: a frozen dataclass that owns its options, checks
them when built, and draws from its own random stream, named after the step
(`stream`), so adding or removing a step changes no other step's draws. A
generator is a tuple of transforms (DEFAULT, HELDOUT) run in order over one
`Head`.

Arrays are (D, H, W) = NIfTI axes (i, j, k) on BraTS's grid (affine
diag(-1, -1, 1) times the voxel size), the brain centred in it.
"""

import functools
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from bratskeras.synth import anatomy

MODALITIES = ("flair", "t1", "t1ce", "t2")
# Label map values. Healthy tissue first (0 is outside the head).
VENTRICLE, SULCAL_CSF = 1, 2
GM_CLUSTERS = (3, 4, 5)  # grey matter by rising template T1 intensity (cortex ... deep grey matter)
WM_CLUSTERS = (6, 7, 8)
VESSEL, DURA, OUTSIDE = 9, 10, 11  # enhancing vessels; a rim left by skull-stripping; the scalp beyond it
NECROSIS, NON_ENHANCING, CYST, ENHANCING, OEDEMA_A, OEDEMA_B = 12, 13, 14, 15, 16, 17
LABELS = 18
# BraTS classes (0 bg, 1 NCR/NETC, 2 ED, 3 ET) of the tumour labels.
CLASS_OF = {NECROSIS: 1, NON_ENHANCING: 1, CYST: 1, OEDEMA_A: 2, OEDEMA_B: 2, ENHANCING: 3}
HEALTHY = (VENTRICLE, SULCAL_CSF) + GM_CLUSTERS + WM_CLUSTERS
PARENCHYMA = GM_CLUSTERS + WM_CLUSTERS
# Typical means per modality on a 0..1 scale (anatomy.CONTRASTS' tissues): CSF, GM, WM.
_BASE = {m: dict(zip(("csf", "gm", "wm"), anatomy.CONTRASTS[m][:3])) for m in MODALITIES}


def stream(seed, name):
    """The random generator of step `name` for a case `seed` (int or sequence of ints)."""
    entropy = list(np.atleast_1d(np.asarray(seed, dtype=np.int64)).tolist()) + [zlib.crc32(name.encode())]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _uniform(rng, bounds, size=None):
    return rng.uniform(bounds[0], bounds[1], size=size)


def _check_range(name, bounds, low=-np.inf, high=np.inf):
    if len(bounds) != 2 or not low <= bounds[0] <= bounds[1] <= high:
        raise ValueError(f"{name} must be (min, max) within [{low}, {high}], got {bounds}")


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


# --------------------------------------------------------------------------- the template's label map


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


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class Pose:
    """Places the template in the grid: rotation, per-axis scale (head size), a few mm of shift."""

    name = "pose"
    rotation_degrees: float = 12.0
    scale: tuple = (0.82, 1.05)
    shift_mm: float = 6.0

    def __post_init__(self):
        _check_range("scale", self.scale, 0.5, 1.5)

    def __call__(self, head, rng):
        head.to_template = anatomy.random_affine(rng, self)
        centre, _ = anatomy.brain_box()
        head.template_centre = centre + rng.uniform(-self.shift_mm, self.shift_mm, size=3)
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(head.voxel_mm) for n in head.shape]
        head.points = np.stack(np.meshgrid(*axes, indexing="ij"))


TUMOUR_TYPES = ("glioblastoma", "low_grade", "solid", "cystic", "patchy")


@dataclass(frozen=True)
class Tumours:
    """Draws the lesions: type, count, centres (deep or cortical), volumes, mass effect.

    Centres are drawn in template tissue (white matter, or grey matter for a
    cortical lesion) and carried to output mm through the pose.
    """

    name = "tumours"
    type_weights: tuple = (0.4, 0.25, 0.1, 0.1, 0.15)  # TUMOUR_TYPES
    count_weights: tuple = (0.75, 0.17, 0.08)  # 1, 2 or 3 lesions
    whole_ml: tuple = (8.0, 300.0)  # the first lesion's whole tumour, log-uniform
    cortical: float = 0.3
    mass_effect: float = 0.45
    mixed_share: float = 0.2  # lesions of a type drawn anew instead of the head's type

    def __post_init__(self):
        if len(self.type_weights) != len(TUMOUR_TYPES) or min(self.type_weights) < 0:
            raise ValueError(f"type_weights needs {len(TUMOUR_TYPES)} weights >= 0 ({', '.join(TUMOUR_TYPES)})")
        _check_range("whole_ml", self.whole_ml, 0.1, 1000.0)

    def __call__(self, head, rng):
        count = 1 + rng.choice(len(self.count_weights), p=np.asarray(self.count_weights) / sum(self.count_weights))
        kind = rng.choice(TUMOUR_TYPES, p=np.asarray(self.type_weights) / sum(self.type_weights))
        labels = template_labels()
        for index in range(count):
            pool = GM_CLUSTERS if rng.random() < self.cortical else WM_CLUSTERS
            candidates = np.argwhere(np.isin(labels[::3, ::3, ::3], pool)) * 3
            voxel = candidates[rng.integers(len(candidates))].astype(np.float64)
            centre_mm = np.linalg.solve(head.to_template, voxel - head.template_centre)
            volume = math.exp(_uniform(rng, np.log(self.whole_ml)))
            if index:  # satellites are smaller than the first lesion
                volume *= rng.uniform(0.05, 0.5)
            mixed = rng.random() >= 1.0 - self.mixed_share
            head.lesions.append({"type": rng.choice(TUMOUR_TYPES) if mixed else kind,
                                 "centre": centre_mm.astype(np.float32), "whole_ml": volume,
                                 "push": rng.uniform(0.0, self.mass_effect)})


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
        sulci = int(round(_uniform(rng, self.sulci_mm) / voxel))
        if sulci > 0:
            grown = ndimage.binary_dilation(head.labels == SULCAL_CSF, iterations=sulci)
            head.labels[grown & np.isin(head.labels, GM_CLUSTERS)] = SULCAL_CSF
        ventricles = int(round(_uniform(rng, self.ventricles_mm) / voxel))
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
        _check_range("deformation_mm", self.deformation_mm, 0.0, 20.0)
        _check_range("asymmetry_mm", self.asymmetry_mm, -10.0, 10.0)

    def __call__(self, head, rng):
        inside = head.labels == VENTRICLE
        if not inside.any():
            return
        amplitude = _uniform(rng, self.deformation_mm) / head.voxel_mm
        index = np.indices(head.shape, dtype=np.float32)
        coords = np.stack([index[a] + anatomy.waves(head.points, rng, 3, (15.0, 45.0), amplitude)
                           for a in range(3)])
        warped = ndimage.map_coordinates(inside.astype(np.float32), coords, order=1, mode="constant") > 0.5
        side = head.points[0] > 0 if rng.random() < 0.5 else head.points[0] <= 0
        steps = int(round(_uniform(rng, self.asymmetry_mm) / head.voxel_mm))
        if steps > 0:
            warped |= ndimage.binary_dilation(warped, iterations=steps) & side
        elif steps < 0:
            warped &= ndimage.binary_erosion(warped, iterations=-steps) | ~side
        head.labels[inside & ~warped] = WM_CLUSTERS[1]
        head.labels[warped & ~inside & np.isin(head.labels, HEALTHY)] = VENTRICLE


# --------------------------------------------------------------------------- tumours


@dataclass(frozen=True)
class GrowTumours:
    """Paints each lesion into the label map: its core by type, and oedema along white matter.

    The core is an irregular blob; its parts by type: glioblastoma an
    enhancing rim around necrosis; low_grade non-enhancing tumour only;
    solid enhancing tumour; cystic a cyst in a thin enhancing rim; patchy
    enhancing spots in non-enhancing tumour. Volumes come from rank
    thresholds, so a lesion's drawn volume is met to a voxel.
    """

    name = "grow"
    core_fraction: tuple = (0.1, 0.7)
    necrosis_fraction: tuple = (0.1, 0.75)

    def __call__(self, head, rng):
        for lesion in head.lesions:
            self._lesion(head, lesion, rng)

    def _lesion(self, head, lesion, rng):
        labels, voxel = head.labels, head.voxel_mm
        offset = head.points - lesion["centre"][:, None, None, None]
        radii = rng.uniform(0.7, 1.4, size=3)
        distance = np.sqrt(sum((p / r) ** 2 for p, r in zip(offset, radii)))
        potential = distance / (1.0 + anatomy.waves(offset, rng, 5, (15.0, 50.0), 0.4))
        allowed = np.isin(labels, PARENCHYMA + tuple(CLASS_OF))
        whole = min(int(lesion["whole_ml"] * 1000 / voxel**3), int(allowed.sum()) // 3)
        if whole < 1:
            return
        core_share = _uniform(rng, (0.2, 0.9) if lesion["type"] == "low_grade" else self.core_fraction)
        core_threshold = anatomy.rank_threshold(potential[allowed], max(1, int(whole * core_share)))
        core = allowed & (potential <= core_threshold)
        white = np.isin(labels, WM_CLUSTERS) + 0.25 * np.isin(labels, GM_CLUSTERS)
        spread = core_threshold + (potential - core_threshold) / (0.1 + white)
        candidates = allowed & ~core & ~np.isin(labels, tuple(CLASS_OF))
        edema_threshold = anatomy.rank_threshold(spread[candidates], max(whole - int(core.sum()), 0))
        edema = candidates & (spread <= edema_threshold)
        clusters = anatomy.waves(offset, rng, 3, (10.0, 30.0), 1.0) > rng.uniform(-0.3, 0.3)
        labels[edema & clusters] = OEDEMA_A
        labels[edema & ~clusters] = OEDEMA_B
        labels[core] = self._core(lesion["type"], potential / max(core_threshold, 1e-6), offset, rng)[core]

    def _core(self, kind, relative, offset, rng):
        """Core labels (D, H, W) from `relative` (potential / core threshold: <= 1 inside the core)."""
        inner = relative <= _uniform(rng, self.necrosis_fraction) ** (1 / 3)
        if kind == "low_grade":
            spots = anatomy.waves(offset, rng, 4, (6.0, 20.0), 1.0) > 0.55
            return np.where(inner & spots & (rng.random() < 0.3), CYST, NON_ENHANCING)
        if kind == "solid":
            return np.where(inner & (rng.random() < 0.3), NECROSIS, ENHANCING)
        if kind == "cystic":
            thin = relative <= rng.uniform(0.8, 0.93)
            return np.where(thin, CYST, ENHANCING)
        if kind == "patchy":
            spots = anatomy.waves(offset, rng, 6, (5.0, 15.0), 1.0) > rng.uniform(0.2, 0.6)
            return np.where(spots, ENHANCING, NON_ENHANCING)
        # glioblastoma: a rim, broken in places where it does not enhance
        gaps = anatomy.waves(offset, rng, 4, (10.0, 30.0), 1.0) > rng.uniform(0.4, 1.2)
        return np.where(inner, NECROSIS, np.where(gaps, NON_ENHANCING, ENHANCING))


@dataclass(frozen=True)
class Vessels:
    """Enhancing healthy structures (vessels in sulci, choroid plexus): bright on T1c, not tumour."""

    name = "vessels"
    count: tuple = (5, 40)
    radius_mm: tuple = (0.8, 2.5)

    def __call__(self, head, rng):
        csf = np.argwhere(np.isin(head.labels, (SULCAL_CSF, VENTRICLE)))
        if not len(csf):
            return
        seeds = np.zeros(head.shape, dtype=bool)
        chosen = csf[rng.integers(len(csf), size=int(_uniform(rng, self.count)))]
        seeds[tuple(chosen.T)] = True
        distance = ndimage.distance_transform_edt(~seeds) * head.voxel_mm
        vessels = (distance <= _uniform(rng, self.radius_mm)) & np.isin(head.labels, HEALTHY)
        head.labels[vessels] = VESSEL


@dataclass(frozen=True)
class VesselTubes:
    """Tubular enhancing vessels: random walks from CSF (sulci, ventricles: choroid plexus) through tissue.

    Real T1c scans show veins, sinuses and choroid plexus as bright as
    enhancing tumour; a model that has seen none calls them ET.
    """

    name = "vessel_tubes"
    count: tuple = (10, 60)
    length_mm: tuple = (10.0, 60.0)
    radius_mm: tuple = (0.6, 2.0)

    def __call__(self, head, rng):
        starts = np.argwhere(np.isin(head.labels, (SULCAL_CSF, VENTRICLE)))
        if not len(starts):
            return
        tubes = np.zeros(head.shape, dtype=bool)
        voxel = head.voxel_mm
        for start in starts[rng.integers(len(starts), size=int(_uniform(rng, self.count)))]:
            steps = max(2, int(_uniform(rng, self.length_mm) / voxel))
            turns = rng.normal(size=(steps, 3)).cumsum(0) * 0.3 + rng.normal(size=3)
            path = start + np.cumsum(turns / np.linalg.norm(turns, axis=1, keepdims=True), axis=0)
            inside = np.all((path >= 0) & (path < np.asarray(head.shape) - 0.5), axis=1)
            tubes[tuple(np.round(path[inside]).astype(int).T)] = True
        radius = _uniform(rng, self.radius_mm) / voxel
        if radius > 0.75:
            tubes = ndimage.binary_dilation(tubes, iterations=int(round(radius)))
        head.labels[tubes & np.isin(head.labels, HEALTHY)] = VESSEL


# --------------------------------------------------------------------------- intensities


@dataclass(frozen=True)
class Contrasts:
    """Paints every label with a Gaussian per modality (SynthSeg's mixture), keeping BraTS's contrasts.

    Healthy means are the typical contrasts plus up to `jitter` (each GM and
    WM cluster apart), or in `random_share` of the heads uniform in 0.05-0.95
    (SynthSeg's fully random contrasts). Tumour means are drawn relative to
    the drawn parenchyma range [low, high] of each modality (`_tumour_means`).
    """

    name = "contrasts"
    jitter: float = 0.15
    random_share: float = 0.25
    spread: tuple = (0.0, 0.06)  # standard deviation within a label

    def __call__(self, head, rng):
        fully_random = rng.random() < self.random_share
        t1_means = None
        for modality in MODALITIES:
            means = self._healthy_means(modality, fully_random, rng)
            if modality == "t1ce" and t1_means is not None:  # contrast changes only what enhances
                means[list(HEALTHY)] = t1_means[list(HEALTHY)] * rng.uniform(0.9, 1.1, size=len(HEALTHY))
            self._tumour_means(modality, means, t1_means, rng)
            if modality == "t1":
                t1_means = means.copy()
            spread = _uniform(rng, self.spread, size=LABELS).astype(np.float32)
            image = means.astype(np.float32)[head.labels]
            image += spread[head.labels] * rng.standard_normal(head.shape, dtype=np.float32)
            head.images[modality] = image
        tumour = np.isin(head.labels, tuple(CLASS_OF))
        texture = 1.0 + anatomy.waves(head.points, rng, 5, (6.0, 20.0), 0.15)
        for modality in MODALITIES:
            head.images[modality] = np.where(tumour, head.images[modality] * texture, head.images[modality])

    def _healthy_means(self, modality, fully_random, rng):
        means = np.zeros(LABELS, dtype=np.float64)
        base = _BASE[modality]
        for labels, tissue in (((VENTRICLE, SULCAL_CSF), "csf"), (GM_CLUSTERS, "gm"), (WM_CLUSTERS, "wm")):
            for label in labels:
                means[label] = (rng.uniform(0.05, 0.95) if fully_random
                                else base[tissue] + rng.uniform(-self.jitter, self.jitter))
        means[DURA] = rng.uniform(0.1, 0.9)
        means[OUTSIDE] = rng.uniform(0.0, 0.9)
        return np.clip(means, 0.02, 1.0)

    @staticmethod
    def _tumour_means(modality, means, t1_means, rng):
        """Fills the tumour and vessel means of `modality` in place from its parenchyma range."""
        low, high = means[list(PARENCHYMA)].min(), means[list(PARENCHYMA)].max()
        csf = means[[VENTRICLE, SULCAL_CSF]].mean()
        if modality in ("flair", "t2"):  # oedema and tumour bright
            means[OEDEMA_A], means[OEDEMA_B] = high + rng.uniform(0.1, 0.6, size=2)
            means[NON_ENHANCING] = high + rng.uniform(0.05, 0.6)
            means[ENHANCING] = high + rng.uniform(-0.05, 0.5)
            means[NECROSIS] = high + rng.uniform(0.1, 0.7) if modality == "t2" else rng.uniform(low, high + 0.6)
            means[CYST] = max(csf, high) + rng.uniform(0.0, 0.3) if modality == "t2" else csf + rng.uniform(0, 0.4)
            means[VESSEL] = rng.uniform(0.02, low)  # flow voids
        elif modality == "t1":  # tumour dark, fluid darker
            means[[OEDEMA_A, OEDEMA_B]] = low - rng.uniform(-0.05, 0.2, size=2)
            means[NON_ENHANCING] = low - rng.uniform(0.0, 0.3)
            means[ENHANCING] = low - rng.uniform(-0.1, 0.25)
            means[NECROSIS] = low - rng.uniform(0.1, 0.4)
            means[CYST] = min(csf, low) - rng.uniform(0.0, 0.1)
            means[VESSEL] = rng.uniform(0.02, high)
        else:  # t1ce: what does not enhance keeps its T1 contrast; ET above every healthy tissue
            for label in (OEDEMA_A, OEDEMA_B, NON_ENHANCING, NECROSIS, CYST):
                means[label] = t1_means[label] * rng.uniform(0.9, 1.1)
            brightest = max(means[list(HEALTHY)].max(), means[[OEDEMA_A, OEDEMA_B, NON_ENHANCING]].max())
            means[ENHANCING] = brightest + rng.uniform(0.15, 0.8)
            means[VESSEL] = brightest + rng.uniform(0.1, 0.8)
        means[:] = np.clip(means, 0.02, 2.0)


@dataclass(frozen=True)
class HealthyHyperintensities:
    """FLAIR- and T2-bright healthy tissue that is not oedema, painted after `Contrasts`; classes unchanged.

    Real scans show, besides tumour: caps and a thin band of FLAIR signal
    around the ventricles, a bright rim at the cortex's edge (partial volume
    with CSF and dura, flow), white-matter hyperintensities of small vessel
    disease, and on FLAIR alone CSF that the inversion did not suppress
    (flow in the ventricles and basal cisterns). As bright as oedema can be, they are told apart only by
    where they are and their shape, so a network needs to have seen them
    labelled healthy. T1 and T1c darken a little there (no enhancement).
    """

    name = "healthy_bright"
    flow_share: float = 0.3  # FLAIR's CSF flow artefact: patches of ventricles and cisterns not suppressed
    caps_share: float = 0.5
    caps_mm: tuple = (1.0, 5.0)
    rim_share: float = 0.5
    rim_mm: tuple = (1.0, 3.0)
    spots_share: float = 0.4
    spots: tuple = (1, 30)
    spot_mm: tuple = (1.5, 5.0)
    gain: tuple = (-0.05, 0.4)  # above the parenchyma's 95th percentile on FLAIR and T2

    def __post_init__(self):
        for name in ("flow_share", "caps_share", "rim_share", "spots_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        _check_range("caps_mm", self.caps_mm, 0.0, 20.0)
        _check_range("rim_mm", self.rim_mm, 0.0, 10.0)

    def __call__(self, head, rng):
        bright = np.zeros(head.shape, dtype=bool)
        healthy = np.isin(head.labels, PARENCHYMA)
        voxel = head.voxel_mm
        if rng.random() < self.caps_share:
            ventricles = head.labels == VENTRICLE
            band = ndimage.distance_transform_edt(~ventricles) * voxel <= _uniform(rng, self.caps_mm)
            patches = anatomy.waves(head.points, rng, 3, (30.0, 90.0), 1.0) > rng.uniform(-1.0, 0.4)
            bright |= band & patches & healthy
        if rng.random() < self.rim_share:
            depth = ndimage.distance_transform_edt(head.labels > 0) * voxel
            patches = anatomy.waves(head.points, rng, 3, (40.0, 120.0), 1.0) > rng.uniform(-1.0, 0.5)
            bright |= (depth <= _uniform(rng, self.rim_mm)) & patches & np.isin(head.labels, GM_CLUSTERS + (SULCAL_CSF,))
        if rng.random() < self.spots_share:
            white = np.argwhere(np.isin(head.labels, WM_CLUSTERS))
            if len(white):
                seeds = np.zeros(head.shape, dtype=bool)
                seeds[tuple(white[rng.integers(len(white), size=int(_uniform(rng, self.spots)))].T)] = True
                distance = ndimage.distance_transform_edt(~seeds) * voxel
                bright |= (distance <= _uniform(rng, self.spot_mm)) & healthy
        parenchyma = np.isin(head.labels, PARENCHYMA)
        if bright.any():
            weight = np.minimum(np.clip(1.0 + anatomy.waves(head.points, rng, 3, (5.0, 20.0), 0.3), 0.5, 1.5), 1.0)
            darker = rng.uniform(0.8, 1.0)
            for modality in MODALITIES:
                image = head.images[modality]
                if modality in ("flair", "t2"):
                    level = np.percentile(image[parenchyma], 95) + _uniform(rng, self.gain)
                    image[bright] += (level - image[bright]) * weight[bright]
                else:
                    image[bright] *= darker
        if rng.random() < self.flow_share:
            csf = np.isin(head.labels, (VENTRICLE, SULCAL_CSF))
            patches = anatomy.waves(head.points, rng, 3, (20.0, 60.0), 1.0) > rng.uniform(0.0, 0.7)
            flow = csf & patches
            flair = head.images["flair"]
            flair[flow] = np.percentile(flair[parenchyma], rng.uniform(30, 99)) * rng.uniform(0.8, 1.3)


@dataclass(frozen=True)
class ChoroidPlexus:
    """Tufts of choroid plexus inside the ventricles: enhancing like tumour on T1c, not tumour.

    Painted after `Contrasts` over the ventricle label: T1c as bright as
    enhancing tumour can be, FLAIR from CSF-dark to parenchyma-bright, T2
    and T1 between CSF and parenchyma. Real T1c scans always show it, and a
    network that has not seen it calls it enhancing tumour with oedema around.
    """

    name = "choroid_plexus"
    tufts: tuple = (2, 8)
    radius_mm: tuple = (1.5, 4.5)

    def __call__(self, head, rng):
        ventricles = np.argwhere(head.labels == VENTRICLE)
        if not len(ventricles):
            return
        seeds = np.zeros(head.shape, dtype=bool)
        seeds[tuple(ventricles[rng.integers(len(ventricles), size=int(_uniform(rng, self.tufts)))].T)] = True
        distance = ndimage.distance_transform_edt(~seeds) * head.voxel_mm
        tufts = (distance <= _uniform(rng, self.radius_mm)) & (head.labels == VENTRICLE)
        healthy = np.isin(head.labels, HEALTHY) & ~tufts
        for modality in MODALITIES:
            image = head.images[modality]
            if modality == "t1ce":
                level = np.percentile(image[healthy], 99.5) + rng.uniform(0.1, 0.8)
            else:
                level = np.percentile(image[healthy], rng.uniform(10, 95))
            image[tufts] = level * (1 + 0.08 * rng.standard_normal(int(tufts.sum()), dtype=np.float32))


# --------------------------------------------------------------------------- acquisition


@dataclass(frozen=True)
class SkullStrip:
    """The skull-stripping mask: exact, a rim of dura left (dilated), or cortex cut off (eroded)."""

    name = "skull_strip"
    dilate_share: float = 0.35
    erode_share: float = 0.15
    rim_mm: tuple = (1.0, 4.0)

    def __call__(self, head, rng):
        brain = head.labels > 0
        rim = max(1, int(round(_uniform(rng, self.rim_mm) / head.voxel_mm)))
        draw = rng.random()
        mask = brain
        if draw < self.dilate_share:
            grown = ndimage.binary_dilation(brain, iterations=rim)
            patches = anatomy.waves(head.points, rng, 3, (40.0, 120.0), 1.0) > rng.uniform(-1.0, 0.3)
            mask = brain | (grown & patches)
            head.labels[mask & ~brain] = DURA
        elif draw < self.dilate_share + self.erode_share:
            mask = ndimage.binary_erosion(brain, iterations=rim) | np.isin(head.labels, tuple(CLASS_OF))
        head.labels[~mask & ~brain] = OUTSIDE  # what the scanner sees beyond the mask (blurred in, then cut)
        head.mask = mask


@dataclass(frozen=True)
class DuraAndScalp:
    """Paints what skull-stripping left (dura, sinuses) and the scalp beyond the mask (blurred in at its edge).

    Dura and the venous sinuses enhance: on T1c the rim is, in
    `enhancing_share` of the heads, as bright as enhancing tumour.
    """

    name = "dura"
    enhancing_share: float = 0.6

    def __call__(self, head, rng):
        dura, outside = head.labels == DURA, head.labels == OUTSIDE
        for modality in MODALITIES:
            image = head.images[modality]
            brain = image[head.labels > 0]
            top = float(np.percentile(brain, 99)) if brain.size else 1.0
            level = (top * rng.uniform(1.0, 1.6) if modality == "t1ce" and rng.random() < self.enhancing_share
                     else top * rng.uniform(0.1, 0.9))
            image[dura] = level * (1 + 0.1 * rng.standard_normal(int(dura.sum()), dtype=np.float32))
            image[outside] = top * rng.uniform(0.0, 1.0)


@dataclass(frozen=True)
class Scanner:
    """Per modality: thick-slice blur, registration blur, bias field, gamma, Rician noise, intensity scale.

    Noise levels are per 1 mm voxel; a voxel of `voxel_mm` averages
    voxel_mm**3 of them. Outside the mask the image is exactly 0; inside it
    is at least 1 (an int16 image's zero is background).
    """

    name = "scanner"
    thick_share: float = 0.4
    slice_mm: tuple = (2.0, 6.0)
    blur_mm: tuple = (0.0, 1.0)
    bias: tuple = (0.0, 0.4)
    gamma_sigma: float = 0.25
    noise: tuple = (0.0, 0.07)
    scale: tuple = (50.0, 5000.0)

    def __call__(self, head, rng):
        for modality in MODALITIES:
            head.images[modality] = self._acquire(head, head.images[modality], rng)

    def _acquire(self, head, image, rng):
        voxel = head.voxel_mm
        sigma = np.full(3, _uniform(rng, self.blur_mm) / voxel)
        if rng.random() < self.thick_share:  # a thick-slice acquisition resampled to isotropic voxels
            sigma[rng.integers(3)] = _uniform(rng, self.slice_mm) / 2.355 / voxel
        if sigma.max() > 0.05:
            image = ndimage.gaussian_filter(image, sigma)
        image = np.clip(image, 0.0, None) / max(float(image.max()), 1e-6)
        image = image ** np.float32(math.exp(rng.normal(0.0, self.gamma_sigma)))
        bias = np.exp(anatomy.waves(head.points, rng, 3, (120.0, 300.0), _uniform(rng, self.bias)))
        level = np.float32(_uniform(rng, self.noise) / voxel**1.5)
        real = image * bias + level * rng.standard_normal(head.shape, dtype=np.float32)
        imaginary = level * rng.standard_normal(head.shape, dtype=np.float32)
        magnitude = np.sqrt(real**2 + imaginary**2)
        scaled = np.clip(magnitude * np.float32(_uniform(rng, self.scale)), 1, 32767)
        return np.where(head.mask, scaled, 0).astype(np.int16)


# --------------------------------------------------------------------------- generators

# The first stage of the shipped model's training, draw for draw (tools/train_pretrained.py): no enhancing
# mimics, few dura rims.
BASIC = (Pose(), Tumours(), Warp(), Atrophy(), GrowTumours(), Vessels(), Contrasts(), SkullStrip(), Scanner())
# BASIC with the enhancing mimics real T1c scans show (tubular vessels, an enhancing dura rim), more dura
# rims: the second stage.
MIMICS = (Pose(), Tumours(), Warp(), Atrophy(), GrowTumours(), Vessels(), VesselTubes(), Contrasts(),
          SkullStrip(dilate_share=0.5), DuraAndScalp(), Scanner())
# MIMICS with what real scans showed as false positives: ventricles of other shapes, FLAIR-bright healthy
# tissue (periventricular caps, cortical rim, white-matter spots, unsuppressed CSF), choroid plexus. Each step draws from its own stream, so
# these heads are MIMICS' heads with those two steps added.
DEFAULT = (Pose(), Tumours(), Warp(), Atrophy(), VentricleShapes(), GrowTumours(), Vessels(), VesselTubes(),
           Contrasts(), HealthyHyperintensities(), ChoroidPlexus(), SkullStrip(dilate_share=0.5), DuraAndScalp(),
           Scanner())
# Held-out heads: other ranges and another mix of tumours, to score on heads not drawn from the training ones.
HELDOUT = (Pose(rotation_degrees=15.0, scale=(0.8, 1.08)), Tumours(type_weights=(0.3, 0.3, 0.1, 0.15, 0.15),
                                                                  whole_ml=(5.0, 200.0), mass_effect=0.5),
           Warp(deformation_mm=10.0), Atrophy(sulci_mm=(0.0, 3.0), ventricles_mm=(-1.0, 6.0)), GrowTumours(),
           Vessels(count=(10, 50)), VesselTubes(count=(20, 50)), Contrasts(jitter=0.12, random_share=0.0),
           SkullStrip(dilate_share=0.3), DuraAndScalp(enhancing_share=0.5),
           Scanner(noise=(0.01, 0.05), scale=(100.0, 3000.0)))
GENERATORS = {"default": DEFAULT, "heldout": HELDOUT, "basic": BASIC, "mimics": MIMICS}


def make_case(shape=None, seed=0, transforms=DEFAULT, voxel_mm=1.0):
    """Generates one head.

    Args:
        shape: (D, H, W) voxels of `voxel_mm` (None: BraTS's 240 x 240 x 155
            mm field of view, anatomy.grid_shape); the brain is centred in it.
        seed: int or sequence of ints; each transform draws from stream(seed, its name).
        transforms: a tuple of transforms (DEFAULT, HELDOUT or your own) or a GENERATORS name.
        voxel_mm: isotropic voxel size in mm (0.5-4).

    Returns:
        images: dict modality -> int16 (D, H, W), 0 outside the skull-stripping mask.
        classes: uint8 (D, H, W): 0 background, 1 NCR/NETC, 2 ED, 3 ET.
    """
    if isinstance(transforms, str):
        if transforms not in GENERATORS:
            raise ValueError(f"unknown generator {transforms!r}; expected one of {', '.join(GENERATORS)}")
        transforms = GENERATORS[transforms]
    if not 0.5 <= voxel_mm <= 4.0:
        raise ValueError(f"voxel size must be 0.5-4 mm, got {voxel_mm}")
    shape = anatomy.grid_shape(voxel_mm) if shape is None else tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    head = Head(shape=shape, voxel_mm=float(voxel_mm))
    for transform in transforms:
        transform(head, stream(seed, transform.name))
    classes = np.zeros(shape, dtype=np.uint8)
    for label, cls in CLASS_OF.items():
        classes[head.labels == label] = cls
    return head.images, classes
