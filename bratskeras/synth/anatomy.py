"""Phantoms on real brain anatomy: the MNI152 2009 template, deformed, with a tumor.

The anatomy is the ICBM 2009a symmetric MNI152 template (1 mm, skull-stripped
T1 and grey/white-matter probability maps) as nilearn ships it inside its
wheel (the optional extra `bratskeras[anatomy]`); the files are read directly
with nibabel, nothing is downloaded. The template has no CSF map: CSF is the
brain mask (T1 > 0) minus grey and white matter, which gives the ventricles
and the sulci.

One case (`make_case`), all draws from one seeded generator:

1. geometry: a random affine (rotation, per-axis scale) and a smooth random
   displacement field (a few low-frequency waves), plus the tumor's mass
   effect (tissue pushed away from its centre), map each output voxel to the
   template; the tissue maps are resampled there (trilinear).
2. tumor: a centre in deep white matter; an irregular core whose volume is a
   drawn fraction of the whole tumor; edema grows from the core along white
   matter (its distance is stretched where white matter is sparse, so it stops
   at the cortex and spares CSF); the core is an enhancing rim (ET) around a
   necrotic centre (NCR) of drawn size. The whole-tumor volume is drawn
   log-uniformly in `AnatomySettings.whole_tumor_ml` (BraTS: about 10-250 ml).
3. contrasts: per-modality means of CSF, GM, WM, NCR, ED and ET following real
   MRI (ET bright on T1ce, NCR dark on T1ce and bright on T2, edema bright on
   FLAIR and T2, CSF dark on FLAIR and T1 and bright on T2), mixed by the
   tissue probabilities (partial volume), each mean jittered per case, with a
   smooth texture inside the tumor.
4. scanner: per modality a smooth multiplicative bias field, a slight blur,
   a gamma (contrast) change, Rician-like noise and an intensity scale; the
   background outside the brain is exactly 0 (skull-stripped, as BraTS).

Arrays are (D, H, W) = NIfTI axes (i, j, k) on BraTS's grid: 1 mm voxels,
affine diag(-1, -1, 1) (the template's left-right and anterior-posterior axes
are reversed to match it). A shape smaller than the brain is a window
centred on the tumor (cheap cases for the tests; the scale of everything
stays that of real scans). `voxel_mm` > 1 writes the same heads on a coarser
grid (`grid_shape`): the demo trains on 3 mm heads, each 1/27 of a 1 mm
one to make, write and cache. Everything is drawn in mm, so
a case keeps its anatomy, tumor volume (ml), blur and bias field; the noise
per voxel falls with the voxel's volume, as a scanner's does (and as averaging
2 x 2 x 2 voxels of a 1 mm scan does).
"""

import functools
import importlib.util
import itertools
import math
import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bratskeras.core.defaults import BRATS_SHAPE
from bratskeras.core.errors import ConfigError
from bratskeras.platform.extras import install_command, require_extra

BRATS_FIELD_MM = BRATS_SHAPE  # BraTS's grid is 1 mm: its field of view in mm
INSTALL_HINT = install_command("anatomy")
_TEMPLATE_FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}
# Flip of the template's i (left-right) and j (anterior-posterior) axes onto BraTS's diag(-1, -1, 1) grid.
_AXIS_SIGNS = np.array([-1.0, -1.0, 1.0])

# Mean intensity per tissue and modality on a 0..1 scale; order CSF, GM, WM, NCR, ED, ET.
_TISSUES = ("csf", "gm", "wm", "ncr", "ed", "et")
CONTRASTS = {
    "flair": (0.12, 0.58, 0.45, 0.45, 0.92, 0.72),
    "t1": (0.22, 0.55, 0.78, 0.28, 0.45, 0.52),
    "t1ce": (0.22, 0.55, 0.78, 0.18, 0.47, 1.00),
    "t2": (1.00, 0.62, 0.40, 0.88, 0.82, 0.60),
}


