"""SynthSeg stage 2, tumours: the lesions drawn (`Tumours`), then painted into the label map (`GrowTumours`).

TUMOUR_TYPES are the ways real gliomas come: ring-enhancing glioblastoma
around necrosis, non-enhancing diffuse low-grade glioma, solid enhancing,
cystic with a thin rim, patchy enhancement in a non-enhancing core; 1 to 3
lesions, deep or cortical, pushing the tissue aside (labelmap.Warp), with
oedema (two intensity clusters) spreading along white matter.
"""

import math
from dataclasses import dataclass

import numpy as np

from bratskeras.synth import anatomy
from bratskeras.synth.synthseg.labelmap import (
    CLASS_OF,
    CYST,
    ENHANCING,
    GM_CLUSTERS,
    NECROSIS,
    NON_ENHANCING,
    OEDEMA_A,
    OEDEMA_B,
    PARENCHYMA,
    WM_CLUSTERS,
    check_range,
    template_labels,
    uniform,
)

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
        check_range("whole_ml", self.whole_ml, 0.1, 1000.0)

    def __call__(self, head, rng):
        count = 1 + rng.choice(len(self.count_weights), p=np.asarray(self.count_weights) / sum(self.count_weights))
        kind = rng.choice(TUMOUR_TYPES, p=np.asarray(self.type_weights) / sum(self.type_weights))
        labels = template_labels()
        for index in range(count):
            pool = GM_CLUSTERS if rng.random() < self.cortical else WM_CLUSTERS
            candidates = np.argwhere(np.isin(labels[::3, ::3, ::3], pool)) * 3
            voxel = candidates[rng.integers(len(candidates))].astype(np.float64)
            centre_mm = np.linalg.solve(head.to_template, voxel - head.template_centre)
            volume = math.exp(uniform(rng, np.log(self.whole_ml)))
            if index:  # satellites are smaller than the first lesion
                volume *= rng.uniform(0.05, 0.5)
            mixed = rng.random() >= 1.0 - self.mixed_share
            head.lesions.append({"type": rng.choice(TUMOUR_TYPES) if mixed else kind,
                                 "centre": centre_mm.astype(np.float32), "whole_ml": volume,
                                 "push": rng.uniform(0.0, self.mass_effect)})



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
        core_share = uniform(rng, (0.2, 0.9) if lesion["type"] == "low_grade" else self.core_fraction)
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
        inner = relative <= uniform(rng, self.necrosis_fraction) ** (1 / 3)
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
