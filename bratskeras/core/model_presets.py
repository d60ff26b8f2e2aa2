"""The registered models as rows of plain data with their metadata, free of TensorFlow.

As keras-hub presets carry their metadata, each `ModelPreset` row says what a
model is: its description, the family that builds it and that family's
arguments, the input modalities it is made for, the targets its output can
stand for, its stored parameter count, the paper (and the table under
bratskeras/reference/) it reproduces and its default crop. `FAMILIES` holds
what follows from a family's arguments (output kind, output channels, number
of poolings), so a caller asks the row, never the model's name.

`bratskeras.models.registry` maps a row's family to its build function;
`bratskeras models` prints these rows in a fraction of a second, without
Keras. The stored counts cannot drift: tests/test_models.py builds every
model and compares.
"""

import json
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from bratskeras.core.errors import ModelError
from bratskeras.core.labels import ALL_MODALITIES

# Four 2x2x2 poolings in the FLAIR paper's Table 1 (filters 32, 64, 128, 256, 512):
# spatial sizes divisible by 16 need no padding. models/flair_unet.py builds with it.
FLAIR_UNET_POOLINGS = 4


@dataclass(frozen=True)
class Family:
    """What follows from a model family's arguments (its build function: models.registry.BUILDERS).

    Attributes:
        output: "logits" (the caller adds the target's activation) or
            "probabilities" (the network ends in its own sigmoid).
        classes_arg: the argument that sets the output channels, or None when
            the family has one fixed output channel (flair-unet's sigmoid).
        poolings: callable(args dict) -> number of 2x poolings (sizes must be
            multiples of 2**poolings to need no padding).
    """

    output: str
    classes_arg: str | None
    poolings: object

    def output_channels(self, args):
        """Channels C of the output (batch, D, H, W, C) built with `args`."""
        return args[self.classes_arg] if self.classes_arg else 1

    def pooling_multiple(self, args):
        """2**poolings: spatial sizes that need no padding with `args`."""
        return 2 ** self.poolings(args)


FAMILIES = {
    "flair_unet": Family(output="probabilities", classes_arg=None, poolings=lambda args: FLAIR_UNET_POOLINGS),
    "unet3d": Family(output="logits", classes_arg="num_classes", poolings=lambda args: args["levels"] - 1),
}


@dataclass(frozen=True)
class PaperTable:
    """The paper's figures a model is compared with (`bratskeras summary NAME --compare`).

    Attributes:
        file: a JSON file under bratskeras/reference/.
        compare: how (models.summary.COMPARISONS): "layers", row by row
            against the file's "layers" (name, type, params) and its
            "total_params"; "total", the total of the file's models[NAME].
    """

    file: str
    compare: str


@dataclass(frozen=True)
class ModelPreset:
    """One registered model and its metadata.

    Attributes:
        name: registry name (`bratskeras.build_model(name)`).
        description: one line for `bratskeras models`.
        family: the builder family (FAMILIES and models.registry.BUILDERS key).
        args: the family's arguments, read-only; input_shape is (D, H, W, C),
            sizes may be None.
        modalities: the input modalities it is made for, in channel order.
        targets: the training targets its output can stand for (bratskeras.core.targets).
        params: its parameter count as built with `args`, stored so that
            listing models needs no build.
        paper: the paper it reproduces (its key in reference/paper_results.json).
        table: the PaperTable it is compared with.
        default_crop: the (D, H, W) its paper crops a case to and builds the
            model for, or None (any size; the whole volume).
    """

    name: str
    description: str
    family: str
    args: MappingProxyType
    modalities: tuple
    targets: tuple
    params: int
    paper: str
    table: PaperTable
    default_crop: tuple | None = None

    @property
    def output(self):
        """"logits" or "probabilities" (Family.output)."""
        return FAMILIES[self.family].output

    @property
    def classes_arg(self):
        return FAMILIES[self.family].classes_arg

    @property
    def input_channels(self):
        """C of the input (batch, D, H, W, C): one per modality."""
        return len(self.modalities)

    @property
    def output_channels(self):
        return FAMILIES[self.family].output_channels(self.args)

    @property
    def pooling_multiple(self):
        """2**poolings of the preset's arguments: spatial sizes that need no padding."""
        return FAMILIES[self.family].pooling_multiple(self.args)

    def metadata(self):
        """A JSON-able dict of the row, the paper's citation read from its table (`bratskeras models --json`)."""
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params,
            "family": self.family,
            "modalities": list(self.modalities),
            "targets": list(self.targets),
            "output": self.output,
            "output_channels": self.output_channels,
            "pooling_multiple": self.pooling_multiple,
            "default_crop": list(self.default_crop) if self.default_crop else None,
            "paper": self.paper,
            "paper_table": f"bratskeras/reference/{self.table.file}",
            "paper_source": load_reference(self.table.file)["source"],
        }