@dataclass(frozen=True)
class AnatomySettings:
    """Ranges the generator draws each case's parameters from (uniform unless said).

    Attributes:
        rotation_degrees: max rotation about each axis (+-).
        scale: per-axis head scale range (the MNI152 brain, about 1.9 l with
            its CSF, is larger than most patients'; 0.85-0.98 gives 1.2-1.8 l).
        deformation_mm: max amplitude of the smooth displacement field.
        mass_effect: max fraction by which tissue near the tumor is pushed outwards.
        whole_tumor_ml: whole-tumor volume range, drawn log-uniformly.
        core_fraction: tumor core (NCR + ET) as a share of the whole tumor.
        necrosis_fraction: NCR as a share of the core (0: a solid enhancing core).
        contrast_jitter: relative spread of each tissue's mean per case.
        bias: max amplitude of the multiplicative bias field (0.2 = +-20 %).
        noise: range of the noise level (fraction of white matter's intensity).
        blur_mm: range of the Gaussian blur sigma per modality.
        gamma: range of the per-modality gamma applied to the 0..1 intensities.
        intensity_scale: range of the factor to int16 per modality.
    """

    rotation_degrees: float = 8.0
    scale: tuple = (0.85, 0.98)
    deformation_mm: float = 4.0
    mass_effect: float = 0.3
    whole_tumor_ml: tuple = (10.0, 250.0)
    core_fraction: tuple = (0.15, 0.6)
    necrosis_fraction: tuple = (0.0, 0.7)
    contrast_jitter: float = 0.15
    bias: float = 0.35
    noise: tuple = (0.01, 0.08)
    blur_mm: tuple = (0.0, 1.2)
    gamma: tuple = (0.75, 1.35)
    intensity_scale: tuple = (200.0, 4000.0)


# The demo trains on DEFAULT and scores on HELDOUT: other deformation, contrast
# and scanner ranges, and tumors of other sizes, so the score is not on cases
# drawn from the training distribution: larger rotations, scalings,
# deformations and mass effects, larger cores and more necrosis. DEFAULT's
# scanner and contrast ranges are the wider ones (domain randomisation, as
# SynthSeg trains its models): trained on narrower ones, the model took a
# strong bias field on an unseen head for tumor more often (README, #16).
DEFAULT = AnatomySettings()
HELDOUT = AnatomySettings(rotation_degrees=12.0, scale=(0.82, 1.02), deformation_mm=6.0, mass_effect=0.4,
                          whole_tumor_ml=(15.0, 200.0), core_fraction=(0.2, 0.7), necrosis_fraction=(0.1, 0.8),
                          contrast_jitter=0.12, bias=0.3, noise=(0.02, 0.07), blur_mm=(0.3, 1.1),
                          gamma=(0.8, 1.3), intensity_scale=(200.0, 4000.0))
SETTINGS = {"default": DEFAULT, "heldout": HELDOUT}


# --------------------------------------------------------------------------- the template


