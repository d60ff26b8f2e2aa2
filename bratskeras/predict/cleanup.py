"""The clean-up operations on one predicted case (numpy/scipy): masks and class maps in, the same shapes out.

Inputs: a class index map (D, H, W) of a label scheme's classes
(bratskeras.core.labels: the classic 0..3, or a task's own, e.g. gli's 0..4
with RC) or a bool mask (D, H, W). Class maps are processed per region of
their scheme (classic: WT, TC, ET; gli: WT, TC, ET, RC) and recomposed with
`targets.regions_to_classes`, so the nesting (ET ⊆ TC ⊆ WT; ped's CC ⊆ TC)
is kept. bratskeras.predict.postprocessing makes each of them a configurable
step (its options, checks and CLI help).
"""

import numpy as np
from scipy import ndimage

from bratskeras.core.labels import scheme_or_classic
from bratskeras.core.targets import classes_to_regions
from bratskeras.data.preprocessing import channel_foreground
from bratskeras.predict.regions import enhancing_and_core, oedema_class, per_region, whole_and_core

# The healthy brain starts this many voxels outside the predicted tumour: the
# tumour's partial-volume rim is neither tumour nor healthy tissue.
HEALTHY_GAP = 3
# 26-connectivity: a voxel's neighbours across faces, edges and corners (components, growth).
NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)


def _box_sum(values, size, axis):
    """Sum over the window [i - (size-1)//2, i + size//2] along `axis`, zeros outside.

    Exact integer cumulative sums, so comparing a window mean with 0.5 has no
    rounding error.
    """
    before, after = (size - 1) // 2, size // 2
    pad = [(0, 0)] * values.ndim
    pad[axis] = (before + 1, after)
    cumulative = np.cumsum(np.pad(values, pad), axis=axis)
    upper = np.take(cumulative, np.arange(size, cumulative.shape[axis]), axis=axis)
    lower = np.take(cumulative, np.arange(0, cumulative.shape[axis] - size), axis=axis)
    return upper - lower


def check_size(size):
    sizes = (size,) * 3 if np.isscalar(size) else tuple(size)
    if len(sizes) != 3 or not all(int(s) == s and s >= 1 for s in sizes):
        raise ValueError(f"size must be a positive integer or 3 of them, received {size!r}")
    return tuple(int(s) for s in sizes)


def average_pool_smooth(mask, size=16):
    """The FLAIR paper's smoothing: mean filter of `size`, stride 1, 'same', then rounding.

    Matches Keras AveragePooling3D(size, strides=1, padding="same") on the
    binarised mask followed by rounding: the mean counts only voxels inside the
    volume, and for an even size the window is off-centre by half a voxel,
    [i - (k-1)//2, i + k//2] per axis (k = 16: 7 before, 8 after), as in
    TensorFlow's 'same' padding. Rounding is half to even, so a voxel is kept
    when strictly more than half of its window is foreground.

    Args:
        mask: binary mask (D, H, W).
        size: window, an int (cube; the paper's 16) or 3 ints, e.g. (16, 16, 1)
            for a per-slice 16x16 filter (the paper says "16x16" for a 3-D model).

    Returns:
        bool mask of the same shape.

    Example: 1-D row [1, 1, 0, 1], size 2 (window [i, i+1]): means
        [1, 0.5, 0.5, 1] -> [1, 0, 0, 1].
    """
    sizes = check_size(size)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (D, H, W), received shape {mask.shape}")
    foreground = mask.astype(np.int32)
    counted = np.ones_like(foreground)
    for axis, k in enumerate(sizes):
        foreground = _box_sum(foreground, k, axis)
        counted = _box_sum(counted, k, axis)
    return 2 * foreground > counted


def remove_small_components(mask, voxels):
    """Drop 26-connected components with fewer than `voxels` voxels from a binary mask.

    Example: a 27-voxel cube and a separate single voxel, voxels=2 -> only the cube.
    """
    if voxels < 0:
        raise ValueError(f"voxels must be >= 0, received {voxels!r}")
    components, sizes = _components(mask)
    return _kept(components, sizes >= voxels)


