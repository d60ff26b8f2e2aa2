"""SynthSeg stage 4, acquisition: the skull-stripping mask, what it leaves, and the scanner.

`SkullStrip` cuts the mask (exact, a rim of dura left, or cortex cut off),
`DuraAndScalp` paints what it left and the scalp beyond it, `LowResolution`
blurs one or two modalities as an old thick-slice acquisition, and `Scanner`
blurs (thick slices, registration), adds a bias field, gamma, Rician noise
and an arbitrary intensity scale, and writes int16.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bratskeras.synth import anatomy
from bratskeras.synth.synthseg.labelmap import CLASS_OF, DURA, MODALITIES, OUTSIDE, check_range, check_share, uniform


@dataclass(frozen=True)
class SkullStrip:
    """The skull-stripping mask: exact, a rim of dura left (dilated), or cortex cut off (eroded)."""

    name = "skull_strip"
    dilate_share: float = 0.35
    erode_share: float = 0.15
    rim_mm: tuple = (1.0, 4.0)

    def __call__(self, head, rng):
        brain = head.labels > 0
        rim = max(1, int(round(uniform(rng, self.rim_mm) / head.voxel_mm)))
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
class LowResolution:
    """In `share` of the heads, one or two modalities acquired at a low resolution; run before `Scanner`.

    `Scanner` blurs a modality by at most 1 mm in-plane and, in some, along
    slices of 2-6 mm. BraTS's 2013 cases, like clinical scans of their era,
    carry a FLAIR or T1 of thick slices that is blurred in-plane too once
    resampled to 1 mm: on two public ones (Brats18_2013_3_1, _11_1) whose
    FLAIR and T1 are visibly so, the stage-5 model found under half of the
    tumour (WT recall 0.45, 0.48) though T1c showed a ring-enhancing lesion.
    Each chosen modality is blurred by a Gaussian of FWHM `in_plane_mm` and,
    along one random axis, `slice_mm`, so the network learns to read the
    tumour from the sharp modalities when one is poor. Classes unchanged.
    """

    name = "low_resolution"
    share: float = 0.3
    modalities: tuple = (1, 2)
    in_plane_mm: tuple = (1.5, 3.5)
    slice_mm: tuple = (4.0, 8.0)

    def __post_init__(self):
        check_share("share", self.share)
        check_range("modalities", self.modalities, 1, len(MODALITIES))
        check_range("in_plane_mm", self.in_plane_mm, 0.0, 20.0)
        check_range("slice_mm", self.slice_mm, 0.0, 20.0)

    def __call__(self, head, rng):
        low = rng.random() < self.share
        count = int(rng.integers(self.modalities[0], self.modalities[1] + 1))
        chosen = rng.choice(len(MODALITIES), size=count, replace=False)
        for index in chosen:
            fwhm = np.full(3, uniform(rng, self.in_plane_mm))
            fwhm[rng.integers(3)] = uniform(rng, self.slice_mm)
            if low:
                sigma = fwhm / 2.355 / head.voxel_mm
                head.images[MODALITIES[index]] = ndimage.gaussian_filter(head.images[MODALITIES[index]], sigma)


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
        sigma = np.full(3, uniform(rng, self.blur_mm) / voxel)
        if rng.random() < self.thick_share:  # a thick-slice acquisition resampled to isotropic voxels
            sigma[rng.integers(3)] = uniform(rng, self.slice_mm) / 2.355 / voxel
        if sigma.max() > 0.05:
            image = ndimage.gaussian_filter(image, sigma)
        image = np.clip(image, 0.0, None) / max(float(image.max()), 1e-6)
        image = image ** np.float32(math.exp(rng.normal(0.0, self.gamma_sigma)))
        bias = np.exp(anatomy.waves(head.points, rng, 3, (120.0, 300.0), uniform(rng, self.bias)))
        level = np.float32(uniform(rng, self.noise) / voxel**1.5)
        real = image * bias + level * rng.standard_normal(head.shape, dtype=np.float32)
        imaginary = level * rng.standard_normal(head.shape, dtype=np.float32)
        magnitude = np.sqrt(real**2 + imaginary**2)
        scaled = np.clip(magnitude * np.float32(uniform(rng, self.scale)), 1, 32767)
        return np.where(head.mask, scaled, 0).astype(np.int16)
