"""Whole-case inference: sliding windows with Gaussian weighting, mirroring TTA, NIfTI out.

Data flow of one case (nnU-Net's order):

    read_case -> preprocess (the training crop, z-score and spacing) -> sliding
    windows -> probabilities (d, h, w, K), resampled back to the crop's grid if
    the model works at another spacing -> classes -> postprocess (the model's
    contract's steps unless the caller gives others; a step may read the case's
    images, cropped alike) -> uncrop to the source grid -> labels of the chosen scheme -> uint8 NIfTI with the source
    affine and header

With a `bias_refit` last step, the case goes through the steps before it
twice: the second time with each modality's linear bias field divided out,
fitted outside the tumour the first time found (bratskeras.data.bias_field).

An ensemble (bratskeras.predict.ensemble.Ensemble, several models) runs each model
up to its probabilities, brings them to the source grid and adds them into
one running sum; the mean goes through classes -> postprocess -> labels
once, on the source grid.

Arrays are channels last: images (D, H, W, C), probabilities (D, H, W, K);
D, H, W are the NIfTI voxel axes i, j, k.

Model outputs (`ModelSetup.target`, a row of bratskeras.core.targets.TARGETS):
    "classes"      4 logits (background, NCR, ED, ET): softmax, argmax
    "regions"      3 logits (WT, TC, ET): sigmoid, > 0.5, composed into classes
    (a task model, ModelSetup.task: one per class or region of its scheme)
    "whole_tumor"  1 sigmoid probability (flair-unet): > 0.5, written as ED
                   (label 2, targets.WHOLE_TUMOR_CLASS): only WT is defined for it

The steps live in their own modules: layouts/volumes (reading), model_setup
(the model's input contract: modalities, target, preprocessing; and its
window), tiling (sliding
windows), targets (probabilities -> classes), postprocessing; this module is
the predict loop over cases and the files it writes.
"""

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np

from bratskeras.core import labels, targets
from bratskeras.core.errors import BratsKerasError, DataError, ModelError, OutputExistsError, user_message
from bratskeras.data import bias_field, inspection, volumes
from bratskeras.data.preprocessing import crop, preprocess, restore_grid, uncrop
from bratskeras.platform import artefacts, claims, outputs
from bratskeras.predict import postprocessing
from bratskeras.predict.devices import placement
from bratskeras.predict.ensemble import Ensemble
from bratskeras.predict.model_setup import effective_settings
from bratskeras.predict.tiling import WindowSettings, sliding_window_predict

PROBABILITIES_DIR = "probabilities"
# Every on-disk label value of every scheme: what a predicted label map can hold.
_LABEL_VALUES = frozenset(v for scheme in labels.SCHEMES.values() for v in scheme.labels)


def _nifti_header(path):
    """(nibabel image, None) for a readable NIfTI file, else (None, why not)."""
    import nibabel as nib

    if os.path.islink(path) or not os.path.isfile(path):
        return None, "not a regular file"
    try:
        return nib.load(path), None
    except Exception:  # nibabel raises many types for a file that is not NIfTI
        return None, "not a NIfTI file"


def _label_map_problem(path):
    """None for a label map as predict writes it: 3-D, integer data, only label values of the schemes.

    An MRI scan (float or int16 intensities) or any other NIfTI is not one.
    """
    image, problem = _nifti_header(path)
    if problem:
        return problem
    if len(image.shape) != 3 or image.get_data_dtype().kind not in "iu":
        return f"a {len(image.shape)}-D {image.get_data_dtype()} image, not a 3-D integer label map"
    try:
        values = np.unique(np.asarray(image.dataobj))
    except Exception:  # a truncated file: not something predict finished
        return "its data cannot be read"
    foreign = sorted(set(values.tolist()) - _LABEL_VALUES)
    if foreign:
        return f"it holds values {foreign[:3]} that are no label (an image, not a label map)"
    return None


def _probability_map_problem(path):
    """None for a probability map as predict writes it: a 4-D float32 NIfTI (D, H, W, K)."""
    image, problem = _nifti_header(path)
    if problem:
        return problem
    if len(image.shape) != 4 or image.get_data_dtype() != np.float32:
        return f"a {len(image.shape)}-D {image.get_data_dtype()} image, not 4-D float32 probabilities"
    return None


LABEL_MAP = artefacts.ArtefactKind("predicted label map", False, _label_map_problem)
PROBABILITY_MAP = artefacts.ArtefactKind("probability map", False, _probability_map_problem)