def keep_major_components(mask, fraction):
    """Drop 26-connected components smaller than `fraction` of the largest one from a binary mask.

    nnU-Net keeps only the largest component where that helps on its
    validation folds; a fraction keeps the other large foci of a multifocal
    tumour. Example: components of 1,000, 300 and 50 voxels, fraction 0.1 ->
    the first two.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], received {fraction!r}")
    components, sizes = _components(mask)
    largest = sizes[1:].max(initial=0)
    return _kept(components, sizes >= fraction * largest)


def _components(mask):
    """(component labels (D, H, W), voxels per label) of a mask's 26-connected components; label 0 is the background."""
    mask = np.asarray(mask, dtype=bool)
    components, _ = ndimage.label(mask, structure=NEIGHBOURS)
    return components, np.bincount(components.ravel())


def _kept(components, keep):
    """The bool mask of the components whose entry in `keep` (one per label) is True; never the background."""
    keep[0] = False
    return keep[components]


def enhancing_tumor_to_ncr(classes, voxels, scheme=None):
    """The BraTS trick: if fewer than `voxels` voxels are predicted ET, make them NCR (NETC in the 2023+ names).

    A handful of false ET voxels in a case without ET costs Dice 0 and HD95
    373.13 on ET; relabelling them as NCR keeps them in TC and WT. The
    classes are the scheme's (None: classic, ET 3 -> NCR 1; ped: ET 1 -> NETC 2).
    """
    if voxels < 0:
        raise ValueError(f"voxels must be >= 0, received {voxels!r}")
    enhancing_class, core_class = enhancing_and_core(scheme)
    classes = np.array(classes, copy=True)
    enhancing = classes == enhancing_class
    if 0 < enhancing.sum() < voxels:
        classes[enhancing] = core_class
    return classes


def enhancing_without_enhancement_to_ncr(classes, t1ce, percentile=75.0, scheme=None):
    """Predicted ET whose T1c is not above the healthy brain's becomes NCR (NETC): the BraTS definition of ET.

    BraTS labels as enhancing tumour what is hyperintense on T1Gd against
    healthy white matter (Bakas et al. 2018). A model trained on generated
    heads also calls ET faint patches inside non-enhancing tumour that are
    darker than the healthy brain on T1c (the low-grade gliomas of the public
    BraTS 2018 cases, tools/error_analysis.py). A voxel stays ET when its T1c
    is at least the healthy brain's `percentile`-th percentile, the healthy
    brain being the T1c foreground outside the predicted tumour grown by
    HEALTHY_GAP voxels. 75, the default, stands for healthy white matter:
    the brightest of the brain's tissues on T1c and some two fifths of it,
    its median lies near the brain's 75th percentile. On the 47 public scans
    (network alone, per voxel) it kept mean ET Dice (0.601 -> 0.616) and
    removed more false ET on low-grade gliomas than the brain's median did
    (4,220 / 10,283 / 1,624 -> 1,455 / 4,952 / 429 voxels; median: 2,389 /
    9,009 / 791). TC and WT do not change.

    Args:
        classes: class index map (D, H, W) of `scheme` (None: classic, ET 3 -> NCR 1).
        t1ce: the case's T1c (D, H, W) on the same grid, any intensity scale.
        percentile: the healthy brain's T1c percentile (0-100) ET must reach.

    Returns:
        the class map, a copy; unchanged when there is no predicted ET or no
        healthy brain.
    """
    enhancing_class, core_class = enhancing_and_core(scheme, "et_enhancement")
    classes = np.array(classes, copy=True)
    classes[_darker_than_healthy(classes, classes == enhancing_class, t1ce, "t1ce", percentile)] = core_class
    return classes


