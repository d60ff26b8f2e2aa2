"""Several models predicting as one: the mean of their probabilities (nnU-Net's ensembles of folds).

`predict MODEL [MODEL ...] INPUT_DIR OUTPUT_DIR` runs each model of an
Ensemble through its own input contract (its spacing, crop and window), up
to probabilities on the case's source grid, adds them into one running sum
per case (so one model's probabilities are held beside the sum, never all
of them), and decodes the mean once: the target's classes, post-processing,
labels (bratskeras.predict.inference).

Only models whose outputs mean the same thing can be averaged: they must
agree on what AGREEING_FIELDS names (their contracts' target, task and
modalities in channel order). How each prepares a case (spacing,
normalisation, crop, patch size) may differ: each is undone before the mean.
The mean is post-processed once, so members whose contracts carry different
post-processing steps are refused unless the caller names the steps
(`predict --postprocess`; check_postprocess).

From Python (what `predict RUN1 RUN2 DATA OUT` does):

    members = [Member(path, *model_setup.load_predictor(path)) for path in ("fold0", "fold1")]
    ensemble = Ensemble(members)
    inference.predict_dataset(ensemble, ensemble.setup, layouts.discover("DATA").cases, "OUT")
"""

from dataclasses import dataclass

from bratskeras.core.errors import ConfigError
from bratskeras.data.contract import steps_text

# What decides an output's meaning, as contract fields: members must agree on each.
AGREEING_FIELDS = ("target", "task", "modalities")


@dataclass(frozen=True)
class Member:
    """One model of an ensemble.

    Attributes:
        name: the model as the user named it (a path or pretrained:NAME), for messages.
        predictor: from model_setup.load_predictor: (B, d, h, w, C) -> (B, d, h, w, K) probabilities.
        setup: its model_setup.ModelSetup.
    """

    name: str
    predictor: object
    setup: object


@dataclass(frozen=True)
class Ensemble:
    """Models whose probabilities are averaged; `inference.predict_case` takes one as its network.

    Attributes:
        members: tuple of Member, at least one, agreeing on AGREEING_FIELDS
            (checked when the Ensemble is made).
    """

    members: tuple

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(self.members))
        if not self.members:
            raise ValueError("an ensemble needs at least one model")
        check_agreement(self.members)

    @property
    def setup(self):
        """The ModelSetup whose target, task and modalities every member shares (the first member's)."""
        return self.members[0].setup


def _field(setup, name):
    value = getattr(setup.contract, name)
    if name == "modalities":
        return ",".join(value)
    return "classic" if value is None else value


def check_agreement(members):
    """Refuses members whose outputs mean different things.

    Args:
        members: Members (or anything with .name and .setup).

    Raises:
        ConfigError: one line naming the first member, the first one that
            differs from it, and the field.
    """
    first = members[0]
    for member in members[1:]:
        for name in AGREEING_FIELDS:
            mine, theirs = _field(first.setup, name), _field(member.setup, name)
            if mine != theirs:
                raise _disagreement(first.name, member.name, name, mine, theirs)


def check_postprocess(members):
    """Refuses members whose contracts carry different post-processing: the mean is post-processed once.

    Called where the caller has not named the steps itself (predict without
    --postprocess); otherwise the caller's steps apply to every member's mean.

    Args:
        members: Members (or anything with .name and .setup).

    Raises:
        ConfigError: one line naming the first member, the first one whose
            steps differ, both steps, and --postprocess as the way out.
    """
    first = members[0]
    for member in members[1:]:
        mine, theirs = first.setup.contract.postprocess, member.setup.contract.postprocess
        if tuple(mine) != tuple(theirs):
            raise ConfigError(f"{first.name} and {member.name} carry different post-processing "
                              f"({steps_text(mine)} vs {steps_text(theirs)}): the ensemble's mean is "
                              f"post-processed once, so name its steps with --postprocess (or 'none')")


def check_tasks(tasks_by_model):
    """Refuses, before any model is loaded, models trained on different tasks.

    Args:
        tasks_by_model: [(model name, its task or None)] (model_setup.run_task).

    Raises:
        ConfigError: one line naming both models and the field "task".
    """
    (first, task), *others = tasks_by_model
    for name, other in others:
        if other != task:
            raise _disagreement(first, name, "task", task or "classic", other or "classic")


def _disagreement(first, other, field, mine, theirs):
    """The one-line ConfigError for two models that disagree on `field`."""
    return ConfigError(f"{first} and {other} disagree on {field} ({mine} vs {theirs}): "
                       f"an ensemble averages models of one {', '.join(AGREEING_FIELDS)}")