@dataclass(frozen=True)
class PredictSettings:
    """Options of `predict_case` beyond the model's own setup.

    Attributes:
        windows: WindowSettings; its window is clipped to the volume on axes
            where the model accepts any size (so small volumes are one pass).
        label_scheme: a labels.SCHEMES name or None (the input's release or task);
            the model's classic classes are written through LabelScheme.from_classic.
        postprocess: steps for postprocessing.postprocess, applied on the crop;
            None: the model's own (its contract's `postprocess`, `steps_for`),
            (): none.
        save_probabilities: also write OUTPUT_DIR/probabilities/<id>.nii.gz
            (an ensemble's: the mean).
        device: where the model runs, a bratskeras.predict.devices string ("auto",
            "cpu", "gpu", "gpu:N"); None: TensorFlow's default placement. A
            tf.device scope around the model calls: nothing process-wide changes.
    """

    windows: WindowSettings = WindowSettings()
    label_scheme: str | None = None
    postprocess: tuple | None = None
    save_probabilities: bool = False
    device: str | None = None


def predict_case(network, setup, case, settings=PredictSettings(), progress=None):
    """Predicts one case on its source grid.

    Args:
        network: the predictor from `model_setup.load_predictor`: a Keras
            probability model or an exported model's runtime
            (bratskeras.predict.runtimes), (B, d, h, w, C) -> probabilities; or an
            ensemble.Ensemble of such models (`_ensemble_pass`).
        setup: its ModelSetup (the contract's modalities, preprocessing and
            target); an Ensemble's `.setup`.
        case: layouts.Case.
        settings: PredictSettings.
        progress: optional callable(done, total) over windows (per model of an ensemble;
            a bias_refit case counts both passes in one total).

    Returns:
        (label_map uint8 (D, H, W) in the chosen scheme, probabilities float32
        (D, H, W, K) on the source grid or None, properties from
        volumes.read_case plus "input_warning": the line naming how the input
        differs from BraTS's (inspection.case_input_warning), or None).
    """
    image, properties = _read_input(case, setup.modalities)
    steps, refit = postprocessing.split_refit(steps_for(setup, settings))
    run = _ensemble_pass if isinstance(network, Ensemble) else _single_pass
    # A first pass that is run again keeps only its classes: its probabilities would be discarded.
    first = dataclasses.replace(settings, save_probabilities=False) if refit is not None else settings
    passes = 1 if refit is None else 2
    classes, probabilities = run(network, setup, image, properties["spacing"], steps, first,
                                 _pass_progress(progress, 0, passes))
    if refit is not None:
        # bias_refit: the tumour just found is left out of each modality's bias fit; then the case again.
        kind = postprocessing.STEPS[refit["name"]]
        image = bias_field.divide_linear_field(image, exclude=kind.excluded(classes, **kind.settings(refit)),
                                               modalities=setup.modalities)
        classes, probabilities = run(network, setup, image, properties["spacing"], steps, settings,
                                     _pass_progress(progress, 1, passes))
    label_map = _write_labels(classes, setup, settings.label_scheme or case.label_scheme)
    return label_map, probabilities, properties


def _pass_progress(progress, index, passes):
    """`progress` seen through pass `index` of `passes`: windows counted over all passes (one count per case).

    A bias_refit case runs its windows twice; its progress reads 1..2n of 2n,
    not 1..n twice.
    """
    if progress is None or passes == 1:
        return progress
    return lambda done, total: progress(index * total + done, passes * total)


def _single_pass(network, setup, image, spacing, steps, settings, progress):
    """One model over one case: (classes (D, H, W) on the source grid, its probabilities (D, H, W, K) there or None).

    Post-processing runs on the model's crop (`steps`, a decoding step first
    if any), reading the images cropped alike.
    """
    probabilities, geometry = _crop_probabilities(network, setup, image, spacing, settings, progress)
    decoding, steps = postprocessing.split_decoding(steps)
    classes = _decode(probabilities, setup, decoding)
    if steps:
        classes = _postprocess(classes, setup, steps, lambda channel: crop(image[..., channel], geometry))
    source_probabilities = None
    if settings.save_probabilities:
        source_probabilities = _on_source_grid(probabilities, geometry, setup.target)
    return uncrop(classes, geometry), source_probabilities