def oedema_without_hyperintensity_to_background(classes, flair, percentile=50.0, scheme=None):
    """Predicted oedema whose FLAIR is not above the healthy brain's becomes background: the BraTS definition of ED.

    BraTS labels as oedema (SNFH) what is hyperintense on T2-FLAIR (Bakas et
    al. 2018). A model trained on generated heads also calls oedema CSF that
    a scan's FLAIR does not null fully (the basal cisterns and fourth
    ventricle of the public BraTS 2018 CBICA cases, tools/error_analysis.py):
    there the false oedema's FLAIR median was 0.4-1 of the way from the
    healthy brain's median to its 99th percentile lower than the true
    oedema's, its T1 darker. A voxel of the whole tumour outside the tumour
    core (ED) stays when its FLAIR is at least the healthy brain's
    `percentile`-th percentile, the healthy brain being the FLAIR foreground
    outside the predicted tumour grown by HEALTHY_GAP voxels. TC and ET do
    not change.

    Args:
        classes: class index map (D, H, W) of `scheme` (None: classic, ED 2).
        flair: the case's FLAIR (D, H, W) on the same grid, any intensity scale.
        percentile: the healthy brain's FLAIR percentile (0-100) oedema must reach.

    Returns:
        the class map, a copy; unchanged when there is no predicted oedema or
        no healthy brain.
    """
    classes, oedema = _predicted_oedema(classes, scheme, "ed_hyperintensity")
    classes[_darker_than_healthy(classes, oedema, flair, "flair", percentile)] = 0
    return classes


def fluid_oedema_to_background(classes, t1, t2, t1_percentile=5.0, t2_percentile=90.0, scheme=None):
    """Predicted oedema with the signature of fluid (CSF) becomes background: dark on T1 and bright on T2.

    Where a scan's FLAIR nulls CSF only in part, a model trained on generated
    heads calls the basal cisterns, the fourth ventricle and sulcal CSF next
    to the tumour oedema. On 18 public BraTS 2018 cases (13 CBICA) the false
    tumour's T1 median was 0.47-0.67 of the healthy brain's median on the 7
    worst, its T2 1.8-2.6 times; the true tumour's 0.75-1.1 and 1.4-2.1.
    A voxel of the whole tumour outside the tumour core (ED) becomes
    background when its T1 is below the healthy brain's `t1_percentile`-th
    percentile and its T2 above its `t2_percentile`-th. Fluid inside the
    tumour (necrosis, cysts: TC) stays.

    Args:
        classes: class index map (D, H, W) of `scheme` (None: classic, ED 2).
        t1, t2: the case's T1 and T2 (D, H, W) on the same grid, any intensity scale.
        t1_percentile, t2_percentile: the healthy brain's percentiles (0-100).

    Returns:
        the class map, a copy; unchanged when there is no predicted oedema or
        no healthy brain.
    """
    classes, oedema = _predicted_oedema(classes, scheme, "ed_fluid")
    t1, t1_level = _healthy_level(classes, t1, "t1", t1_percentile)
    t2, t2_level = _healthy_level(classes, t2, "t2", t2_percentile)
    if not oedema.any() or t1_level is None or t2_level is None:
        return classes
    classes[oedema & (t1 < t1_level) & (t2 > t2_level)] = 0
    return classes


def _predicted_oedema(classes, scheme, step):
    """(a copy of the class map, bool (D, H, W) its oedema: WT outside TC); ValueError for a scheme without them."""
    whole, core = whole_and_core(scheme, step)
    classes = np.array(classes, copy=True)
    regions = classes_to_regions(classes, scheme)
    return classes, regions[..., whole] & ~regions[..., core]


