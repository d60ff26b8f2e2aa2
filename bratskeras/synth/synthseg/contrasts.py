"""SynthSeg stage 3, intensities: each label painted per modality (`Contrasts`), and tumour as real scans show it.

`Contrasts` draws Gaussian intensities per label over wide ranges, keeping
only the contrasts that define the BraTS classes. Tumour that is harder to
see than `Contrasts` paints it, as real scans show it, is painted after it:
moderately enhancing ET (`FaintEnhancement`), oedema fading toward its edge
(`FadingOedema`), ET near-isointense on FLAIR and T2
(`IsointenseEnhancement`) and oedema only a little brighter than parenchyma
on T2 (`SubtleT2Oedema`); classes never change. Healthy structures that look
like tumour (the mimics) are in `mimics`.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bratskeras.synth import anatomy
from bratskeras.synth.synthseg.labelmap import (
    CLASS_OF,
    CSF,
    CYST,
    DURA,
    ENHANCING,
    GM_CLUSTERS,
    HEALTHY,
    LABELS,
    MODALITIES,
    NECROSIS,
    NON_ENHANCING,
    OEDEMA_A,
    OEDEMA_B,
    OUTSIDE,
    PARENCHYMA,
    VESSEL,
    WM_CLUSTERS,
    check_range,
    check_share,
    uniform,
)

# Typical means per modality on a 0..1 scale (anatomy.CONTRASTS' tissues): CSF, GM, WM.
_BASE = {m: dict(zip(("csf", "gm", "wm"), anatomy.CONTRASTS[m][:3])) for m in MODALITIES}


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
            spread = uniform(rng, self.spread, size=LABELS).astype(np.float32)
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
        for labels, tissue in ((CSF, "csf"), (GM_CLUSTERS, "gm"), (WM_CLUSTERS, "wm")):
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
        csf = means[list(CSF)].mean()
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


def position_level(image, parenchyma, level):
    """The intensity `level` of the way from the parenchyma's median (0) to its 99th percentile (1)."""
    low, high = np.percentile(image[parenchyma], (50, 99))
    return low + level * (high - low)


@dataclass(frozen=True)
class FaintEnhancement:
    """In `share` of the heads, enhancing tumour only moderately bright on T1c; painted after `Contrasts`.

    `Contrasts` puts ET above every healthy tissue. On real BraTS scans the
    enhancing rim's T1c often lies between the healthy parenchyma's median and
    its 99th percentile, in some tumours below that median: on public cases
    the ET the stage-3 model missed had a median (x - p50) / (p99 - p50) of
    -0.2 to 0.5 (p50, p99 of the healthy brain), the ET it found 0.4 to 1.6.
    The step shifts the T1c of the ET voxels (noise and texture kept) so their
    mean lies `level` of the way from the parenchyma's median to its 99th
    percentile, and never below the brightest necrosis, non-enhancing tumour
    or oedema + `margin` (+ `margin_sd` of that class's standard deviation:
    with 0, the default, ET may sit within the texture of the tumour around
    it, and the stage-7 model, trained so, called brighter patches of oedema
    and of non-enhancing tumour ET: 925 and 1,925 voxels on two generated
    heads without ET, 6,300-15,600 on two real low-grade gliomas): ET stays
    brighter than the tumour around it, the contrast that defines the class.
    Classes unchanged.
    """

    name = "faint_enhancement"
    share: float = 0.5
    level: tuple = (-0.2, 0.9)
    margin: float = 0.05
    margin_sd: float = 0.0  # and above the tumour around's mean + margin_sd of its standard deviations

    def __post_init__(self):
        check_share("share", self.share)
        check_range("level", self.level, -1.0, 2.0)
        if not 0.0 <= self.margin_sd <= 10.0:
            raise ValueError(f"margin_sd must be within [0, 10], got {self.margin_sd}")

    def __call__(self, head, rng):
        faint, level = rng.random() < self.share, uniform(rng, self.level)  # both drawn: a stable stream
        enhancing = head.labels == ENHANCING
        if not faint or not enhancing.any():
            return
        t1c = head.images["t1ce"]
        masks = (head.labels == label for label in (NECROSIS, NON_ENHANCING, OEDEMA_A, OEDEMA_B))
        around = [t1c[mask].mean() + self.margin_sd * t1c[mask].std() for mask in masks if mask.any()]
        level_mean = position_level(t1c, np.isin(head.labels, PARENCHYMA), level)
        target = max([level_mean] + [mean + self.margin for mean in around])
        t1c[enhancing] += np.float32(target - t1c[enhancing].mean())