def _ensemble_pass(ensemble, setup, image, spacing, steps, settings, progress):
    """`_single_pass` of an Ensemble: the mean of its members' probabilities on the source grid, decoded once.

    Each member is run on its own preprocessing of the case (spacing, crop)
    and brought back to the source grid; one running sum (D, H, W, K) is
    kept beside the current member's probabilities. Post-processing runs on
    the source grid (a single model's runs on its crop; outside every
    member's crop there is only background, so only average_pool near a
    crop's edge can differ).
    """
    total = None
    for member in ensemble.members:
        probabilities, geometry = _crop_probabilities(member.predictor, member.setup, image, spacing,
                                                      settings, progress)
        source = _on_source_grid(probabilities, geometry, setup.target)
        del probabilities  # the crop's copy is no longer needed: keep one member's probabilities at a time
        if total is None:
            total = source
        else:
            total += source
    mean = total
    mean /= len(ensemble.members)  # in place: the sum's memory becomes the mean's
    decoding, steps = postprocessing.split_decoding(steps)
    classes = _decode(mean, setup, decoding)
    if steps:
        classes = _postprocess(classes, setup, steps, lambda channel: image[..., channel])
    return classes, mean if settings.save_probabilities else None


def _read_input(case, modalities):
    """(image (D, H, W, C) of `modalities`, properties from volumes.read_case plus "input_warning")."""
    image, _, properties = volumes.read_case(case, modalities, with_labels=False)
    properties["input_warning"] = inspection.case_input_warning(case.id, image, properties["spacing"], modalities)
    return image, properties


def _crop_probabilities(network, setup, image, spacing, settings, progress):
    """(probabilities float32 (d, h, w, K) on the crop's grid of `setup`'s preprocessing, its crop geometry).

    The model runs on settings.device (bratskeras.predict.devices.placement).
    """
    cropped, _, geometry = preprocess(image, None, setup.preprocess, spacing=spacing)
    windows = effective_settings(setup, settings.windows, cropped.shape[:3])
    with placement(settings.device):
        probabilities = sliding_window_predict(network, cropped, windows, progress)
    # At the model's spacing (if it has one) -> the crop's grid, as probabilities (nnU-Net's order).
    return restore_grid(probabilities, geometry), geometry


def _on_source_grid(probabilities, geometry, target):
    """Probabilities (d, h, w, K) on a crop -> (D, H, W, K) on the source grid; outside the crop, background."""
    source_probabilities = uncrop(probabilities, geometry)
    if not targets.get_target(target).binary:
        # Outside the crop is background (channel 0 of the classes) with certainty.
        outside = uncrop(np.ones(geometry["size"], dtype=bool), geometry) == 0
        source_probabilities[outside, 0] = 1.0
    return source_probabilities


def steps_for(setup, settings):
    """The post-processing steps of a prediction: the caller's (settings.postprocess), or the model's contract's."""
    return setup.contract.postprocess if settings.postprocess is None else tuple(settings.postprocess)


def _decode(probabilities, setup, decoding):
    """Classes (D, H, W) of probabilities (D, H, W, K): the target's own decoding, or a decoding step's."""
    if decoding is None:
        return targets.output_to_classes(probabilities, setup.target, scheme=setup.task)
    classes = postprocessing.decode(probabilities, setup.target, decoding, scheme=setup.task)
    if classes.dtype == bool:  # a whole-tumor mask, written as its class
        return targets.output_to_classes(classes[..., None], setup.target)
    return classes


def _postprocess(classes, setup, steps, channel_image):
    """Postprocessing of predicted classes (the model's task's, or classic); a whole-tumor map goes in as a bool mask.

    `channel_image(c)` is input channel c (D, H, W) on the classes' grid; the
    images the steps read (Step.modalities) are taken from it by the model's modalities.
    """
    wanted = {m for step in steps for m in postprocessing.STEPS[step["name"]].modalities}
    images = {m: channel_image(setup.modalities.index(m)) for m in wanted if m in setup.modalities}
    if not targets.get_target(setup.target).is_mask:
        return postprocessing.postprocess(classes, list(steps), scheme=setup.task, images=images)
    mask = postprocessing.postprocess(classes > 0, list(steps), images=images)
    return targets.output_to_classes(mask[..., None], setup.target)


def _write_labels(classes, setup, scheme):
    """The on-disk values of predicted classes: the task's own (setup.task), else classic ones in `scheme`."""
    if setup.task is None:
        return labels.classic_to_labels(classes, scheme)
    if scheme not in (setup.task, None) and labels.get_scheme(scheme).labels != labels.get_scheme(setup.task).labels:
        raise ModelError(f"the model outputs {setup.task}'s classes, which have no {scheme} labels")
    return labels.classes_to_labels(classes, setup.task)


def output_paths(output_dir, case_id):
    """(label map path, probability map path) of a case."""
    return (os.path.join(output_dir, f"{case_id}.nii.gz"),
            os.path.join(output_dir, PROBABILITIES_DIR, f"{case_id}.nii.gz"))


