"""A configuration field written once: its default, its rule, its error message and its CLI flag.

`setting(...)` is a `dataclasses.field` whose metadata carries the rest, so
TrainConfig (training.config) declares each field in one line group, and
every reader takes what it needs from there:

    TrainConfig.__post_init__   the rule, with the field's own message (`problem`)
    config.json's reader        the rule, as "field NAME must be WHAT" (`rule_of`)
    `bratskeras fit`            the flag, its help and its kind (`cli_fields`;
                                bratskeras.cli.train makes the click options)
"""

import dataclasses
from dataclasses import dataclass

# How a flag's text becomes the field's value (bratskeras.cli.train holds the parser of each kind).
CLI_KINDS = ("text", "int", "float", "choice", "switch", "sizes", "spacing", "key_values", "model", "steps")


@dataclass(frozen=True)
class Flag:
    """A field's `bratskeras fit` option.

    Attributes:
        name: the flag ("--batch-size").
        kind: one of CLI_KINDS: "choice" offers `choices`; "switch" is an
            on-only flag (True, or absent: the preset's value); "sizes" reads
            D,H,W; "spacing" 2 or 2,2,2 mm; "key_values" a repeated
            KEY=VALUE; "model" a model source (pretrained:NAME or a path);
            "steps" a repeated post-processing step (NAME[:KEY=VALUE,...]).
        help: the option's help text (None: none).
        choices: the accepted values of a "choice".
        metavar: the placeholder shown in --help (None: click's).
    """

    name: str
    kind: str = "text"
    help: str | None = None
    choices: tuple = ()
    metavar: str | None = None

    def __post_init__(self):
        if self.kind not in CLI_KINDS:
            raise ValueError(f"flag kind must be one of {CLI_KINDS}, got {self.kind!r}")


def setting(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, rule, refuse=None, flag=None):
    """A dataclass field with its rule, message and flag in its metadata.

    Args:
        default, factory: the field's default value, or a function making it.
        rule: (check, what) from bratskeras.core.checks: what the value must be.
        refuse: the message when the check fails, a format string of
            `value` (None: "NAME must be WHAT, got VALUE").
        flag: the field's Flag, or None (no option of its own).
    """
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={"rule": rule, "refuse": refuse, "flag": flag})


def rule_of(field):
    """The (check, what) rule of a dataclass field declared with `setting`."""
    return field.metadata["rule"]


def problem(field, value):
    """None when `value` passes `field`'s rule, else the field's message."""
    check, what = rule_of(field)
    if check(value):
        return None
    refuse = field.metadata["refuse"]
    return refuse.format(value=value) if refuse else f"{field.name} must be {what}, got {value!r}"


def cli_fields(cls):
    """[(field name, Flag)] of the dataclass `cls`'s fields that have a flag, in declaration order."""
    return [(f.name, f.metadata["flag"]) for f in dataclasses.fields(cls) if f.metadata.get("flag") is not None]
