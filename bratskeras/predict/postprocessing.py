"""Optional, composable clean-up of predicted segmentations: the configurable steps.

Inputs are one case: a class index map (D, H, W) of a label scheme's
classes (bratskeras.core.labels: the classic 0..3, or a task's own, e.g. gli's
0..4 with RC) or, for the FLAIR whole-tumor model, a bool mask (D, H, W).
The dtype decides: bool means binary mask, anything else a class map. The
operations themselves are bratskeras.predict.cleanup's.

Configured steps are plain data for configs and the CLI, applied in order by
`postprocess`, e.g. {"name": "major_components", "fraction": 0.1} or
{"name": "et_enhancement", "percentile": 75}; every step, its options and
their defaults are the rows of `STEPS` (`bratskeras predict --help` lists them).
One kind of step decodes instead of cleaning: `region_thresholds` (e.g.
{"name": "region_thresholds", "wt": 0.3, "tc": 0.4, "et": 0.2}) turns the
network's probabilities into classes, each region above its own threshold,
in place of the target's argmax or 0.5. It can only come first
(`split_decoding`; predict applies it, `decode`). One kind re-runs the
model: `bias_refit` ({"name": "bias_refit", "margin": 3}) divides each
modality's smooth intensity bias, fitted outside the tumour the other steps
found, out of the case and predicts it again with the same steps. It can
only come last (`split_refit`; predict applies it).
Each kind of step is one `Step` row of `STEPS` (its options with defaults and
checks, its CLI help, how it applies to a mask and to a class map, and the
input images it reads: et_enhancement reads the case's T1c).

A model can carry its own steps in its input contract (`postprocess`,
bratskeras.data.contract); predict applies them unless told otherwise.
"""


import numpy as np
from scipy import ndimage

from bratskeras.core.labels import scheme_or_classic
from bratskeras.predict.cleanup import (
    average_pool_smooth,
    enhancing_rim_growth,
    enhancing_tumor_to_ncr,
    enhancing_without_enhancement_to_ncr,
    fluid_oedema_to_background,
    hyperintense_rim_to_oedema,
    keep_major_components,
    min_component_classes,
    oedema_without_hyperintensity_to_background,
    remove_small_components,
    surface_enhancement_to_background,
)
from bratskeras.predict.regions import enhancing_and_core, oedema_class, per_region, regions_above, whole_and_core
from bratskeras.predict.step_options import (
    REQUIRED,
    VOXELS,
    Option,
    check_depth,
    check_fraction,
    check_margin,
    check_per,
    check_percentile,
    check_size_option,
    check_threshold,
)

# --------------------------------------------------------------------------- the steps, one row each


class Step:
    """A kind of post-processing step; a configured step is a dict {"name": name, option: value, ...}.

    Subclasses set `name`, `options` ({option name: Option}, in the order
    they are checked), `summary` (the CLI help), `modalities` (the input
    images the step reads, passed as `images`: {modality: (D, H, W)}) and
    apply themselves with `on_mask` (bool (D, H, W)) and `on_classes` (class
    map (D, H, W) of a scheme), both returning an array of the same shape.
    """

    name = ""
    options = {}
    summary = ""
    modalities = ()
    decodes = False  # True: turns probabilities into classes (`decode`), so it can only come first
    refits = False  # True: predict runs the case again (`split_refit`), so it can only come last

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
    options = {"size": Option(16, check_size_option, "16|AxBxC")}
    summary = "FLAIR paper smoothing (16x16x1: per slice)"

    def on_mask(self, mask, size):
        return average_pool_smooth(mask, size)

    def on_classes(self, classes, scheme, size):
        return per_region(classes, lambda m: average_pool_smooth(m, size), scheme)


class MinComponent(Step):
    """Drops 26-connected components under `voxels`, per region (nesting kept) or per class (-> background)."""

    name = "min_component"
    options = {"voxels": VOXELS, "per": Option("region", check_per, "region|class")}
    summary = "drop connected components under N voxels"

    def on_mask(self, mask, voxels, per):
        return remove_small_components(mask, voxels)

    def on_classes(self, classes, scheme, voxels, per):
        return min_component_classes(classes, voxels, per, scheme)


