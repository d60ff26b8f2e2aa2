"""The phantom generators `synth --kind` offers (KINDS), one row each: what it needs and what it takes.

Each row's maker imports its generator when asked (bratskeras.synth.phantoms'
geometric phantoms, bratskeras.synth.anatomy's template heads,
bratskeras.synth.synthseg's domain-randomised heads), so naming the kinds
(the CLI's choices) imports none of them.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One row of KINDS: a phantom generator `synth --kind` offers.

    Attributes:
        name: the kind's name.
        maker: (settings, voxel_mm) -> make(shape, seed) -> (images, classes);
            raises ValueError for settings it does not know.
        needs_anatomy: draws on the MNI152 template (the `anatomy` extra).
        takes_task: writes a 2023-2025 task's fluids and classes (`task_phantom`).
        takes_voxel_size: draws heads at any isotropic voxel size.
        settings: the names `synth --settings` offers for it (its generator's
            table's keys, named here so the CLI imports no generator;
            tests/test_synthseg.py checks they agree).
    """

    name: str
    maker: object
    needs_anatomy: bool = True
    takes_task: bool = False
    takes_voxel_size: bool = True
    settings: tuple = ("default",)


def _simple_maker(settings, voxel_mm):
    """phantoms.make_case: one shape of phantom, no settings, 1 mm voxels."""
    from bratskeras.synth import phantoms

    return phantoms.make_case


def _anatomy_maker(settings, voxel_mm):
    """anatomy.make_case with `settings` (an anatomy.SETTINGS name or an AnatomySettings)."""
    from bratskeras.synth import anatomy

    if isinstance(settings, str):
        if settings not in anatomy.SETTINGS:
            raise ValueError(f"unknown anatomy settings {settings!r}; expected one of {', '.join(anatomy.SETTINGS)}")
        settings = anatomy.SETTINGS[settings]
    return lambda shape, seed: anatomy.make_case(shape, seed, settings, voxel_mm)


def _synthseg_maker(settings, voxel_mm):
    """synthseg.make_case with `settings` (a synthseg.GENERATORS name or a tuple of transforms)."""
    from bratskeras.synth import synthseg

    if isinstance(settings, str) and settings not in synthseg.GENERATORS:
        raise ValueError(f"unknown synthseg generator {settings!r}; expected one of {', '.join(synthseg.GENERATORS)}")
    return lambda shape, seed: synthseg.make_case(shape, seed, settings, voxel_mm)


# "simple": bratskeras.synth.phantoms' geometric phantoms (fast, no extra package);
# "anatomy": bratskeras.synth.anatomy's cases on the MNI152 template (the `anatomy` extra).
# "synthseg": bratskeras.synth.synthseg's domain-randomised heads on the same template (the pretrained models' data).
KINDS = {kind.name: kind for kind in (
    Kind("simple", _simple_maker, needs_anatomy=False, takes_task=True, takes_voxel_size=False),
    Kind("anatomy", _anatomy_maker, settings=("default", "heldout")),
    Kind("synthseg", _synthseg_maker, settings=("default", "heldout", "basic", "mimics", "faint", "fading", "subtle", "lowres", "plexus")),
)}
# Every name `synth --settings` takes, in the kinds' order.
SETTINGS = tuple(dict.fromkeys(name for kind in KINDS.values() for name in kind.settings))


def case_maker(kind, settings, task, voxel_mm=1.0):
    """make_case(shape, seed) -> (images, classes) of the phantom kind asked for (a row of KINDS).

    Raises:
        ValueError: unknown kind or settings; a task for a kind without one.
        ConfigError: anatomy without nilearn (the message says what to install).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {', '.join(KINDS)}")
    row = KINDS[kind]
    if task is not None and not row.takes_task:
        raise ValueError(f"{kind} phantoms have the classic NCR/ED/ET classes: write a --task with kind simple")
    if row.needs_anatomy:
        from bratskeras.synth import anatomy

        anatomy.check_available()
    return row.maker(settings, voxel_mm)
