"""Keras callbacks of a run: logs, plots, checkpoints and resumable state.

Keras' ReduceLROnPlateau and EarlyStopping reset their counters in
`on_train_begin`; the resumable subclasses here put back the saved counters
right after, so a resumed run takes the same decisions as an uninterrupted one.
"""

import csv
import io
import os
import time

import keras

from bratskeras.core.labels import REGION_KEYS
from bratskeras.core.run_folder import RunFolder
from bratskeras.models.saving import inference_model
from bratskeras.platform.outputs import atomic_path
from bratskeras.training import resume_state
from bratskeras.training import run_dir as run_files


class _RestoresState:
    """Puts saved counters back after Keras' own on_train_begin reset them."""

    def __init__(self, initial_state=None, **kwargs):
        super().__init__(**kwargs)
        self.initial_state = initial_state or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key, value in self.initial_state.items():
            setattr(self, key, value)


class ResumableReduceLROnPlateau(_RestoresState, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose wait/best/cooldown survive a resume."""

    def get_state(self):
        return {"wait": int(self.wait), "best": float(self.best),
                "cooldown_counter": int(self.cooldown_counter)}


class ResumableEarlyStopping(_RestoresState, keras.callbacks.EarlyStopping):
    """EarlyStopping whose wait/best survive a resume."""

    def get_state(self):
        best = self.best if self.best is not None else float("inf")
        return {"wait": int(self.wait), "best": float(best)}


class TimeLimitReached(Exception):
    """Raised inside `fit` when the wall-clock budget ends in the middle of an epoch."""


class TimeLimit(keras.callbacks.Callback):
    """Stops training at a wall-clock deadline without losing a finished epoch.

    After each epoch (placed after RunFiles, so that epoch is saved and the
    run stays resumable) it stops if the next epoch, expected to take as long
    as the slowest one since the first, would end past the deadline. The first
    epoch is left out of that estimate once there is another: it also traces
    and compiles the train and validation steps (on 2 CPU cores a 40-step
    epoch took 1.5x as long as the next ones, and counting it stopped the
    demo a whole epoch early). If the deadline passes in the middle of an
    epoch anyway (a first epoch longer than the whole budget), it raises
    TimeLimitReached: that epoch is abandoned, as a kill would, and the run
    resumes from the last saved one.

    Args:
        seconds: the budget, counted from this object's creation.
        clock: a monotonic clock in seconds (default time.monotonic).
    """

    def __init__(self, seconds, clock=None):
        super().__init__()
        self.clock = clock or time.monotonic
        self.deadline = self.clock() + seconds
        self.epoch_seconds = []
        self.reached = False
        self._epoch_start = None

    @property
    def expected_epoch(self):
        """Seconds the next epoch is expected to take: the slowest after the first (the first alone at first)."""
        later = self.epoch_seconds[1:] or self.epoch_seconds
        return max(later, default=0.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        if self.clock() > self.deadline:
            self.reached = True
            raise TimeLimitReached()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self.epoch_seconds.append(now - self._epoch_start)
        if now + self.expected_epoch > self.deadline:
            self.reached = True
            self.model.stop_training = True


def _learning_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class RunFiles(keras.callbacks.Callback):
    """Writes history.csv, best.keras, periodic checkpoints, resume state and curves.png.

    Runs last among the callbacks of an epoch, so the states it saves include
    the learning-rate and early-stopping decisions of that epoch. history.csv's
    epoch_seconds is the wall-clock time from the epoch's start to its end
    (training steps and whole-volume validation, before this epoch's files).

    Args:
        run_dir: the run directory.
        network: the functional model to save (the trained model may wrap it).
        contract: the run's bratskeras.data.contract.InputContract, stored in
            every .keras written (a copied best.keras keeps its spacing).
        monitor: the validation Dice that selects best.keras (higher is better).
        checkpoint_every: epochs between checkpoints/epoch-NNNN.keras.
        stateful_callbacks: {name: callback with get_state()} saved for resume.
        best_score: best monitored value so far (from a resumed state).
        chief: False on non-chief workers, which then write nothing.
    """

    def __init__(self, run_dir, network, contract, monitor, checkpoint_every, stateful_callbacks,
                 best_score=None, chief=True):
        super().__init__()
        self.run_dir = run_dir
        self.folder = RunFolder(run_dir)
        self.network = network
        self.contract = contract
        self.monitor = monitor
        self.checkpoint_every = checkpoint_every
        self.stateful_callbacks = stateful_callbacks
        self.best_score = best_score
        self.chief = chief
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = _learning_rate(self.model)
        if self._epoch_start is not None:
            logs["epoch_seconds"] = round(time.monotonic() - self._epoch_start, 3)
        finished = epoch + 1
        if not self.chief:
            return
        self._append_history(finished, logs)
        score = logs.get(self.monitor)
        is_best = score is not None and (self.best_score is None or score > self.best_score)
        is_checkpoint = finished % self.checkpoint_every == 0
        if is_best or is_checkpoint:
            clean = inference_model(self.network)
        if is_best:
            self.best_score = float(score)
            run_files.atomic_save_model(clean, self.folder.best_model, self.contract)
        if is_checkpoint:
            run_files.atomic_save_model(clean, self.folder.checkpoint(finished), self.contract)
        resume_state.save_state(self.run_dir, finished, self.network, self.model.optimizer, {
            "learning_rate": logs["learning_rate"],
            "best_score": self.best_score,
            "stopped": bool(self.model.stop_training),
            "callbacks": {name: cb.get_state() for name, cb in self.stateful_callbacks.items()},
        })
        plot_curves(self.folder.history, self.folder.curves)

    def _append_history(self, epoch, logs):
        path = self.folder.history
        rows = read_history(path)
        # A resumed run re-does the epoch that was in progress: drop any later rows.
        rows = [row for row in rows if int(row["epoch"]) < epoch]
        rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        run_files.atomic_write_text(path, buffer.getvalue())


def read_history(path):
    """history.csv's rows as dicts of strings ([] when there is no file yet)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def plot_curves(history_csv, png_path):
    """Loss, Dice per region and learning rate per epoch (the lightweight paper's figure 4)."""
    # A Figure without pyplot leaves the user's matplotlib backend alone (see visualize.write_overlay).
    from matplotlib.figure import Figure

    rows = read_history(history_csv)
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]

    def series(key):
        return [float(r[key]) if r.get(key, "") != "" else float("nan") for r in rows]

    figure = Figure(figsize=(15, 4))
    axes = figure.subplots(1, 3)
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in rows[0]:
            axes[0].plot(epochs, series(key), style, label=key)
    axes[0].set_title("loss")
    for region in REGION_KEYS:
        for prefix, style in (("", "-"), ("val_", "--")):
            key = f"{prefix}dice_{region}"
            if key in rows[0]:
                axes[1].plot(epochs, series(key), style, label=key)
    axes[1].set_title("Dice per region")
    axes[1].set_ylim(0, 1)
    axes[2].plot(epochs, series("learning_rate"))
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, dpi=80)