class MajorComponents(Step):
    """Drops components smaller than `fraction` of the largest (`keep_major_components`), per region, nesting kept."""

    name = "major_components"
    options = {"fraction": Option(0.1, check_fraction, "F")}
    summary = "drop connected components smaller than F of the region's largest (per region: WT, TC, ET)"

    def on_mask(self, mask, fraction):
        return keep_major_components(mask, fraction)

    def on_classes(self, classes, scheme, fraction):
        return per_region(classes, lambda m: keep_major_components(m, fraction), scheme)


class ClassMapStep(Step):
    """A step that needs a class map (its classes, e.g. ET and NCR): a bool mask is refused in one line."""

    def on_mask(self, mask, **settings):
        raise ValueError(f"step {self.name!r} needs a class map, received a bool mask")


class EnhancingToNcr(ClassMapStep):
    """Fewer than `voxels` predicted ET voxels become NCR (`enhancing_tumor_to_ncr`); class maps only."""

    name = "et_to_ncr"
    options = {"voxels": VOXELS}
    summary = "fewer than N ET voxels -> NCR"

    def check_scheme(self, scheme):
        enhancing_and_core(scheme)

    def on_classes(self, classes, scheme, voxels):
        return enhancing_tumor_to_ncr(classes, voxels, scheme)


class EnhancementCheck(ClassMapStep):
    """ET not above the healthy brain on T1c becomes NCR (`enhancing_without_enhancement_to_ncr`); class maps only."""

    name = "et_enhancement"
    options = {"percentile": Option(75, check_percentile, "P")}
    summary = "ET darker on T1c than the healthy brain's P-th percentile (75: white matter) -> NCR"
    modalities = ("t1ce",)

    def check_scheme(self, scheme):
        enhancing_and_core(scheme, self.name)

    def on_classes(self, classes, scheme, percentile, images):
        return enhancing_without_enhancement_to_ncr(classes, images["t1ce"], percentile, scheme)


class HyperintensityCheck(ClassMapStep):
    """ED not above the healthy brain on FLAIR becomes background (`oedema_without_hyperintensity_to_background`)."""

    name = "ed_hyperintensity"
    options = {"percentile": Option(50, check_percentile, "P")}
    summary = "ED darker on FLAIR than the healthy brain's P-th percentile (50: its median) -> background"
    modalities = ("flair",)

    def check_scheme(self, scheme):
        whole_and_core(scheme, self.name)

    def on_classes(self, classes, scheme, percentile, images):
        return oedema_without_hyperintensity_to_background(classes, images["flair"], percentile, scheme)


class HyperintenseRim(ClassMapStep):
    """FLAIR-bright voxels within `depth` voxels of the predicted tumour become oedema (`hyperintense_rim_to_oedema`)."""

    name = "ed_growth"
    options = {"percentile": Option(99, check_percentile, "P"), "depth": Option(3, check_depth, "N")}
    summary = ("voxels within N voxels of the tumour, connected to it, with FLAIR at least the healthy brain's P-th "
               "percentile -> ED")
    modalities = ("flair",)

    def check_scheme(self, scheme):
        oedema_class(scheme, self.name)

    def on_classes(self, classes, scheme, percentile, depth, images):
        return hyperintense_rim_to_oedema(classes, images["flair"], percentile, depth, scheme)


class FluidOedema(ClassMapStep):
    """ED dark on T1 and bright on T2, as CSF is, becomes background (`fluid_oedema_to_background`)."""

    name = "ed_fluid"
    options = {"t1": Option(5, check_percentile, "P"), "t2": Option(90, check_percentile, "P")}
    summary = ("ED darker on T1 than the healthy brain's P-th percentile and brighter on T2 than its P-th "
               "(fluid: CSF the FLAIR did not null) -> background")
    modalities = ("t1", "t2")

    def check_scheme(self, scheme):
        whole_and_core(scheme, self.name)

    def on_classes(self, classes, scheme, t1, t2, images):
        return fluid_oedema_to_background(classes, images["t1"], images["t2"], t1, t2, scheme)


