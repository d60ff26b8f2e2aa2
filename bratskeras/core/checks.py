"""Value rules shared by the configuration classes and the transforms: a check and the words that say what it wants.

A rule is a pair (check, what): `check(value)` is True for an acceptable
value and `what` completes "field X must be ...". TrainConfig
(training.config), its config.json reader and data.PipelineConfig take their
fields' rules from here, so a field is checked by one function wherever it
is set.
"""

import math
import numbers


def is_number(value):
    """A finite int or float (not a bool, NaN, inf or a string from a hand-edited JSON file)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_real(value):
    """Any real number, numpy's included, but not a bool (infinities allowed: range ends may be open)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def one_of(choices):
    """A rule: one of `choices` (strings, or True/False)."""
    return (lambda value: isinstance(value, (str, bool)) and value in choices), f"one of {', '.join(map(str, choices))}"


def between(low, high, low_open=False, high_open=False):
    """A rule: a number in [low, high] (open ends as asked; high None: no upper end)."""
    def check(value):
        return (is_number(value) and (value > low if low_open else value >= low)
                and (high is None or (value < high if high_open else value <= high)))
    brackets = ("(" if low_open else "[") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}" + (
        ")" if high_open else "]"))
    return check, f"a number in {brackets}"


def integer_from(low):
    """A rule: an integer >= low."""
    return (lambda value: is_integer(value) and value >= low), f"an integer >= {low}"


def _is_sizes(value):
    """Three positive integers (a list in JSON)."""
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(is_integer(v) and v >= 1 for v in value)


def pair_within(low=-math.inf, high=math.inf):
    """A rule: a (min, max) pair of numbers with low <= min <= max <= high (augmentation and generator ranges)."""
    def check(value):
        pair = tuple(value) if isinstance(value, (tuple, list)) else ()
        return len(pair) == 2 and all(map(is_real, pair)) and low <= pair[0] <= pair[1] <= high
    return check, f"(min, max) within [{low}, {high}]"


SIZES = (_is_sizes, "three positive integers")
BOOLEAN = (lambda value: isinstance(value, bool), "true or false")
INTEGER = (is_integer, "an integer")


def failure(rule, name, value):
    """None when `value` passes `rule`, else "NAME must be WHAT, got VALUE" (VALUE as repr)."""
    check, what = rule
    return None if check(value) else f"{name} must be {what}, got {value!r}"
