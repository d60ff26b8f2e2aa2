"""What `fit` says while it runs: a header before training (like nnU-Net's), progress, warnings.

The header names, as each becomes known: the run folder; the data folder,
its labelled cases and the cache folder; the train/validation split; the
caching progress; the patch against the preprocessed volume sizes (with a
warning when it is larger); the precision and why; the model, its
parameters and what the run changed from its preset; the epochs to train.
"""

import json
import sys


class FitLog:
    """Where `fit`'s header, progress and warnings go.

    Args:
        echo: called with each header or progress line (default print).
        quiet: leave out the header and progress lines; warnings still go out.
        warn: called with each warning line (default: print to stderr).
    """

    def __init__(self, echo=print, quiet=False, warn=None):
        self.echo = echo
        self.quiet = quiet
        self.warn = warn or (lambda line: print(line, file=sys.stderr))

    def line(self, text):
        if not self.quiet:
            self.echo(text)

    def warning(self, text):
        self.warn(f"warning: {text}")

    def progress(self, what):
        """A progress(done, total) callback printing "  what k/N" at most once per tenth (every case up to 10)."""
        def report(done, total):
            if done == total or done * 10 // total > (done - 1) * 10 // total:
                self.line(f"  {what} {done}/{total}")
        return report


def describe_split(config, n_train, n_validation):
    """'4 training, 1 validation cases (fold 0 of 5, split seed 42)' or '(80/20 split, ...)'."""
    how = (f"fold {config.fold} of {config.folds}" if config.folds
           else f"{round(100 * (1 - config.val_fraction))}/{round(100 * config.val_fraction)} split")
    return f"split: {n_train} training, {n_validation} validation cases ({how}, split seed {config.split_seed})"


def describe_precision(policy, details):
    """'precision: float32 (auto: CPU class AVX2: no native bfloat16)', from runtime.choose_precision's details."""
    if details.get("requested") != "auto":
        return f"precision: {policy} (as configured)"
    reason = details.get("reason", "")
    if "float32_seconds" in details:
        reason += (f": float32 {details['float32_seconds'] * 1000:.0f} ms, bfloat16 "
                   f"{details['bfloat16_seconds'] * 1000:.0f} ms")
    return f"precision: {policy} (auto: {reason})"


def _value(value):
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    return json.dumps(value) if isinstance(value, (list, dict)) or value is None else f"{value:g}" if isinstance(
        value, float) else str(value)


def describe_preset(preset, changes):
    """'preset lightweight2020, changed: learning_rate 0.0005 -> 0.002, ...' (records.preset_changes)."""
    if not changes:
        return f"preset {preset}, unchanged"
    shown = ", ".join(f"{name} {_value(change['preset'])} -> {_value(change['run'])}"
                      for name, change in changes.items())
    return f"preset {preset}, changed: {shown}"