class SurfaceEnhancement(ClassMapStep):
    """ET components mostly within `depth` voxels of the brain's edge become background
    (`surface_enhancement_to_background`: enhancing dura and veins); class maps only."""

    name = "et_surface"
    options = {"depth": Option(3, check_depth, "N"), "share": Option(0.5, check_fraction, "F")}
    summary = ("ET components with more than F of their voxels within N voxels of the brain's edge "
               "(enhancing dura, veins) -> background")
    modalities = ("t1ce",)

    def check_scheme(self, scheme):
        enhancing_and_core(scheme, self.name)

    def on_classes(self, classes, scheme, depth, share, images):
        return surface_enhancement_to_background(classes, images["t1ce"], depth, share, scheme)


class EnhancingRim(ClassMapStep):
    """Bright T1c within `depth` voxels of the predicted ET, inside the tumour, becomes ET (`enhancing_rim_growth`)."""

    name = "et_growth"
    options = {"percentile": Option(95, check_percentile, "P"), "depth": Option(2, check_depth, "N"),
               "share": Option(0.15, check_fraction, "F")}
    summary = ("voxels of the tumour within N voxels of ET with T1c at least the healthy brain's P-th percentile "
               "-> ET, where ET is at least F of the core (an enhancing rim)")
    modalities = ("t1ce",)

    def check_scheme(self, scheme):
        enhancing_and_core(scheme, self.name)
        whole_and_core(scheme, self.name)

    def on_classes(self, classes, scheme, percentile, depth, share, images):
        return enhancing_rim_growth(classes, images["t1ce"], percentile, depth, share, scheme)


class RegionThresholds(Step):
    """Decodes probabilities region by region, each above its own threshold (`regions_above`); first step only."""

    name = "region_thresholds"
    options = {region: Option(0.5, check_threshold, "T") for region in ("wt", "tc", "et")}
    summary = ("decode the network's probabilities per region (softmax: the sum of its classes), each above its "
               "own threshold, in place of argmax (first step only)")
    decodes = True

    def check_scheme(self, scheme):
        names = scheme_or_classic(scheme).region_names
        if not {"WT", "TC", "ET"} <= set(names):
            raise ValueError(f"step {self.name!r} needs WT, TC and ET regions; the {scheme_or_classic(scheme).name} "
                             f"scheme has {', '.join(names)}")

    def decode(self, probabilities, target, scheme, **thresholds):
        return regions_above(probabilities, target, {region.upper(): t for region, t in thresholds.items()}, scheme)

    def on_mask(self, mask, *scheme, **thresholds):
        raise ValueError(f"step {self.name!r} decodes probabilities: it can only be the first step")

    on_classes = on_mask


class BiasRefit(Step):
    """Predicts the case again with each modality's linear bias field divided out (last step only).

    The field (bratskeras.data.bias_field.divide_linear_field: a plane in log
    intensity, a trimmed fit over the brain) is fitted outside the tumour the
    first prediction found, grown by `margin` voxels (`excluded`), so the
    lesion does not pull it. T1c is left as it is (bias_field.LEFT_AS_IS:
    its plane leans toward the enhancing vessels and dura). Why: the healthy brain of several public BraTS
    2018 CBICA scans is 20-30 % brighter on FLAIR in its lowest slabs than
    its median, as bright as oedema. Predict applies it (`split_refit`).
    """

    name = "bias_refit"
    options = {"margin": Option(3, check_margin, "N")}
    summary = ("predict again with each modality's linear bias field (T1c's excepted), fitted outside the tumour "
               "found so far (grown by N voxels), divided out (last step only; twice the time)")
    refits = True

    @staticmethod
    def excluded(classes, margin):
        """bool (D, H, W): the predicted tumour (any class but background, or a mask) grown by `margin` voxels."""
        tumour = np.asarray(classes) > 0
        return ndimage.binary_dilation(tumour, iterations=margin) if margin and tumour.any() else tumour

    def on_mask(self, mask, *scheme, **settings):
        raise ValueError(f"step {self.name!r} re-runs the model: only predict applies it, as the last step")

    on_classes = on_mask


