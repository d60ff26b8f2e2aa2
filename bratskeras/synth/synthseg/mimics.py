"""SynthSeg stage 3, healthy mimics: what looks like tumour on some modality but is not, labelled healthy.

Enhancing vessels (`Vessels`, `VesselTubes`: labels painted before
`Contrasts`), FLAIR-bright healthy tissue (`HealthyHyperintensities`), CSF
that FLAIR's inversion nulled only in part (`UnsuppressedCSF`) and choroid
plexus (`ChoroidPlexus`), painted into the images after `Contrasts`. A
network needs to have seen each labelled healthy: on public real scans each
was where a shipped model's false positives lay. Classes never change here
but for the vessel labels.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bratskeras.synth import anatomy
from bratskeras.synth.synthseg.contrasts import position_level
from bratskeras.synth.synthseg.labelmap import (
    CSF,
    GM_CLUSTERS,
    HEALTHY,
    MODALITIES,
    PARENCHYMA,
    SULCAL_CSF,
    VENTRICLE,
    VESSEL,
    WM_CLUSTERS,
    check_range,
    check_share,
    uniform,
)


@dataclass(frozen=True)
class Vessels:
    """Enhancing healthy structures (vessels in sulci, choroid plexus): bright on T1c, not tumour."""

    name = "vessels"
    count: tuple = (5, 40)
    radius_mm: tuple = (0.8, 2.5)

    def __call__(self, head, rng):
        csf = np.argwhere(np.isin(head.labels, CSF))
        if not len(csf):
            return
        seeds = np.zeros(head.shape, dtype=bool)
        chosen = csf[rng.integers(len(csf), size=int(uniform(rng, self.count)))]
        seeds[tuple(chosen.T)] = True
        distance = ndimage.distance_transform_edt(~seeds) * head.voxel_mm
        vessels = (distance <= uniform(rng, self.radius_mm)) & np.isin(head.labels, HEALTHY)
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
        starts = np.argwhere(np.isin(head.labels, CSF))
        if not len(starts):
            return
        tubes = np.zeros(head.shape, dtype=bool)
        voxel = head.voxel_mm
        for start in starts[rng.integers(len(starts), size=int(uniform(rng, self.count)))]:
            steps = max(2, int(uniform(rng, self.length_mm) / voxel))
            turns = rng.normal(size=(steps, 3)).cumsum(0) * 0.3 + rng.normal(size=3)
            path = start + np.cumsum(turns / np.linalg.norm(turns, axis=1, keepdims=True), axis=0)
            inside = np.all((path >= 0) & (path < np.asarray(head.shape) - 0.5), axis=1)
            tubes[tuple(np.round(path[inside]).astype(int).T)] = True
        radius = uniform(rng, self.radius_mm) / voxel
        if radius > 0.75:
            tubes = ndimage.binary_dilation(tubes, iterations=int(round(radius)))
        head.labels[tubes & np.isin(head.labels, HEALTHY)] = VESSEL


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
            check_share(name, getattr(self, name))
        check_range("caps_mm", self.caps_mm, 0.0, 20.0)
        check_range("rim_mm", self.rim_mm, 0.0, 10.0)

    def __call__(self, head, rng):
        bright = np.zeros(head.shape, dtype=bool)
        healthy = np.isin(head.labels, PARENCHYMA)
        voxel = head.voxel_mm
        if rng.random() < self.caps_share:
            ventricles = head.labels == VENTRICLE
            band = ndimage.distance_transform_edt(~ventricles) * voxel <= uniform(rng, self.caps_mm)
            patches = anatomy.waves(head.points, rng, 3, (30.0, 90.0), 1.0) > rng.uniform(-1.0, 0.4)
            bright |= band & patches & healthy
        if rng.random() < self.rim_share:
            depth = ndimage.distance_transform_edt(head.labels > 0) * voxel
            patches = anatomy.waves(head.points, rng, 3, (40.0, 120.0), 1.0) > rng.uniform(-1.0, 0.5)
            bright |= (depth <= uniform(rng, self.rim_mm)) & patches & np.isin(head.labels, GM_CLUSTERS + (SULCAL_CSF,))
        if rng.random() < self.spots_share:
            white = np.argwhere(np.isin(head.labels, WM_CLUSTERS))
            if len(white):
                seeds = np.zeros(head.shape, dtype=bool)
                seeds[tuple(white[rng.integers(len(white), size=int(uniform(rng, self.spots)))].T)] = True
                distance = ndimage.distance_transform_edt(~seeds) * voxel
                bright |= (distance <= uniform(rng, self.spot_mm)) & healthy
        parenchyma = np.isin(head.labels, PARENCHYMA)
        if bright.any():
            weight = np.minimum(np.clip(1.0 + anatomy.waves(head.points, rng, 3, (5.0, 20.0), 0.3), 0.5, 1.5), 1.0)
            darker = rng.uniform(0.8, 1.0)
            for modality in MODALITIES:
                image = head.images[modality]
                if modality in ("flair", "t2"):
                    level = np.percentile(image[parenchyma], 95) + uniform(rng, self.gain)
                    image[bright] += (level - image[bright]) * weight[bright]
                else:
                    image[bright] *= darker
        if rng.random() < self.flow_share:
            csf = np.isin(head.labels, CSF)
            patches = anatomy.waves(head.points, rng, 3, (20.0, 60.0), 1.0) > rng.uniform(0.0, 0.7)
            flow = csf & patches
            flair = head.images["flair"]
            flair[flow] = np.percentile(flair[parenchyma], rng.uniform(30, 99)) * rng.uniform(0.8, 1.3)


@dataclass(frozen=True)
class UnsuppressedCSF:
    """In `share` of the heads, FLAIR's inversion nulls CSF only in part; painted after `Contrasts`; classes unchanged.

    `Contrasts` paints CSF dark on FLAIR, and `HealthyHyperintensities` lifts
    only patches of it to one level. On many real FLAIR scans CSF is nulled
    unevenly all over: on the 25 CBICA scans among 40 public BraTS 2018
    training cases (`tools/error_analysis.py`), the upper quartile of the CSF-
    like voxels (T2 above the healthy brain's p95, T1 below its p10) lay at
    -0.42 to 0.39 of the way from the healthy brain's FLAIR median to its 99th
    percentile in 21 of them (against -1.2 on a well-nulled TCIA scan), and
    the stage-5 model called 1,000-33,000 of those voxels tumour in each
    (median 7,000): CSF-bright on T2, dark on T1 and grey on FLAIR is what
    oedema looks like, except where it is. Each CSF voxel's FLAIR moves toward
    `level` (drawn on the healthy parenchyma's p50..p99 scale) by a smooth
    weight in [0, 1]: random waves (`patch_mm` wavelengths) raised by an
    offset drawn from `coverage` and, in `inferior_share` of those heads, a
    weight growing toward the skull base (1 at `inferior_mm` below the brain's
    centre: the basal cisterns, fourth ventricle and temporal horns, where
    flow spoils the nulling most).
    Only ever brighter; T2, T1 and T1c unchanged (CSF stays CSF there).
    """

    name = "unsuppressed_csf"
    share: float = 0.5
    level: tuple = (-0.3, 1.0)
    coverage: tuple = (-0.3, 0.8)
    patch_mm: tuple = (20.0, 80.0)
    inferior_share: float = 0.5
    inferior_mm: float = 60.0

    def __post_init__(self):
        check_share("share", self.share)
        check_share("inferior_share", self.inferior_share)
        check_range("level", self.level, -1.0, 3.0)
        check_range("coverage", self.coverage, -1.0, 1.0)
        check_range("patch_mm", self.patch_mm, 1.0, 500.0)
        if not self.inferior_mm > 0:
            raise ValueError(f"inferior_mm must be > 0, got {self.inferior_mm}")

    def __call__(self, head, rng):
        unsuppressed, level, offset = rng.random() < self.share, uniform(rng, self.level), uniform(rng, self.coverage)
        inferior = rng.random() < self.inferior_share
        csf = np.isin(head.labels, CSF)
        if not unsuppressed or not csf.any():
            return
        weight = anatomy.waves(head.points, rng, 3, self.patch_mm, 1.0) + np.float32(offset)
        if inferior:  # points[2]: mm above the brain's centre (the grid's k axis runs inferior to superior)
            weight = np.maximum(weight, -head.points[2] / np.float32(self.inferior_mm))
        weight = np.clip(weight[csf], 0.0, 1.0)
        flair = head.images["flair"]
        target = np.float32(position_level(flair, np.isin(head.labels, PARENCHYMA), level))
        flair[csf] += weight * np.maximum(target - flair[csf], 0.0)


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
        seeds[tuple(ventricles[rng.integers(len(ventricles), size=int(uniform(rng, self.tufts)))].T)] = True
        distance = ndimage.distance_transform_edt(~seeds) * head.voxel_mm
        tufts = (distance <= uniform(rng, self.radius_mm)) & (head.labels == VENTRICLE)
        healthy = np.isin(head.labels, HEALTHY) & ~tufts
        for modality in MODALITIES:
            image = head.images[modality]
            if modality == "t1ce":
                level = np.percentile(image[healthy], 99.5) + rng.uniform(0.1, 0.8)
            else:
                level = np.percentile(image[healthy], rng.uniform(10, 95))
            image[tufts] = level * (1 + 0.08 * rng.standard_normal(int(tufts.sum()), dtype=np.float32))