def write_probabilities(probabilities, properties, path):
    """Writes float32 (D, H, W, K) probabilities as a 4-D NIfTI with the source affine."""
    import nibabel as nib

    image = nib.Nifti1Image(probabilities.astype(np.float32), np.asarray(properties["affine"]))
    image.header.set_zooms(tuple(properties["spacing"]) + (1.0,))
    with outputs.atomic_path(path) as tmp:
        nib.save(image, tmp)


@dataclass
class CaseResult:
    """Outcome of one case: its output path and seconds, or the error message; a warning about its input."""

    case_id: str
    path: str | None = None
    seconds: float = 0.0
    error: str | None = None
    warning: str | None = None


def predict_dataset(network, setup, cases, output_dir, settings=PredictSettings(), overwrite=False,
                    on_case=None, progress_for=None):
    """Predicts every case into `output_dir`; a failing case does not stop the others.

    Args:
        network, setup: from `load_predictor`.
        cases: layouts.Case list (e.g. layouts.discover(root).cases).
        output_dir: created if absent; gets <id>.nii.gz per case.
        settings: PredictSettings.
        overwrite: replace existing outputs; without it any existing output
            stops the run before any case is predicted.
        on_case: optional callable(CaseResult) after each case.
        progress_for: optional callable(case) -> callable(done, total) for
            window progress inside a case.

    Returns:
        list of CaseResult in `cases` order.

    Raises:
        OutputExistsError, OutputError: see `check_output_folder`; raised
            before any case is predicted.
    """
    output_dir = os.fspath(output_dir)
    check_output_folder(output_dir, [c.id for c in cases], settings.save_probabilities, overwrite)
    results = []
    # One writer per output folder: a second predict into it is refused (claims.claim_folder).
    with claims.claim_folder(output_dir, "predict"):
        # Again: what was checked may have changed before the claim.
        check_output_folder(output_dir, [c.id for c in cases], settings.save_probabilities, overwrite)
        for case in cases:
            result = _predict_one(network, setup, case, output_dir, settings,
                                  progress_for(case) if progress_for else None)
            results.append(result)
            if on_case is not None:
                on_case(result)
    return results


def check_output_folder(output_dir, case_ids, save_probabilities=False, overwrite=False):
    """Refuses outputs that exist (unless `overwrite`) or cannot be written, before any case is predicted.

    Raises:
        OutputExistsError: an output exists and `overwrite` is False, or one
            is not an output predict writes (LABEL_MAP, PROBABILITY_MAP).
        DataError: two cases share an id, so one output would replace the other.
        OutputError: the folder cannot be created or written.
    """
    kinds = (LABEL_MAP, PROBABILITY_MAP)[: 1 + save_probabilities]
    planned = [pair for case_id in case_ids for pair in zip(output_paths(output_dir, case_id), kinds)]
    _refuse_shared_outputs(case_ids, output_dir)
    existing = [(p, kind) for p, kind in planned if os.path.lexists(p)]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0][0]}: exists ({len(existing)} output(s) in total); "
                                "pass --overwrite to replace")
    for path, kind in existing:
        outputs.refuse_existing(path, overwrite, kind)
    outputs.ensure_writable_folder(output_dir)
    if save_probabilities:
        outputs.ensure_writable_folder(os.path.join(output_dir, PROBABILITIES_DIR))


def _refuse_shared_outputs(case_ids, output_dir):
    """DataError when two cases would write the same output file (one prediction would replace the other)."""
    seen = set()
    for case_id in case_ids:
        if case_id in seen:
            raise DataError(f"case {case_id}: two input cases have this id, so both would be written to "
                            f"{output_paths(output_dir, case_id)[0]}; rename one")
        seen.add(case_id)


def _predict_one(network, setup, case, output_dir, settings, progress):
    start = time.perf_counter()
    label_path, probability_path = output_paths(output_dir, case.id)
    try:
        label_map, probabilities, properties = predict_case(network, setup, case, settings, progress)
        with outputs.atomic_path(label_path) as tmp:
            volumes.write_label_map(label_map, properties, tmp)
        if probabilities is not None:
            write_probabilities(probabilities, properties, probability_path)
    except (BratsKerasError, ValueError, OSError) as error:
        message = user_message(error)
        if case.id not in message:
            message = f"case {case.id}: {message}"
        return CaseResult(case.id, error=message, seconds=time.perf_counter() - start)
    return CaseResult(case.id, path=label_path, seconds=time.perf_counter() - start,
                      warning=properties["input_warning"])