def surface_enhancement_to_background(classes, t1ce, depth=3, share=0.5, scheme=None):
    """Predicted ET components lying mostly at the brain's surface become background: enhancing dura and veins.

    Skull-stripping leaves the dura and the cortical veins along the brain's
    edge, and both enhance on T1c. A model trained on generated heads calls
    them ET: in its predictions on the public BraTS 2018 cases (kept by
    tools/score_real.py) the false ET components apart from the tumour on
    CBICA_AQR, ARZ and ASE had 55-60 % of their voxels within 3 voxels of
    the brain's edge, and on a generated head without enhancement 1,557
    false ET voxels lay on its enhancing dura (99 % within 3 voxels). A glioma's enhancing rim has depth:
    the most superficial true ET component of those scans, a cortical
    glioblastoma's (BraTS-GLI-99999), had 42 %. An ET component (26-connected)
    with more than `share` of its voxels within `depth` voxels of the edge
    becomes background; the rest of the tumour does not change. Not for
    tumours that grow from the dura (meningioma): their enhancement is at
    the edge. A small enhancing nodule sitting on the cortex's surface would
    be dropped too.

    Args:
        classes: class index map (D, H, W) of `scheme` (None: classic, ET 3).
        t1ce: the case's T1c (D, H, W) on the same grid; its foreground
            (holes filled) is the brain.
        depth: voxels from the brain's edge (3: 3 mm on BraTS's 1 mm grid).
        share: the fraction of a component's voxels there above which it is dropped.

    Returns:
        the class map, a copy.
    """
    enhancing_class, _ = enhancing_and_core(scheme, "et_surface")
    t1ce = np.asarray(t1ce)
    _check_same_grid(t1ce, classes, "t1ce")
    classes = np.array(classes, copy=True)
    components, sizes = _components(classes == enhancing_class)
    if len(sizes) == 1:
        return classes
    brain = ndimage.binary_fill_holes(channel_foreground(t1ce))
    # Padded with background: outside the array is outside the brain (a crop to the brain's box can cut its edge).
    inside = ndimage.distance_transform_edt(np.pad(brain, 1))[1:-1, 1:-1, 1:-1]
    near_edge = np.bincount(components.ravel(), weights=(inside <= depth).ravel(), minlength=len(sizes))
    classes[_kept(components, near_edge > share * sizes)] = 0
    return classes


def enhancing_rim_growth(classes, t1ce, percentile=95.0, depth=2, share=0.15, scheme=None):
    """Bright T1c next to the predicted ET, inside the predicted tumour, becomes ET: the rest of an enhancing rim.

    On real glioblastomas the network's enhancing rim is thinner than the
    BraTS annotators': on the public BraTS 2018 cases (predictions kept by
    tools/score_real.py) most of the reference ET it missed lay within 2-3
    voxels of the ET it found, called oedema, NCR or background, with T1c
    above the healthy brain's 95th percentile on many of them. A voxel
    within `depth` voxels (26-connected steps) of the predicted ET, inside
    the predicted whole tumour, whose T1c reaches the healthy brain's
    `percentile`-th percentile becomes ET. Only where the predicted ET makes
    up at least `share` of the predicted tumour core: a ring-enhancing
    tumour's. The scattered faint ET the model marks on a low-grade glioma
    (1-9 % of its core on the four public ones) does not grow. The healthy
    brain is the T1c foreground outside the predicted tumour grown by
    HEALTHY_GAP voxels.

    Args:
        classes: class index map (D, H, W) of `scheme` (None: classic, ET 3).
        t1ce: the case's T1c (D, H, W) on the same grid, any intensity scale.
        percentile: the healthy brain's T1c percentile (0-100) a voxel must reach.
        depth: how far (voxels) from the predicted ET a voxel may lie.
        share: the smallest fraction of the predicted core that is ET for the rim to grow.

    Returns:
        the class map, a copy; unchanged without predicted ET or healthy brain.
    """
    enhancing_class, _ = enhancing_and_core(scheme, "et_growth")
    whole, core = whole_and_core(scheme, "et_growth")
    image, level = _healthy_level(classes, t1ce, "t1ce", percentile)
    classes = np.array(classes, copy=True)
    enhancing = classes == enhancing_class
    regions = classes_to_regions(classes, scheme)
    if level is None or not enhancing.any() or enhancing.sum() < share * regions[..., core].sum():
        return classes
    near = ndimage.binary_dilation(enhancing, structure=NEIGHBOURS, iterations=depth)
    classes[near & regions[..., whole] & (image >= level)] = enhancing_class
    return classes