@dataclass(frozen=True)
class FadingOedema:
    """Oedema that fades toward its outer edge on FLAIR and T2, painted after `Contrasts`; classes unchanged.

    `Contrasts` paints oedema clearly above every healthy tissue, all through.
    Real oedema is brightest beside the tumour core and fades outward, and the
    BraTS references still call the faint fringe oedema: on public BraTS cases
    the oedema the stage-3 model missed (median 7 mm further out than what it
    found) had a median FLAIR (x - p50) / (p99 - p50) of 0.6-1.3 (p50, p99 of
    the healthy brain), the oedema it found 1.0-2.6. In `share` of the heads,
    each oedema voxel's FLAIR and T2 move toward `edge` (on that scale, drawn
    per modality) by w = g ** gamma, g = d_core / (d_core + d_out): 0 next to
    the core, 1 at the oedema's outer border (d_core: mm to the nearest
    necrosis, cyst, non-enhancing or enhancing voxel; d_out: to the nearest
    voxel outside the tumour). Only ever darker: noise and texture are kept.
    """

    name = "fading_oedema"
    share: float = 0.6
    edge: tuple = (0.2, 1.0)
    gamma: tuple = (0.5, 2.0)

    def __post_init__(self):
        check_share("share", self.share)
        check_range("edge", self.edge, -1.0, 3.0)
        check_range("gamma", self.gamma, 0.1, 10.0)

    def __call__(self, head, rng):
        fading, gamma, edges = rng.random() < self.share, uniform(rng, self.gamma), uniform(rng, self.edge, 2)
        oedema = np.isin(head.labels, (OEDEMA_A, OEDEMA_B))
        if not fading or not oedema.any():
            return
        core = np.isin(head.labels, (NECROSIS, NON_ENHANCING, CYST, ENHANCING))
        tumour = core | oedema
        d_out = ndimage.distance_transform_edt(tumour)[oedema]
        if core.any():
            d_core = ndimage.distance_transform_edt(~core)[oedema]
            towards_edge = d_core / (d_core + d_out)
        else:  # oedema alone: fade from its deepest voxel outward
            towards_edge = 1.0 - d_out / d_out.max()
        weight = (towards_edge ** gamma).astype(np.float32)
        parenchyma = np.isin(head.labels, PARENCHYMA)
        for modality, edge in zip(("flair", "t2"), edges):
            image = head.images[modality]
            shift = position_level(image, parenchyma, edge) - image[oedema].mean()
            if shift < 0:
                image[oedema] += weight * np.float32(shift)


@dataclass(frozen=True)
class IsointenseEnhancement:
    """In `share` of the heads, enhancing tumour only a little brighter than healthy brain on FLAIR and T2.

    `Contrasts` paints ET above the brightest parenchyma on FLAIR and T2. On
    real glioblastomas the enhancing rim is often near-isointense there: on
    one public BraTS 2018 case the ET the stage-3 model missed (predicted
    background) had a median FLAIR (x - p50) / (p99 - p50) of 0.11, what it
    found 0.49. The step shifts the ET voxels' FLAIR and T2 (noise and texture
    kept) so their mean lies `level` (drawn per modality) of the way from the
    parenchyma's median to its 99th percentile; only ever darker. The class
    stays defined by T1c, where ET is brighter than the tumour around it.
    """

    name = "isointense_enhancement"
    share: float = 0.4
    level: tuple = (-0.1, 0.6)

    def __post_init__(self):
        check_share("share", self.share)
        check_range("level", self.level, -1.0, 2.0)

    def __call__(self, head, rng):
        isointense, levels = rng.random() < self.share, uniform(rng, self.level, 2)
        enhancing = head.labels == ENHANCING
        if not isointense or not enhancing.any():
            return
        parenchyma = np.isin(head.labels, PARENCHYMA)
        for modality, level in zip(("flair", "t2"), levels):
            image = head.images[modality]
            shift = position_level(image, parenchyma, level) - image[enhancing].mean()
            if shift < 0:
                image[enhancing] += np.float32(shift)


@dataclass(frozen=True)
class SubtleT2Oedema:
    """In `share` of the heads, oedema and non-enhancing tumour only a little brighter than parenchyma on T2.

    `Contrasts` paints oedema on T2 0.1-0.6 above the brightest parenchyma,
    about as bright as CSF or brighter. On 40 public BraTS 2018 scans with
    manual references (`tools/error_analysis.py`), the oedema the stage-5
    model missed had a median T2 0.16 of the way from the parenchyma's
    median (0) to CSF's (1) (p10-p90 over the scans 0.08-0.27), the oedema
    it found 0.43 (0.22-0.80): it had learned oedema as T2-bright as fluid,
    while on real scans it is often only a little brighter than brain. The step
    shifts each class's T2 (oedema both clusters together, non-enhancing
    tumour apart; noise, texture and fading kept) so its mean lies `level`
    (drawn per class) of the way from the parenchyma's median to the CSF's
    median; only ever darker, and not in heads whose CSF is not brighter than
    the parenchyma on T2 (fully random contrasts), where that scale is
    undefined. FLAIR keeps the class bright. Classes unchanged.
    """

    name = "subtle_t2_oedema"
    share: float = 0.5
    level: tuple = (0.05, 0.6)

    def __post_init__(self):
        check_share("share", self.share)
        check_range("level", self.level, -1.0, 2.0)

    def __call__(self, head, rng):
        subtle, levels = rng.random() < self.share, uniform(rng, self.level, 2)
        csf = np.isin(head.labels, CSF)
        if not subtle or not csf.any():
            return
        t2 = head.images["t2"]
        parenchyma, fluid = np.median(t2[np.isin(head.labels, PARENCHYMA)]), np.median(t2[csf])
        if fluid <= parenchyma:
            return
        for labels, level in (((OEDEMA_A, OEDEMA_B), levels[0]), ((NON_ENHANCING,), levels[1])):
            mask = np.isin(head.labels, labels)
            if mask.any():
                shift = parenchyma + level * (fluid - parenchyma) - t2[mask].mean()
                if shift < 0:
                    t2[mask] += np.float32(shift)
