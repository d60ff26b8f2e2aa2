"""`bratskeras inspect` and `bratskeras synth`: look at a dataset, or write a synthetic one."""

import json

import click

from bratskeras.cli.models import parse_shape
from bratskeras.core.labels import TASKS
from bratskeras.data.layouts import NAMES as LAYOUT_NAMES
from bratskeras.synth.kinds import KINDS, SETTINGS
from bratskeras.synth.writers import DEFAULT_LAYOUT
from bratskeras.training.demo import UNSEEN_SEED

TASK_HELP = ("2023+ label scheme of every case; needed for 2024 post-treatment glioma (gli), "
             "whose BraTS-GLI folders look like 2023's.")


@click.command("inspect")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--layout", type=click.Choice(LAYOUT_NAMES), help="Override layout detection.")
@click.option("--task", type=click.Choice(TASKS), help=TASK_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_command(data_dir, layout, task, as_json):
    """List a dataset's cases, every problem (exit 1), warning (inputs unlike BraTS's) and ignored input found."""
    from bratskeras.data.inspection import inspect_dataset

    _, report = inspect_dataset(data_dir, layout, task=task)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(f"layout: {report.layout}, labels: {report.label_scheme}, {len(report.cases)} case(s)")
        click.echo(f"{'case':<28}{'modalities':<24}{'seg':<5}{'shape':<18}{'spacing':<18}labels")
        for case in report.cases:
            shape = "x".join(str(s) for s in case.shape) if case.shape else "?"
            spacing = "x".join(f"{s:g}" for s in case.spacing) if case.spacing else "?"
            click.echo(f"{case.id:<28}{','.join(sorted(case.modalities)):<24}{'yes' if case.seg else 'no':<5}"
                       f"{shape:<18}{spacing:<18}{case.labels}")
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        for line in report.ignored:
            click.echo(f"ignored: {line}", err=True)
        ignored = f", {len(report.ignored)} input(s) ignored" if report.ignored else ""
        click.echo(f"{len(report.problems)} problem(s), {len(report.warnings)} warning(s){ignored}")
    if report.problems:
        raise SystemExit(1)


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--cases", default=4, show_default=True, type=click.IntRange(min=1), help="Number of cases.")
@click.option("--shape", help="D,H,W voxels per case (default: 64,64,48 simple; anatomy: BraTS's "
                                "240 x 240 x 155 mm, 240,240,155 at 1 mm).")
@click.option("--layout", type=click.Choice(LAYOUT_NAMES), default=DEFAULT_LAYOUT, show_default=True,
              help="On-disk layout to write (brats2017 also stands for 2018/2019).")
@click.option("--task", type=click.Choice(TASKS),
              help="Write a 2023-2025 task's case folders and labels (brats2023 layout).")
@click.option("--seed", default=UNSEEN_SEED, show_default=True, type=int,
              help="Dataset seed (the default is none the built-in demo trains on).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty OUT_DIR.")
@click.option("--kind", type=click.Choice(list(KINDS)), default="simple", show_default=True,
              help="Geometric phantoms; heads on the MNI152 template (needs bratskeras[anatomy]); or "
                   "domain-randomised SynthSeg-style heads on it (random contrasts, tumour types, scanners).")
@click.option("--settings", type=click.Choice(SETTINGS), default="default", show_default=True,
              help="Generator ranges: training's, or the held-out set's other ranges; synthseg also 'basic' "
                   "(without the enhancing mimics: the shipped model's first training stage), 'mimics' "
                   "(basic with enhancing vessels and dura: its second stage; default adds ventricle shapes, "
                   "FLAIR-bright healthy tissue and choroid plexus: its third), 'faint' (default with "
                   "moderately enhancing tumour in half the heads), 'fading' (faint with oedema fading "
                   "toward its edge and enhancing tumour near-isointense on FLAIR and T2) 'subtle' "
                   "(fading with oedema only a little brighter than parenchyma on T2 and CSF that FLAIR "
                   "nulled only in part), 'lowres' (subtle with one or two modalities at a low resolution "
                   "in 30 % of the heads) and 'plexus' (lowres with more non-enhancing gliomas, thicker "
                   "enhancing vessels and larger choroid plexus).")
@click.option("--voxel-size", default=1.0, show_default=True, type=click.FloatRange(0.5, 4.0),
              help="Isotropic voxel size in mm of anatomy/synthseg heads (BraTS: 1; 2 is 8x cheaper to write and train on).")
def synth_command(out_dir, cases, shape, layout, task, seed, overwrite, kind, settings, voxel_size):
    """Write a synthetic BraTS-like dataset in a release's on-disk layout."""
    from bratskeras.synth.phantoms import DEFAULT_SHAPE, write_dataset
    from bratskeras.training.demo import demo_training_seed

    if seed == demo_training_seed():
        click.echo(f"warning: --seed {seed} is the seed `bratskeras fit`'s demo trains on: these cases may be its "
                   f"training cases, not new ones (the default, {UNSEEN_SEED}, is not)", err=True)

    if shape is None and KINDS[kind].takes_voxel_size:  # heads drawn at a voxel size fill BraTS's field of view
        from bratskeras.synth.anatomy import grid_shape

        shape = ",".join(map(str, grid_shape(voxel_size)))
    elif shape is None:
        shape = ",".join(map(str, DEFAULT_SHAPE))
    folders = write_dataset(out_dir, cases=cases, shape=parse_shape(shape, 3, "--shape"),
                            layout=layout, seed=seed, overwrite=overwrite, task=task, kind=kind,
                            settings=settings, voxel_mm=voxel_size)
    click.echo(f"wrote {cases} {task or layout} case(s) to {out_dir} ({len(set(folders))} folder(s))")


COMMANDS = [inspect_command, synth_command]
