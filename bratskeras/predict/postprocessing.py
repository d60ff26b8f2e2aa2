"""Optional, composable clean-up of predicted segmentations (numpy/scipy).

Inputs are one case: a class index map (D, H, W) of a label scheme's
classes (bratskeras.core.labels: the classic 0..3, or a task's own, e.g. gli's
0..4 with RC) or, for the FLAIR whole-tumor model, a bool mask (D, H, W).
The dtype decides: bool means binary mask, anything else a class map.
Class maps are processed per region of their scheme (classic: WT, TC, ET;
gli: WT, TC, ET, RC) and recomposed with `targets.regions_to_classes`, so
the nesting (ET ⊆ TC ⊆ WT; ped's CC ⊆ TC) is kept.

Configured steps are plain data for configs and the CLI, applied in order by `postprocess`:
    {"name": "average_pool", "size": 16}          FLAIR paper smoothing
    {"name": "min_component", "voxels": 50}       drop small connected components
    {"name": "min_component", "voxels": 50, "per": "class"}
    {"name": "et_to_ncr", "voxels": 500}          small predicted ET -> NCR (NETC)
Each kind of step is one `Step` row of `STEPS` (its options with defaults and
checks, its CLI help, how it applies to a mask and to a class map).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bratskeras.core.labels import scheme_or_classic
from bratskeras.core.targets import classes_to_regions, regions_to_classes


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


def _check_size(size):
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
    sizes = _check_size(size)
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
    mask = np.asarray(mask, dtype=bool)
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(components.ravel())
    keep = sizes >= voxels
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
    enhancing_class, core_class = _enhancing_and_core(scheme)
    classes = np.array(classes, copy=True)
    enhancing = classes == enhancing_class
    if 0 < enhancing.sum() < voxels:
        classes[enhancing] = core_class
    return classes


def _enhancing_and_core(scheme):
    """(ET class, necrotic-core class) of a scheme; ValueError for one without them (MEN-RT's GTV)."""
    scheme = scheme_or_classic(scheme)
    names = scheme.names
    core = next((name for name in ("NCR", "NETC") if name in names), None)
    if "ET" not in names or core is None:
        raise ValueError(f"step 'et_to_ncr' needs ET and NCR classes; the {scheme.name} scheme has "
                         f"{', '.join(names[1:])}")
    return names.index("ET"), names.index(core)


def _per_region(classes, fn, scheme):
    regions = classes_to_regions(classes, scheme)
    cleaned = np.stack([fn(regions[..., r]) for r in range(regions.shape[-1])], axis=-1)
    # Keep the nesting (ET ⊆ TC ⊆ WT) when a step removed more of an outer region.
    for inner, outer in scheme_or_classic(scheme).nesting():
        cleaned[..., inner] &= cleaned[..., outer]
    return regions_to_classes(cleaned, scheme)


def _min_component_classes(classes, voxels, per, scheme):
    if per == "region":
        return _per_region(classes, lambda m: remove_small_components(m, voxels), scheme)
    cleaned = np.array(classes, copy=True)
    for class_index in range(1, len(scheme_or_classic(scheme).labels)):
        present = classes == class_index
        # Removed voxels become background.
        cleaned[present & ~remove_small_components(present, voxels)] = 0
    return cleaned


# --------------------------------------------------------------------------- the steps, one row each


REQUIRED = object()  # an Option default meaning "the step needs this option"


def _check_voxels(step, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"step {step!r}: voxels must be a non-negative integer, received {value!r}")


def _check_size_option(step, value):
    try:
        _check_size(value)
    except (TypeError, ValueError):
        raise ValueError(f"step {step!r}: size must be a positive integer or 3 of them (AxBxC), "
                         f"received {value!r}") from None


def _check_per(step, value):
    if value not in ("region", "class"):
        raise ValueError(f"{step} per must be 'region' or 'class', received {value!r}")


@dataclass(frozen=True)
class Option:
    """One option of a step.

    Attributes:
        default: the value when the step leaves it out; REQUIRED: the step must give it.
        check: (step name, value) -> None, raising ValueError (one line) for a bad value.
        syntax: how the value is written on the command line, for the help.
    """

    default: object
    check: Callable[[str, object], None]
    syntax: str


VOXELS = Option(REQUIRED, _check_voxels, "N")


class Step:
    """A kind of post-processing step; a configured step is a dict {"name": name, option: value, ...}.

    Subclasses set `name`, `options` ({option name: Option}, in the order
    they are checked), `summary` (the CLI help) and apply themselves with
    `on_mask` (bool (D, H, W)) and `on_classes` (class map (D, H, W) of a
    scheme), both returning an array of the same shape.
    """

    name = ""
    options = {}
    summary = ""

    @property
    def required(self):
        return {option for option, spec in self.options.items() if spec.default is REQUIRED}

    def check(self, step):
        """ValueError (one line) for an unknown or missing option or a bad value of `step` (a dict)."""
        given = set(step) - {"name"}
        unknown, missing = given - set(self.options), self.required - given
        if unknown or missing:
            raise ValueError(f"step {self.name!r} takes {sorted(self.options)} (required "
                             f"{sorted(self.required)}); received {sorted(given)}")
        for option in self.options:
            if option in step:
                self.options[option].check(self.name, step[option])

    def check_scheme(self, scheme):
        """ValueError (one line) when `scheme`'s classes cannot take this step; most steps take any."""

    def settings(self, step):
        """{option: value} of a checked `step`, defaults filled in."""
        return {option: step.get(option, spec.default) for option, spec in self.options.items()}

    def usage(self):
        """One line of CLI help: "name:option=SYNTAX,...: summary"."""
        options = ",".join(f"{option}={spec.syntax}" for option, spec in self.options.items())
        return f"{self.name}:{options}: {self.summary}"

    def on_mask(self, mask, **settings):
        raise NotImplementedError

    def on_classes(self, classes, scheme, **settings):
        raise NotImplementedError


class AveragePool(Step):
    """The FLAIR paper's mean filter and rounding (`average_pool_smooth`), per region of a class map."""

    name = "average_pool"
    options = {"size": Option(16, _check_size_option, "16|AxBxC")}
    summary = "FLAIR paper smoothing (16x16x1: per slice)"

    def on_mask(self, mask, size):
        return average_pool_smooth(mask, size)

    def on_classes(self, classes, scheme, size):
        return _per_region(classes, lambda m: average_pool_smooth(m, size), scheme)


class MinComponent(Step):
    """Drops 26-connected components under `voxels`, per region (nesting kept) or per class (-> background)."""

    name = "min_component"
    options = {"voxels": VOXELS, "per": Option("region", _check_per, "region|class")}
    summary = "drop connected components under N voxels"

    def on_mask(self, mask, voxels, per):
        return remove_small_components(mask, voxels)

    def on_classes(self, classes, scheme, voxels, per):
        return _min_component_classes(classes, voxels, per, scheme)


class EnhancingToNcr(Step):
    """Fewer than `voxels` predicted ET voxels become NCR (`enhancing_tumor_to_ncr`); class maps only."""

    name = "et_to_ncr"
    options = {"voxels": VOXELS}
    summary = "fewer than N ET voxels -> NCR"

    def check_scheme(self, scheme):
        _enhancing_and_core(scheme)

    def on_mask(self, mask, voxels):
        raise ValueError(f"step {self.name!r} needs a class map, received a bool mask")

    def on_classes(self, classes, scheme, voxels):
        return enhancing_tumor_to_ncr(classes, voxels, scheme)


# The steps by name: the one place a step is defined (the CLI's help and the checks read it).
STEPS = {step.name: step for step in (AveragePool(), MinComponent(), EnhancingToNcr())}


def check_step(step):
    """Raises ValueError (one line) unless `step` is a well-formed step with valid values.

    Checks the name, the options (unknown, missing) and each value:
    `voxels` a non-negative integer, `size` a positive integer or three,
    `per` "region" or "class". Scheme-dependent checks (et_to_ncr needs ET
    and NCR classes) are `check_steps'`. The CLI calls it on each
    --postprocess value before any model is loaded.

        >>> check_step({"name": "min_component", "voxels": "abc"})
        Traceback (most recent call last):
        ValueError: step 'min_component': voxels must be a non-negative integer, received 'abc'
    """
    if not isinstance(step, dict) or step.get("name") not in STEPS:
        raise ValueError(
            f"a post-processing step must be a dict with name in {sorted(STEPS)}, received {step!r}"
        )
    STEPS[step["name"]].check(step)


def check_steps(steps, scheme=None):
    """ValueError (one line) for a step that is malformed or that `scheme`'s classes cannot take."""
    for step in steps:
        check_step(step)
        STEPS[step["name"]].check_scheme(scheme)


def postprocess(volume, steps, scheme=None):
    """Apply configured steps in order to one predicted case.

    Args:
        volume: bool mask (D, H, W) or class index map (D, H, W) of `scheme`.
        steps: list of dicts, see the module docstring. Empty list: unchanged copy.
        scheme: the class map's task (labels.TASKS) or None for the classic
            classes 0..3 (what a model without a task predicts).

    Returns:
        Same dtype and shape as `volume`.

    Raises:
        ValueError: an unknown step, option or value, a class map with values
            outside the scheme's classes, "et_to_ncr" on a bool mask or on a
            scheme without ET (MEN-RT).
    """
    check_steps(steps, scheme)
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (D, H, W), received shape {volume.shape}")
    binary = volume.dtype == bool
    classes = scheme_or_classic(scheme)
    top = len(classes.labels) - 1
    if not binary and volume.size and (volume.min() < 0 or volume.max() > top):
        raise ValueError(
            f"class map values must be 0..{top} ({classes.name} classes), received "
            f"{volume.min()}..{volume.max()} (pass a bool array for a binary mask)"
        )
    result = volume.copy()
    for step in steps:
        kind = STEPS[step["name"]]
        settings = kind.settings(step)
        result = kind.on_mask(result, **settings) if binary else kind.on_classes(result, scheme, **settings)
    return result.astype(volume.dtype, copy=False)