def template_folder():
    """The folder inside the installed nilearn package that holds the MNI152 2009 files.

    Found without importing nilearn (nothing it could download is touched).

    Raises:
        ConfigError: nilearn is not installed, or its wheel lacks the files.
    """
    require_extra("anatomy", "the MNI152 template (anatomy phantoms)")
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"anatomy phantoms need the MNI152 template that nilearn ships: {INSTALL_HINT}")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    missing = [name for name in _TEMPLATE_FILES.values() if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise ConfigError(f"{folder}: missing {', '.join(missing)} (nilearn too old?): {INSTALL_HINT}")
    return folder


def check_available():
    """Raises ConfigError with the install hint when the template is missing; returns its folder."""
    return template_folder()


@functools.lru_cache(maxsize=1)
def load_template():
    """The template's tissue maps, read once per process (read-only afterwards).

    Returns:
        float32 (4, X, Y, Z) on the template grid (197, 233, 189), 1 mm:
        channels CSF, GM, WM probabilities (0..1, summing to the brain mask)
        and the brain mask itself.
    """
    import nibabel as nib

    maps = {name: np.asarray(nib.load(template_file(name)).dataobj, dtype=np.float32) / 255.0
            for name in _TEMPLATE_FILES}
    brain = (maps["t1"] > 0).astype(np.float32)
    gm, wm = maps["gm"] * brain, maps["wm"] * brain
    total = gm + wm
    # Where the maps overlap beyond 1 keep their proportions; the rest of the brain is CSF.
    excess = np.maximum(total, 1.0)
    gm, wm = gm / excess, wm / excess
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    stack = np.stack([csf, gm, wm, brain])
    stack.setflags(write=False)
    return stack


@functools.lru_cache(maxsize=1)
def brain_box():
    """(centre (3,), extent (3,)) of the template's brain in template voxels (computed once)."""
    coords = np.argwhere(load_template()[3] > 0)
    low, high = coords.min(0), coords.max(0)
    return (low + high) / 2.0, high - low + 1


def template_file(name):
    """Path of the template's "t1", "gm" or "wm" NIfTI file inside nilearn's wheel."""
    return os.path.join(template_folder(), _TEMPLATE_FILES[name])


# --------------------------------------------------------------------------- one case


def grid_shape(voxel_mm):
    """(D, H, W) of BraTS's 240 x 240 x 155 mm field of view at `voxel_mm` (2 mm: 120 x 120 x 78)."""
    return tuple(int(math.ceil(extent / voxel_mm)) for extent in BRATS_FIELD_MM)


def make_case(shape=BRATS_SHAPE, seed=0, settings=DEFAULT, voxel_mm=1.0):
    """Generates one case on real anatomy.

    Args:
        shape: (D, H, W) voxels of `voxel_mm`; grid_shape(voxel_mm) (BRATS_SHAPE
            at 1 mm) is the whole head, a smaller shape a window centred on the tumor.
        seed: int or sequence of ints for numpy's default_rng.
        settings: AnatomySettings (DEFAULT for training, HELDOUT for scoring).
        voxel_mm: isotropic voxel size in mm (1: BraTS's grid).

    Returns:
        images: dict modality -> int16 (D, H, W), background exactly 0.
        classes: uint8 (D, H, W): 0 background, 1 NCR, 2 ED, 3 ET.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    if not 0.5 <= voxel_mm <= 4.0:
        raise ValueError(f"voxel size must be 0.5-4 mm, got {voxel_mm}")
    rng = np.random.default_rng(seed)
    template = load_template()
    tumor_centre = _tumor_centre(template, rng)
    # Output mm -> template voxels; output voxels are `voxel_mm` mm.
    to_template = random_affine(rng, settings)
    to_template_voxels = to_template * voxel_mm
    grid_centre = _grid_centre(template, tumor_centre, to_template_voxels, shape, rng, voxel_mm)
    # Only the box that can hold the brain is computed; the rest is background.
    low, high = _brain_bounds(template, tumor_centre, to_template_voxels, grid_centre, shape, settings, voxel_mm)
    # (3, d, h, w) mm offsets from the tumor centre
    points = _output_points(high - low, grid_centre - low) * np.float32(voxel_mm)
    points = _mass_effect(points, rng, settings)
    coords = _template_coordinates(points, tumor_centre, to_template, rng, settings)
    tissue = np.stack([ndimage.map_coordinates(m, coords, order=1, mode="constant", cval=0.0, prefilter=False)
                       for m in template[:3]])  # (3, d, h, w): CSF, GM, WM
    tissue = np.concatenate([tissue, tissue.sum(0, keepdims=True)])  # + the brain (their sum)
    brain = tissue[3] > 0.5
    box_classes = _tumor(points, tissue, brain, rng, settings, voxel_mm)
    box_images = _images(tissue, box_classes, brain | (box_classes > 0), points, rng, settings, voxel_mm)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    classes = np.zeros(shape, dtype=np.uint8)
    classes[box] = box_classes
    images = {}
    for modality, volume in box_images.items():
        images[modality] = np.zeros(shape, dtype=np.int16)
        images[modality][box] = volume
    return images, classes


def _brain_bounds(template, tumor_centre, to_template_voxels, grid_centre, shape, settings, voxel_mm):
    """(low, high) int (3,) output voxels of the box that holds the deformed brain, within the grid.

    `to_template_voxels` (3, 3) maps output voxels (offsets) to template voxels.
    """
    centre, extent = brain_box()
    corners = np.array(list(itertools.product(*[(c - e / 2, c + e / 2) for c, e in zip(centre, extent)])))
    out = np.linalg.solve(to_template_voxels, (corners - tumor_centre).T).T + grid_centre
    margin = (settings.deformation_mm + 4) / voxel_mm
    low = np.clip(np.floor(out.min(0) - margin), 0, shape).astype(int)
    high = np.clip(np.ceil(out.max(0) + margin) + 1, 0, shape).astype(int)
    if (high - low < 8).any():  # a window off the brain cannot happen with a tumor centre in it; stay safe
        return np.zeros(3, dtype=int), np.asarray(shape)
    return low, high


def _tumor_centre(template, rng):
    """A template voxel (3,) in deep white matter, away from the midline's CSF."""
    wm = template[2]
    deep = ndimage.binary_erosion(wm > 0.9, iterations=3)
    candidates = np.argwhere(deep[::2, ::2, ::2]) * 2
    return candidates[rng.integers(len(candidates))].astype(np.float64)


def random_affine(rng, settings):
    """3x3 matrix: output mm -> template voxels (rotation, scale, BraTS axis flips)."""
    angles = np.radians(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees, size=3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        turn = np.eye(3)
        turn[a, a] = turn[b, b] = math.cos(angle)
        turn[a, b], turn[b, a] = -math.sin(angle), math.sin(angle)
        rotation = rotation @ turn
    # A larger head (scale > 1) samples the template more densely.
    scale = 1.0 / rng.uniform(*settings.scale, size=3)
    return np.diag(_AXIS_SIGNS) @ rotation @ np.diag(scale)


def _grid_centre(template, tumor_centre, to_template_voxels, shape, rng, voxel_mm):
    """Output voxel (3,) where the tumor centre lands.

    On an axis as large as the brain (plus margin) the brain is centred in the
    grid as in BraTS; on a smaller axis the window is centred on the tumor
    (with a little random offset). `to_template_voxels` (3, 3) maps output
    voxels to template (1 mm) voxels.
    """
    brain_centre, extent = brain_box()
    # Tumor offset from the brain centre, in output voxels.
    offset = np.linalg.solve(to_template_voxels, tumor_centre - brain_centre)
    shape = np.asarray(shape, dtype=np.float64)
    whole = shape * voxel_mm >= extent[[0, 1, 2]] + 10
    jitter = rng.uniform(-0.1, 0.1, size=3) * shape
    return np.where(whole, (shape - 1) / 2 + offset, (shape - 1) / 2 + jitter)


def _output_points(shape, grid_centre):
    """(3, D, H, W) float32 mm offsets of each output voxel from the tumor centre."""
    axes = [np.arange(n, dtype=np.float32) - np.float32(c) for n, c in zip(shape, grid_centre)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _mass_effect(points, rng, settings):
    """Pushes tissue away from the tumor centre: a voxel near it samples from closer in."""
    strength = rng.uniform(0.0, settings.mass_effect)
    radius = rng.uniform(15.0, 30.0)
    squared = (points**2).sum(0)
    return points * (1.0 - strength * np.exp(-squared / (2 * radius**2)))[None]


def waves(points, rng, count, wavelength_mm, amplitude):
    """Sum of `count` random plane waves over `points` (3, ...), max about `amplitude`."""
    field = np.zeros(points.shape[1:], dtype=np.float32)
    for _ in range(count):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        frequency = 2 * math.pi / rng.uniform(*wavelength_mm)
        phase = np.float32(rng.uniform(0, 2 * math.pi))
        projection = np.tensordot(direction.astype(np.float32), points, axes=1)
        field += np.sin(np.float32(frequency) * projection + phase)
    return field * np.float32(amplitude / count)


def _template_coordinates(points, tumor_centre, to_template, rng, settings):
    """(3, D, H, W) template voxel coordinates of each output voxel (affine + smooth displacement)."""
    displaced = np.stack([points[a] + waves(points, rng, 3, (60.0, 160.0), settings.deformation_mm)
                          for a in range(3)])
    coords = np.tensordot(to_template.astype(np.float32), displaced, axes=1)
    return coords + tumor_centre.astype(np.float32)[:, None, None, None]


def _tumor(points, tissue, brain, rng, settings, voxel_mm):
    """Classes (D, H, W) uint8: an irregular core (NCR inside an ET rim) and edema along white matter.

    Volumes come from thresholds at ranks, so the drawn whole-tumor volume is
    met exactly (to a voxel of `voxel_mm`) when the window and the brain can hold it.
    """
    csf, wm = tissue[0], tissue[2]
    radii = rng.uniform(0.75, 1.3, size=3)
    distance = np.sqrt(sum((p / r) ** 2 for p, r in zip(points, radii)))  # mm, ellipsoidal
    # Irregular borders: low-frequency waves modulate the distance.
    lobes = 1.0 + waves(points, rng, 4, (25.0, 60.0), 0.35)
    core_potential = distance / lobes
    allowed = brain & (csf < 0.6)
    voxels = int(allowed.sum())
    whole_ml = math.exp(rng.uniform(*np.log(settings.whole_tumor_ml)))
    whole = min(int(whole_ml * 1000 / voxel_mm**3), voxels // 2)
    core = max(1, int(whole * rng.uniform(*settings.core_fraction)))
    core_threshold = rank_threshold(core_potential[allowed], core)
    in_core = (core_potential <= core_threshold) & brain
    # Edema: distance beyond the core, stretched where white matter is sparse.
    edema_potential = core_threshold + (core_potential - core_threshold) / (0.08 + wm)
    edema_candidates = allowed & ~in_core
    edema_threshold = rank_threshold(edema_potential[edema_candidates], max(whole - int(in_core.sum()), 0))
    in_edema = edema_candidates & (edema_potential <= edema_threshold)
    necrosis = rng.uniform(*settings.necrosis_fraction)
    classes = np.zeros(brain.shape, dtype=np.uint8)
    classes[in_edema] = 2
    classes[in_core] = 3
    classes[in_core & (core_potential <= core_threshold * necrosis ** (1 / 3))] = 1
    return classes


def rank_threshold(values, count):
    """The value below or at which `count` of `values` lie (-inf for 0)."""
    if count <= 0 or values.size == 0:
        return -np.inf
    count = min(count, values.size)
    return np.partition(values, count - 1)[count - 1]


def _images(tissue, classes, foreground, points, rng, settings, voxel_mm):
    """int16 images per modality (D, H, W) from tissue probabilities and tumor classes.

    `points` (3, D, H, W) are the voxels' mm offsets from the tumor centre.
    """
    shape = classes.shape
    weights = np.concatenate([tissue[:3], np.zeros((3,) + shape, dtype=np.float32)])
    for offset, cls in enumerate((1, 2, 3)):  # NCR, ED, ET replace the healthy tissue
        mask = classes == cls
        weights[:, mask] = 0.0
        weights[3 + offset][mask] = 1.0
    # Partial volume at the tumor's borders, as a scan's point-spread would give.
    border_sigma = 0.8 / voxel_mm
    weights[3:] = ndimage.gaussian_filter(weights[3:], sigma=(0, border_sigma, border_sigma, border_sigma))
    weights[:3] *= 1.0 - weights[3:].sum(0, keepdims=True)
    texture = 1.0 + waves(points, rng, 5, (8.0, 20.0), 0.12)
    images = {}
    for modality, means in CONTRASTS.items():
        jitter = 1.0 + rng.uniform(-settings.contrast_jitter, settings.contrast_jitter, size=6)
        means = np.asarray(means, dtype=np.float32) * jitter.astype(np.float32)
        volume = np.tensordot(means, weights, axes=1)
        volume = np.where(classes > 0, volume * texture, volume)
        images[modality] = _scanner(volume, foreground, points, rng, settings, voxel_mm)
    return images


def _scanner(volume, foreground, points, rng, settings, voxel_mm):
    """One modality through a scanner: blur, gamma, bias field, noise, scale to int16; 0 outside.

    The noise level is per 1 mm voxel; a voxel of `voxel_mm` averages voxel_mm**3
    of them (its standard deviation falls by voxel_mm**1.5).
    """
    sigma = rng.uniform(*settings.blur_mm) / voxel_mm
    if sigma > 0.05:
        volume = ndimage.gaussian_filter(volume, sigma)
    volume = np.clip(volume, 0.0, None) ** np.float32(rng.uniform(*settings.gamma))
    coefficients = rng.uniform(-settings.bias, settings.bias, size=4).astype(np.float32)
    # Over a head (about +-100 mm) the field varies by about +-`bias` per term.
    x, y, z = points / np.float32(100.0)
    bias = np.exp(coefficients[0] * x + coefficients[1] * y + coefficients[2] * z + coefficients[3] * x * y)
    level = np.float32(rng.uniform(*settings.noise) / voxel_mm**1.5)
    # The noise has a generator of its own, so that the draws after it (the next
    # modality's) do not depend on the grid's size: one seed, one case at any voxel size.
    noise_rng = np.random.default_rng(rng.integers(2**63))
    real = volume * bias + level * noise_rng.standard_normal(volume.shape, dtype=np.float32)
    imaginary = level * noise_rng.standard_normal(volume.shape, dtype=np.float32)
    magnitude = np.sqrt(real**2 + imaginary**2)  # magnitude images: Rician noise
    scaled = np.clip(magnitude * np.float32(rng.uniform(*settings.intensity_scale)), 1, 32767)
    return np.where(foreground, scaled, 0).astype(np.int16)