def _flair_unet():
    crop = (192, 192, 154)
    return ModelPreset(
        name="flair-unet",
        description="FLAIR-only 5-level 3D U-Net, whole tumor as one sigmoid channel",
        family="flair_unet",
        args=MappingProxyType({"input_shape": (*crop, 1), "dropout": 0.2}),
        modalities=("flair",),
        targets=("whole_tumor",),
        params=13_522_721,
        paper="flair-3d-unet-brats2017",
        table=PaperTable("flair_unet_table1.json", "layers"),
        default_crop=crop,
    )


def _unet3d(name, description, levels, base_filters, convs_per_block, params):
    return ModelPreset(
        name=name,
        description=f"{description}: {levels}-level multiclass 3D U-Net, base {base_filters} filters, "
                    f"{convs_per_block} convs per block",
        family="unet3d",
        args=MappingProxyType({
            "input_shape": (None, None, None, len(ALL_MODALITIES)), "levels": levels, "base_filters": base_filters,
            "convs_per_block": convs_per_block, "dropout": 0.3, "num_classes": 4}),
        modalities=ALL_MODALITIES,
        targets=("classes", "regions", "whole_tumor"),
        params=params,
        paper="lightweight-3d-unet-brats2020",
        table=PaperTable("lightweight_family.json", "total"),
    )


MODEL_PRESETS = {preset.name: preset for preset in (
    _flair_unet(),
    _unet3d("lightweight-unet", "the paper's selected lightweight model", 3, 16, 2, 340_596),
    _unet3d("medium-unet-16", "a larger model the paper compared", 4, 16, 4, 2_867_956),
    _unet3d("medium-unet-32", "a larger model the paper compared", 4, 32, 4, 11_465_188),
    _unet3d("deep-unet-16", "a larger model the paper compared", 5, 16, 4, 11_536_756),
    _unet3d("deep-unet-32", "a larger model the paper compared", 5, 32, 4, 46_137_060),
)}

# The FLAIR paper's crop of a BraTS case (D, H, W), the flair-unet row's: the name the
# preprocessing and training presets import.
FLAIR_PAPER_CROP = MODEL_PRESETS["flair-unet"].default_crop


def list_models():
    """Names accepted by `bratskeras.build_model`, in registry order."""
    return list(MODEL_PRESETS)


def get_preset(name):
    """The ModelPreset row of `name`. Raises ModelError naming the registered models."""
    if name not in MODEL_PRESETS:
        raise ModelError(f"unknown model {name!r}; expected one of: {', '.join(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]


def parameter_count(name):
    """The stored parameter count of registered model `name` (its preset's arguments)."""
    return MODEL_PRESETS[name].params


def load_reference(filename):
    """Reads one of the papers' tables shipped in bratskeras/reference/ (a dict)."""
    text = resources.files("bratskeras").joinpath("reference", filename).read_text()
    return json.loads(text)
