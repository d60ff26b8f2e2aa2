"""The pretrained models shipped inside the package, and `pretrained:NAME`.

Each shipped model is a small run folder inside this package:

    bratskeras/pretrained/<name>/best.keras    the inference model
    bratskeras/pretrained/<name>/config.json   its run's TrainConfig, exactly as `bratskeras fit` wrote it
    bratskeras/pretrained/<name>/card.json     its model card (CARD_SCHEMA)

They are package data (setup.cfg), read through importlib.resources: nothing
is downloaded and nothing outside the installed package is read. A folder
with none is a valid, empty catalogue. Everywhere a model path is taken
(`bratskeras.load_model`, `predict`, `export`, `fit --init-from`),
"pretrained:NAME" stands for the folder of model NAME (`resolve`); the
folder is a run directory, so the run-directory code reads it unchanged.

No TensorFlow here: `bratskeras pretrained` lists the cards in a fraction of
a second. The parameter count a card states is checked against its model by
the tests (tests/test_pretrained.py), which load every shipped model.
"""

import json
import re
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bratskeras.core.errors import ModelError
from bratskeras.core.run_folder import CONFIG_FILE, MODEL_FILE

PREFIX = "pretrained:"
CARD_FILE = "card.json"
FILES = (MODEL_FILE, CONFIG_FILE, CARD_FILE)
# Folder names are what users type after PREFIX, and the default export names.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
CARD_VERSION = 1

# One evaluation of a card: where its figures come from. Figures are mean Dice per region
# ({"WT": 0.83, ...}, each in [0, 1]), or null with a note that says why (e.g. no real scans).
_EVALUATION = {
    "data": "text?",  # which cases: generator settings and seeds, or which real scans
    "references": "text?",  # whose labels the figures are scored against
    "command": "text?",  # the exact command(s) that give the figures
    "figures": "figures?",
    "note": "text?",  # e.g. the grid the figures are scored on, or why there are none
}
# The model card: field -> kind, or a dict of sub-fields. Kinds: "text" (a non-empty string),
# "texts" (a non-empty list of them), "count" (a positive integer), "seconds" (a positive
# number), "figures" ({region: Dice in [0, 1]}); a trailing "?" allows null or absence.
CARD_SCHEMA = {
    "card_version": "count",  # CARD_VERSION
    "name": "text",  # the folder's name
    "description": "text",  # what the model is, in a sentence or two
    "architecture": {
        "model": "text",  # the registry name; config.json's "model"
        "parameters": "count",  # the loaded model's count_params()
    },
    "training": {
        "data": "text",  # what it was trained on (generated heads: generator, settings, seeds, count)
        "command": "text",  # the exact command(s) that reproduce it, from an empty folder
        "epochs": "count",  # epochs trained
        "duration_s": "seconds",  # wall-clock training time
        "hardware": "text",  # the machine: CPU class, cores, GPU or none
        "date": "text?",
    },
    "evaluation": {
        "synthetic_heldout": _EVALUATION,  # generated heads that training never saw
        "real_scans": _EVALUATION,  # real MRI scans, with whose reference labels
    },
    "limits": "texts",  # what the model is known to do badly or not at all
    "not_validated_on": "texts",  # data it has never been scored on
    "licence": "text",  # the weights' licence note (trained only on generated data)
}


@dataclass(frozen=True)
class PretrainedModel:
    """One shipped model.

    Attributes:
        name: its folder's name; "pretrained:<name>" loads it.
        folder: the run folder (best.keras, config.json, card.json).
        card: the validated model card (CARD_SCHEMA).
        config: its run's config.json as a dict (a TrainConfig's fields).
    """

    name: str
    folder: Path
    card: dict
    config: dict

    @property
    def source(self):
        """What a command takes to use this model: "pretrained:<name>"."""
        return PREFIX + self.name


def shipped_folder():
    """The package folder the shipped models live in (this module's own folder)."""
    # pip installs packages as files, so the resource is a real folder that Keras can open.
    return Path(str(resources.files(__name__)))


