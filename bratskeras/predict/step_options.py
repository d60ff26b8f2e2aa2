"""A post-processing step's options: what each takes, its default and its one-line check.

bratskeras.predict.postprocessing's Step rows name their options with these.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bratskeras.predict.cleanup import check_size

REQUIRED = object()  # an Option default meaning "the step needs this option"


def _integer_from(option, least, unit=""):
    """The check of an integer option at least `least` (0 or 1), its message naming `option` and `unit`."""
    kind = "non-negative" if least == 0 else "positive"

    def check(step, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"step {step!r}: {option} must be a {kind} integer{unit}, received {value!r}")

    return check


check_voxels = _integer_from("voxels", 0)
check_depth = _integer_from("depth", 1, " (voxels)")
check_margin = _integer_from("margin", 0, " (voxels)")


def check_size_option(step, value):
    try:
        check_size(value)
    except (TypeError, ValueError):
        raise ValueError(f"step {step!r}: size must be a positive integer or 3 of them (AxBxC), "
                         f"received {value!r}") from None


def check_per(step, value):
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


VOXELS = Option(REQUIRED, check_voxels, "N")


def check_fraction(step, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"step {step!r}: fraction must be a number within [0, 1], received {value!r}")


def check_threshold(step, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"step {step!r}: a threshold must be a number within (0, 1), received {value!r}")


def check_percentile(step, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError(f"step {step!r}: percentile must be a number within [0, 100], received {value!r}")
