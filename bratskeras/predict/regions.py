"""A label scheme's regions and classes as the prediction steps need them, and region-by-region decoding.

Which channel of a scheme's regions is WT or TC, which class is ET, its
necrotic core or its oedema (each a one-line ValueError naming the step for
a scheme without it: MEN-RT's GTV has none), and `regions_above`, which
decodes a network's probabilities region by region (predict's
`region_thresholds`). Shared by the clean-up operations
(bratskeras.predict.cleanup) and their step rows
(bratskeras.predict.postprocessing).
"""

import numpy as np

from bratskeras.core.labels import scheme_or_classic
from bratskeras.core.targets import classes_to_regions, get_target, regions_to_classes


def whole_and_core(scheme, step):
    """(WT, TC) region channels of a scheme; ValueError for one without them (MEN-RT's GTV)."""
    scheme = scheme_or_classic(scheme)
    names = scheme.region_names
    if "WT" not in names or "TC" not in names:
        raise ValueError(f"step {step!r} needs WT and TC regions; the {scheme.name} scheme has {', '.join(names)}")
    return names.index("WT"), names.index("TC")


def enhancing_and_core(scheme, step="et_to_ncr"):
    """(ET class, necrotic-core class) of a scheme; ValueError for one without them (MEN-RT's GTV)."""
    scheme = scheme_or_classic(scheme)
    names = scheme.names
    core = next((name for name in ("NCR", "NETC") if name in names), None)
    if "ET" not in names or core is None:
        raise ValueError(f"step {step!r} needs ET and NCR classes; the {scheme.name} scheme has "
                         f"{', '.join(names[1:])}")
    return names.index("ET"), names.index(core)


def oedema_class(scheme, step):
    """The oedema class (ED, SNFH) of a scheme; ValueError for one without it (MEN-RT's GTV)."""
    scheme = scheme_or_classic(scheme)
    name = next((name for name in ("ED", "SNFH") if name in scheme.names), None)
    if name is None:
        raise ValueError(f"step {step!r} needs an oedema class (ED, SNFH); the {scheme.name} scheme has "
                         f"{', '.join(scheme.names[1:])}")
    return scheme.names.index(name)


def regions_above(probabilities, target, thresholds, scheme=None):
    """Model output -> classes, each region where its probability exceeds its own threshold (nnU-Net's regions).

    A region's probability is its sigmoid channel (target "regions"), the
    sum of its classes' softmax probabilities (target "classes"), or the
    one channel of "whole_tumor" (WT). A lower WT or ET threshold keeps
    what the network finds fairly likely to be tumour (or ET) though less
    likely than background (or NCR). Inner regions are clipped to outer
    ones before the classes are composed (a voxel is ET only where it is
    also TC and WT, as the BraTS regions nest), so a regions target whose
    outputs nest decodes at 0.5 as usual.

    Args:
        probabilities: (D, H, W, K) probabilities of `target`.
        target: "classes", "regions" or "whole_tumor".
        thresholds: {region name: threshold in (0, 1)}; regions not named: 0.5.
        scheme: the classes' task (labels.TASKS) or None (classic).

    Returns:
        uint8 class map (D, H, W); a bool mask for "whole_tumor".
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    kind = get_target(target)
    if kind.is_mask:
        return probabilities[..., 0] > thresholds.get("WT", 0.5)
    labels = scheme_or_classic(scheme)
    if kind.outputs_regions:
        region_probabilities = probabilities
    else:
        region_probabilities = np.stack([probabilities[..., list(members)].sum(-1) for _, members in labels.regions],
                                        axis=-1)
    on = np.stack([region_probabilities[..., r] > thresholds.get(name, 0.5)
                   for r, (name, _) in enumerate(labels.regions)], axis=-1)
    for inner, outer in labels.nesting():
        on[..., inner] &= on[..., outer]
    return regions_to_classes(on, scheme)


def per_region(classes, fn, scheme):
    regions = classes_to_regions(classes, scheme)
    cleaned = np.stack([fn(regions[..., r]) for r in range(regions.shape[-1])], axis=-1)
    # Keep the nesting (ET ⊆ TC ⊆ WT) when a step removed more of an outer region.
    for inner, outer in scheme_or_classic(scheme).nesting():
        cleaned[..., inner] &= cleaned[..., outer]
    return regions_to_classes(cleaned, scheme)