def model_names(root=None):
    """Sorted names of the model folders under `root` (default: `shipped_folder()`).

    A model folder is any sub-folder not starting with "_" or "." (so
    __pycache__ is none); an empty catalogue gives ().
    """
    root = Path(root) if root is not None else shipped_folder()
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))))


def catalogue(root=None):
    """Every model under `root` (default: the shipped ones), read and checked, sorted by name.

    Raises:
        ModelError: a folder lacks a file, or its card or config.json is
            broken (one line naming the file and the field).
    """
    return tuple(read_model(Path(root if root is not None else shipped_folder()) / name)
                 for name in model_names(root))


def read_model(folder):
    """The PretrainedModel in `folder`, its card checked against its name and config.json.

    Raises:
        ModelError: a missing file, unreadable JSON, or a card problem.
    """
    folder = Path(folder)
    if not NAME_PATTERN.fullmatch(folder.name):
        raise ModelError(f"{folder}: a pretrained model's folder name must match {NAME_PATTERN.pattern}")
    for filename in FILES:
        if not (folder / filename).is_file():
            raise ModelError(f"{folder}: no {filename}; a pretrained model folder holds {', '.join(FILES)}")
    card, config = _read_json(folder / CARD_FILE), _read_json(folder / CONFIG_FILE)
    check_card(card, folder.name, config, where=folder / CARD_FILE)
    return PretrainedModel(name=folder.name, folder=folder, card=card, config=config)


def _read_json(path):
    try:
        with open(path) as stream:
            value = json.load(stream)
    except ValueError as error:
        raise ModelError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def check_card(card, name, config, where=CARD_FILE):
    """Raises ModelError for the first problem of `card` (a dict) for model `name` with `config`.

    Checks every field of CARD_SCHEMA (present, of its kind, no unknown
    ones), the card version, the name against the folder's, the
    architecture against config.json's model, and that each evaluation
    either gives figures with their data, references and command, or a note
    saying why there are none.
    """
    problem = (_schema_problem(card, CARD_SCHEMA, "")
               or _evaluation_problem(card["evaluation"])
               or _consistency_problem(card, name, config))
    if problem:
        raise ModelError(f"{where}: {problem}")


def _schema_problem(value, schema, path):
    """The first mismatch between `value` and `schema` as one phrase, or None."""
    if not isinstance(value, dict):
        return f"{path or 'the card'} must be a JSON object"
    unknown = sorted(set(value) - set(schema))
    if unknown:
        return f"unknown field {path}{unknown[0]} (the fields are {', '.join(schema)})"
    for key, kind in schema.items():
        field = f"{path}{key}"
        if key not in value and (isinstance(kind, dict) or not kind.endswith("?")):
            problem = f"no field {field}"
        elif isinstance(kind, dict):
            problem = _schema_problem(value[key], kind, field + ".")
        else:
            problem = _kind_problem(value.get(key), kind, field)
        if problem:
            return problem
    return None


def _kind_problem(value, kind, field):
    """Whether one field's value is of its CARD_SCHEMA kind; the phrase saying how not, or None."""
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    checks = {
        "text": (lambda v: isinstance(v, str) and v.strip(), "a non-empty string"),
        "texts": (lambda v: isinstance(v, list) and v and all(isinstance(t, str) and t.strip() for t in v),
                  "a non-empty list of non-empty strings"),
        "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
        "seconds": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                    "a positive number of seconds"),
        "figures": (lambda v: isinstance(v, dict) and v and all(
            isinstance(k, str) and isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d <= 1
            for k, d in v.items()), 'an object of Dice values in [0, 1] like {"WT": 0.83}'),
    }
    test, wanted = checks[kind]
    return None if test(value) else f"{field} must be {wanted}, got {json.dumps(value)}"


def _evaluation_problem(evaluation):
    """Figures need their data, references and command; no figures need a note saying why."""
    for key, entry in evaluation.items():
        if entry.get("figures") is None:
            if not entry.get("note"):
                return f"evaluation.{key} has no figures, so its note must say why"
            continue
        for field in ("data", "references", "command"):
            if not entry.get(field):
                return f"evaluation.{key} gives figures, so it needs its {field}"
    return None