def hyperintense_rim_to_oedema(classes, flair, percentile=99.0, depth=3, scheme=None):
    """Voxels next to the predicted tumour whose FLAIR is brighter than nearly all healthy brain become oedema.

    The mirror of `oedema_without_hyperintensity_to_background`, by the same
    BraTS definition (oedema: hyperintense on T2-FLAIR). A model trained on
    generated heads stops short of oedema that fades into the brain: on the
    public BraTS 2018 cases the missed tumour voxels had a median network
    probability of 0.02 and a FLAIR between the healthy brain's median and
    its 99th percentile and beyond. Voxels within `depth` voxels of the
    predicted tumour (26-connected steps), connected to it through such
    voxels, whose FLAIR is at least the healthy brain's `percentile`-th
    percentile become oedema; the healthy brain is the FLAIR foreground
    outside the predicted tumour grown by HEALTHY_GAP voxels. No predicted
    voxel changes. FLAIR-bright healthy tissue beside the tumour (vascular
    white-matter lesions, an ependymal rim) is taken as well.

    Args:
        classes: class index map (D, H, W) of `scheme` (None: classic, ED 2).
        flair: the case's FLAIR (D, H, W) on the same grid, any intensity scale.
        percentile: the healthy brain's FLAIR percentile (0-100) a voxel must reach.
        depth: how far from the predicted tumour, in voxels.

    Returns:
        the class map, a copy; unchanged when nothing is predicted or there is no healthy brain.
    """
    oedema = oedema_class(scheme, "ed_growth")
    flair, level = _healthy_level(classes, flair, "flair", percentile)
    classes = np.array(classes, copy=True)
    tumour = classes > 0
    if not tumour.any() or level is None:
        return classes
    near = ndimage.binary_dilation(tumour, NEIGHBOURS, iterations=depth)
    bright = channel_foreground(flair) & near & (flair >= level)
    grown = ndimage.binary_propagation(tumour, NEIGHBOURS, mask=tumour | bright)
    classes[grown & ~tumour] = oedema
    return classes


def _darker_than_healthy(classes, predicted, image, name, percentile):
    """bool (D, H, W): the `predicted` voxels whose `image` is below the healthy brain's `percentile`-th percentile.

    The healthy brain is the image's foreground outside the predicted tumour
    (classes > 0) grown by HEALTHY_GAP voxels. None are marked when nothing
    is predicted or there is no healthy brain.

    Raises:
        ValueError: `image` (called `name` in the message) not of the class map's shape.
    """
    image, level = _healthy_level(classes, image, name, percentile)
    if not predicted.any() or level is None:
        return np.zeros(classes.shape, bool)
    return predicted & (image < level)


def _healthy_level(classes, image, name, percentile):
    """(image as float32, the healthy brain's `percentile`-th percentile of it, or None when there is no healthy brain).

    The healthy brain is the image's foreground outside the predicted tumour
    (classes > 0) grown by HEALTHY_GAP voxels.

    Raises:
        ValueError: `image` (called `name` in the message) not of the class map's shape.
    """
    image = np.asarray(image, dtype=np.float32)
    _check_same_grid(image, classes, name)
    healthy = _healthy_brain(image, classes > 0)
    return image, (np.percentile(image[healthy], percentile) if healthy.any() else None)


def _check_same_grid(image, classes, name):
    """ValueError naming `name` unless `image` (D, H, W) has the class map's shape."""
    if image.shape != np.shape(classes):
        raise ValueError(f"{name} must have the class map's shape {np.shape(classes)}, received {image.shape}")


def _healthy_brain(image, tumour):
    """bool (D, H, W): the image's foreground outside the predicted `tumour` grown by HEALTHY_GAP voxels."""
    return channel_foreground(image) & ~ndimage.binary_dilation(tumour, iterations=HEALTHY_GAP)


def min_component_classes(classes, voxels, per, scheme):
    if per == "region":
        return per_region(classes, lambda m: remove_small_components(m, voxels), scheme)
    cleaned = np.array(classes, copy=True)
    for class_index in range(1, len(scheme_or_classic(scheme).labels)):
        present = classes == class_index
        # Removed voxels become background.
        cleaned[present & ~remove_small_components(present, voxels)] = 0
    return cleaned
