"""A run folder's layout: every file name a `bratskeras fit` run writes, once, as `RunFolder`'s properties.

    RUN_DIR/.bratskeras-run      marker: the process that created the run (training.run_dir)
    RUN_DIR/config.json          resolved TrainConfig (training.config)
    RUN_DIR/dataset.json         the data folder it trains on and its cases' sizes
    RUN_DIR/runtime.json         precision, strategy, devices chosen
    RUN_DIR/splits.json, environment.json, preset_changes.json, results.json
                                 the split, versions, changes from the preset, final
                                 figures (training.records)
    RUN_DIR/history.csv          one row per finished epoch
    RUN_DIR/curves.png           loss, Dice per region, learning rate
    RUN_DIR/tensorboard/         TensorBoard logs
    RUN_DIR/best.keras           inference model at the best validation Dice
    RUN_DIR/checkpoints/epoch-NNNN.keras   every `checkpoint_every` epochs
    RUN_DIR/state/               resume states (training.resume_state)
    RUN_DIR/demo_data/           the demo's phantoms, and their cache in demo_data/cache

Paths only: nothing here reads or writes a file, so predict, export and
models.saving name a run's files without importing training or TensorFlow.
"""

import os
import re
from dataclasses import dataclass

# The file names, each written once; RunFolder's properties join them to its path.
CONFIG_FILE = "config.json"
MODEL_FILE = "best.keras"
DATASET_FILE = "dataset.json"
RUNTIME_FILE = "runtime.json"
SPLITS_FILE = "splits.json"
ENVIRONMENT_FILE = "environment.json"
PRESET_CHANGES_FILE = "preset_changes.json"
RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
STATE_DIR = "state"
# Created first, with O_EXCL, by the one process that makes a folder a run.
MARKER_FILE = ".bratskeras-run"
# Inside a demo's run folder: its phantoms (train/ and heldout/), so that --resume finds them ...
DEMO_DATA_DIR = "demo_data"
# ... and, inside that, their preprocessing cache, so that deleting the demo data deletes all of it.
DEMO_CACHE_DIR = "cache"
# checkpoints/epoch-NNNN.keras: the periodic checkpoint after NNNN finished epochs.
CHECKPOINT_NAME = re.compile(r"epoch-([0-9]+)\.keras")


def checkpoint_name(epoch):
    """"epoch-NNNN.keras", the checkpoint file of `epoch` finished epochs."""
    return f"epoch-{epoch:04d}.keras"


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder's files (none need exist).

    Attributes:
        path: the run directory (as given: relative paths stay relative).
    """

    path: str

    def __post_init__(self):
        object.__setattr__(self, "path", os.fspath(self.path))

    def _join(self, *names):
        return os.path.join(self.path, *names)

    @property
    def config(self):
        return self._join(CONFIG_FILE)

    @property
    def best_model(self):
        return self._join(MODEL_FILE)

    @property
    def dataset(self):
        return self._join(DATASET_FILE)

    @property
    def runtime(self):
        return self._join(RUNTIME_FILE)

    @property
    def splits(self):
        return self._join(SPLITS_FILE)

    @property
    def environment(self):
        return self._join(ENVIRONMENT_FILE)

    @property
    def preset_changes(self):
        return self._join(PRESET_CHANGES_FILE)

    @property
    def results(self):
        return self._join(RESULTS_FILE)

    @property
    def history(self):
        return self._join(HISTORY_FILE)

    @property
    def curves(self):
        return self._join(CURVES_FILE)

    @property
    def tensorboard(self):
        return self._join(TENSORBOARD_DIR)

    @property
    def checkpoints(self):
        return self._join(CHECKPOINTS_DIR)

    @property
    def state(self):
        return self._join(STATE_DIR)

    @property
    def marker(self):
        return self._join(MARKER_FILE)

    @property
    def demo_data(self):
        return self._join(DEMO_DATA_DIR)

    @property
    def demo_cache(self):
        return self._join(DEMO_DATA_DIR, DEMO_CACHE_DIR)

    def checkpoint(self, epoch):
        """checkpoints/epoch-NNNN.keras of `epoch` finished epochs."""
        return self._join(CHECKPOINTS_DIR, checkpoint_name(epoch))

    def has_config(self):
        """True when the folder holds a run (its config.json)."""
        return os.path.isfile(self.config)

    @classmethod
    def of_model_file(cls, path):
        """The run folder a .keras file would belong to: its folder, or the one above checkpoints/."""
        folder = os.path.dirname(os.fspath(path))
        return cls(os.path.dirname(folder) if os.path.basename(folder) == CHECKPOINTS_DIR else folder)