def _consistency_problem(card, name, config):
    if card["card_version"] != CARD_VERSION:
        return f"card_version {card['card_version']} is not {CARD_VERSION}, the one this bratskeras reads"
    if card["name"] != name:
        return f"name {card['name']!r} is not its folder's name {name!r}"
    if card["architecture"]["model"] != config.get("model"):
        return (f"architecture.model {card['architecture']['model']!r} is not config.json's model "
                f"{config.get('model')!r}")
    return None


def is_pretrained(source):
    """True when `source` is a "pretrained:NAME" string."""
    return isinstance(source, str) and source.startswith(PREFIX)


def pretrained_name(source):
    """NAME of a "pretrained:NAME" source, None for anything else (a path, a model)."""
    return source[len(PREFIX):] if is_pretrained(source) else None


def resolve(source, root=None):
    """The run folder of a "pretrained:NAME" source; any other source is returned unchanged.

    Args:
        source: "pretrained:NAME", or a path (str or Path) left as it is.
        root: the catalogue's folder (default: the shipped one).

    Returns:
        Path of the model's folder (best.keras, config.json, card.json), or `source`.

    Raises:
        ModelError: unknown NAME (one line listing the shipped names), or a
            folder without its files.
    """
    name = pretrained_name(source)
    if name is None:
        return source
    root = Path(root) if root is not None else shipped_folder()
    names = model_names(root)
    if name not in names:
        shipped = f"shipped: {', '.join(names)}" if names else "none are shipped with this bratskeras"
        raise ModelError(f"unknown pretrained model {name!r} ({shipped}; `bratskeras pretrained` lists them)")
    folder = root / name
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ModelError(f"{folder}: no {missing[0]}; a pretrained model folder holds {', '.join(FILES)}")
    return folder


def card_text(model, width=100):
    """A PretrainedModel's card as readable text: a heading line, then indented fields."""
    card, config = model.card, model.config
    training, architecture = card["training"], card["architecture"]
    spacing = config.get("spacing")
    grid = f" at {'x'.join(f'{s:g}' for s in spacing)} mm" if spacing else " on the source grid"
    task = f", task {config['task']}" if config.get("task") else ""
    lines = [
        f"{model.name}: {architecture['model']}, {architecture['parameters']:,d} parameters",
        ("input", f"{', '.join(config.get('modalities', ()))}{grid}; output: {config.get('target')}{task}"),
        ("about", card["description"]),
        ("trained on", training["data"]),
        ("training", f"{training['epochs']} epoch{'s' if training['epochs'] != 1 else ''} in "
                     f"{_duration(training['duration_s'])} on {training['hardware']}"
                     + (f" ({training['date']})" if training.get("date") else "")),
        ("reproduce", training["command"], False),
        *_evaluation_lines("synthetic held-out", card["evaluation"]["synthetic_heldout"]),
        *_evaluation_lines("real scans", card["evaluation"]["real_scans"]),
        *(("limit", text) for text in card["limits"]),
        *(("not validated on", text) for text in card["not_validated_on"]),
        ("licence", card["licence"]),
        ("use", f"bratskeras predict {model.source} CASES OUT"),
    ]
    return "\n".join([lines[0]] + [_field(*line, width=width) for line in lines[1:]])


def _evaluation_lines(label, entry):
    """(label, text) of one evaluation, then its command on a line of its own when it has one."""
    figures = entry.get("figures")
    score = ("Dice " + "  ".join(f"{region} {value:.3f}" for region, value in figures.items())) if figures else (
        "no figures")
    yield label, "; ".join([score, *(f"{field}: {entry[field]}" for field in ("data", "references", "note")
                                     if entry.get(field))])
    if entry.get("command"):
        yield "  command", entry["command"], False


def _field(label, text, wrap=True, width=100):
    """'  label: text', wrapped under itself (commands are not: they stay one line to copy)."""
    head = f"  {label + ':':<20}"
    if not wrap:
        return head + text
    return textwrap.fill(text, width=width, initial_indent=head, subsequent_indent=" " * len(head),
                         break_long_words=False, break_on_hyphens=False)


def _duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return " ".join(f"{v} {u}" for v, u in ((hours, "h"), (minutes, "min"), (seconds, "s")) if v) or "0 s"
