"""Scoring a finished run's best.keras on held-out (or validation) cases with predict's tiling."""

import os

import numpy as np

from bratskeras.core import labels, targets
from bratskeras.core.run_folder import RunFolder
from bratskeras.training.prepare import cache_cases, labelled_cases


def heldout_dice(run_dir, cached_cases, config):
    """Mean per-case Dice per region of best.keras on cached (preprocessed) volumes.

    Uses the same sliding-window inference as `bratskeras predict`.

    Returns:
        {"WT": ..., "TC": ..., "ET": ...} ({"WT": ...} for the whole-tumor target).
    """
    from bratskeras.evaluate import voxelwise as metrics
    from bratskeras.predict import model_setup, tiling

    if not os.path.exists(RunFolder(run_dir).best_model) or not cached_cases:
        return {}
    network, setup = model_setup.load_predictor(run_dir)
    regions = tuple(s.upper() for s in targets.get_target(config.target).structures if s.upper() in labels.REGIONS)
    scores = {region: [] for region in regions}
    for case in cached_cases:
        image, seg, _ = case.load()
        windows = model_setup.effective_settings(setup, tiling.WindowSettings(), image.shape[:3])
        probabilities = tiling.sliding_window_predict(network, np.asarray(image, np.float32), windows)
        predicted = targets.output_to_classes(probabilities, config.target, scheme=config.task)
        if config.task:  # the task's classes, scored as the classic regions they make up
            predicted, seg = labels.to_classic(predicted, config.task), labels.to_classic(seg, config.task)
        for region in regions:
            scores[region].append(metrics.dice(metrics.structure_mask(predicted, region.lower()),
                                               metrics.structure_mask(seg, region.lower())))
    return {region: float(np.mean(values)) for region, values in scores.items()}


def evaluate_heldout(run_dir, data_dir, config, cache_dir=None):
    """Mean Dice per region of a run's best.keras on another labelled dataset.

    `cache_dir`: its preprocessing cache (default: cache.cache_dir_for).
    """
    from bratskeras.data import cache

    cache_dir = cache.cache_dir_for(data_dir, cache_dir)
    cases, _ = labelled_cases(data_dir, cache_dir=cache_dir, task=config.task)
    cached = cache_cases(cases, config, cache_dir)
    return heldout_dice(run_dir, cached, config)