# The steps by name: the one place a step is defined (the CLI's help and the checks read it).
STEPS = {step.name: step for step in (RegionThresholds(), AveragePool(), MinComponent(), MajorComponents(),
                                      EnhancingToNcr(), EnhancementCheck(), HyperintensityCheck(),
                                      HyperintenseRim(), FluidOedema(), SurfaceEnhancement(), EnhancingRim(),
                                      BiasRefit())}


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


def check_steps(steps, scheme=None, modalities=None):
    """ValueError (one line) for a step that is malformed, that `scheme`'s classes cannot take, or that
    reads an image `modalities` (a model's inputs; None: not checked) does not include."""
    for position, step in enumerate(steps):
        check_step(step)
        kind = STEPS[step["name"]]
        if kind.decodes and position:
            raise ValueError(f"step {kind.name!r} decodes the network's probabilities: it can only be the first step")
        if kind.refits and position != len(steps) - 1:
            raise ValueError(f"step {kind.name!r} predicts the case again after the other steps: it can only be "
                             "the last step")
        kind.check_scheme(scheme)
        missing = [m for m in kind.modalities if modalities is not None and m not in modalities]
        if missing:
            raise ValueError(f"step {kind.name!r} reads the {', '.join(missing)} image, which is not among the "
                             f"model's inputs ({', '.join(modalities) or 'none given'})")


def split_decoding(steps):
    """(the decoding step dict or None, the class-map steps after it) of a step list."""
    steps = list(steps)
    if steps and STEPS.get(steps[0].get("name")) and STEPS[steps[0]["name"]].decodes:
        return steps[0], steps[1:]
    return None, steps


def split_refit(steps):
    """(the steps before a last re-running step, that step dict or None) of a step list."""
    steps = list(steps)
    if steps and STEPS.get(steps[-1].get("name")) and STEPS[steps[-1]["name"]].refits:
        return steps[:-1], steps[-1]
    return steps, None


def decode(probabilities, target, step, scheme=None):
    """Classes of model output by a decoding step (`split_decoding`): uint8 (D, H, W), or bool for whole_tumor.

    Args:
        probabilities: (D, H, W, K) probabilities of `target` (bratskeras.core.targets).
        target: the model's target name.
        step: a decoding step dict, e.g. {"name": "region_thresholds", "wt": 0.3}.
        scheme: the classes' task or None (classic).
    """
    check_steps([step], scheme)
    kind = STEPS[step["name"]]
    return kind.decode(probabilities, target, scheme, **kind.settings(step))


def postprocess(volume, steps, scheme=None, images=None):
    """Apply configured steps in order to one predicted case.

    Args:
        volume: bool mask (D, H, W) or class index map (D, H, W) of `scheme`.
        steps: list of dicts, see the module docstring. Empty list: unchanged copy.
        scheme: the class map's task (labels.TASKS) or None for the classic
            classes 0..3 (what a model without a task predicts).
        images: {modality: (D, H, W)} of the case on the volume's grid, for
            the steps that read an image (Step.modalities); None: none given.

    Returns:
        Same dtype and shape as `volume`.

    Raises:
        ValueError: an unknown step, option or value, a class map with values
            outside the scheme's classes, "et_to_ncr" or "et_enhancement" on
            a bool mask or on a scheme without ET (MEN-RT), a step whose image
            is not in `images`.
    """
    images = images or {}
    check_steps(steps, scheme, modalities=tuple(images))
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
        if kind.modalities:
            settings["images"] = {m: images[m] for m in kind.modalities}
        result = kind.on_mask(result, **settings) if binary else kind.on_classes(result, scheme, **settings)
    return result.astype(volume.dtype, copy=False)
