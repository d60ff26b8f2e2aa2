"""`bratskeras predict`, `bratskeras evaluate`, `bratskeras show`.

--postprocess syntax (repeatable, applied in the order given):

    NAME[:KEY=VALUE[,KEY=VALUE...]]      e.g. min_component:voxels=50,per=class
    none                                 no post-processing, not even the model's own

Values are integers, numbers, AxBxC integer triples, or words. The steps, their
options and their help are the rows of bratskeras.predict.postprocessing.STEPS.
"""

import contextlib
import json
import os
import sys

import click

from bratskeras.cli.pretrained import MODEL_SOURCE
from bratskeras.cli.quiet import needs_tensorflow
from bratskeras.core.errors import ConfigError, user_message
from bratskeras.core.labels import SCHEMES, TASKS
from bratskeras.data.contract import steps_text
from bratskeras.predict.postprocessing import STEPS, check_step, check_steps

# `--postprocess none`: no post-processing, not even the model's own.
NO_STEPS = "none"


def parse_postprocess(text):
    """"min_component:voxels=50,per=class" -> {"name": "min_component", "voxels": 50, "per": "class"}."""
    name, _, options = text.partition(":")
    step = {"name": name.strip()}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key or not value:
            raise ConfigError(f"--postprocess {text!r}: options are KEY=VALUE, got {item!r}")
        step[key.strip()] = _parse_value(value.strip())
    # Validate now so a typo or a bad value fails before the model is loaded.
    try:
        check_step(step)
    except ValueError as error:
        raise ConfigError(f"--postprocess {text!r}: {error}") from None
    return step


def parse_steps(texts):
    """predict's --postprocess values -> steps: None when none was given (the model's own), () for "none"."""
    if not texts:
        return None
    if [text.strip().lower() for text in texts] == [NO_STEPS]:
        return ()
    return tuple(parse_postprocess(text) for text in texts)


def _check_steps_for(steps, model_task, modalities=None):
    """ConfigError when a post-processing step needs classes the model's task lacks (MEN-RT has no ET),
    or an image the model does not read (`modalities`, None: not checked yet)."""
    try:
        check_steps(steps, model_task, modalities)
    except ValueError as error:
        raise ConfigError(f"--postprocess: {error}") from None


def _parse_value(value):
    if value.isdigit():
        return int(value)
    try:
        return float(value)  # e.g. major_components' fraction=0.1
    except ValueError:
        pass
    parts = value.lower().split("x")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return value


def _window_progress(case):
    """Prints "case id: windows done/total" on one stderr line, rewritten in place."""
    def report(done, total):
        click.echo(f"\r  {case.id}: window {done}/{total}", nl=done == total, err=True)
    return report


class DeviceType(click.ParamType):
    """--device: auto, cpu, gpu or gpu:N (bratskeras.predict.devices); a malformed one is a usage error."""

    name = "device"

    def convert(self, value, param, ctx):
        from bratskeras.predict.devices import parse_device

        try:
            return parse_device(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def _load_models(models, device, override_spacing=False, spacing=None, steps_given=False):
    """(network, setup) predict runs: one model's, or an ensemble.Ensemble of several and its common setup.

    Each model is loaded on `device` (its weights there) and announced in the
    header with its contract and where the contract came from. With
    `override_spacing` (--spacing given) every model predicts at `spacing`
    ((d, h, w) mm, or None: the source grid). Without `steps_given`
    (--postprocess) an ensemble's models must carry the same post-processing.

    Raises:
        ConfigError: models that disagree on target, task or modalities
            (ensemble.check_agreement), or on post-processing where the user
            named none (ensemble.check_postprocess), before any case is predicted.
    """
    from bratskeras.predict import devices, model_setup
    from bratskeras.predict.ensemble import Ensemble, Member, check_postprocess

    members = []
    for model in models:
        with devices.placement(device):
            network, setup = model_setup.load_predictor(model)
        if override_spacing:
            setup = model_setup.override_spacing(setup, spacing)
        members.append(Member(model, network, setup))
    # Refused before the header: the refusal is the only line printed.
    ensemble = Ensemble(members) if len(members) > 1 else None
    if ensemble and not steps_given:
        check_postprocess(members)
    for index, member in enumerate(members, 1):
        if member.setup.source == model_setup.GUESSED:
            guess = member.setup.contract
            click.echo(f"warning: {member.name}: no input contract (no run config.json, none stored in the "
                       f"model); guessed from its channel counts: modalities {','.join(guess.modalities)}, "
                       f"target {guess.target}, crop {guess.crop}, the source grid", err=True)
        click.echo(f"model {index}/{len(members)}: {member.name}" if ensemble else f"model: {member.name}",
                   err=True)
        click.echo(member.setup.describe(), err=True)
    if ensemble is None:
        return members[0].predictor, members[0].setup
    click.echo(f"ensemble: the mean of {len(members)} models' probabilities", err=True)
    return ensemble, ensemble.setup


def _check_models(models, device):
    """The task the models were trained on; refuses, before any work, what cannot run.

    Raises:
        ConfigError: a missing optional runtime, --device gpu for an ONNX or
            LiteRT model, a GPU TensorFlow does not see, or models trained on
            different tasks.
    """
    from bratskeras.predict import devices, model_setup, runtimes
    from bratskeras.predict.ensemble import check_tasks

    for model in models:
        runtimes.check_runtime(model)  # a missing optional runtime is refused before any work
        devices.check_model_device(device, model)
    devices.tensorflow_device(device)  # a GPU that is not there
    tasks = [(model, model_setup.run_task(model)) for model in models]
    check_tasks(tasks)
    return tasks[0][1]


@click.command("predict")
# Each MODEL: run dir, .keras, pretrained:NAME, SavedModel folder, .onnx, .tflite; several are an ensemble.
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=MODEL_SOURCE)
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--overlap", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Least fraction of a window shared with its neighbour (0: only as much as covering needs).")
@click.option("--window", help="Largest D,H,W window for size-free models (default: the run's training patch "
                                "size, at least 160 per axis, the most accurate tiling measured; clipped to the "
                                "volume and thinned to cover it evenly). Faster, less accurate: "
                                "--window 240,80,240 --overlap 0 (3 slabs).")
@click.option("--tta", is_flag=True, help="Average the 8 mirrorings over the spatial axes (8x slower).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1), help="Windows per call.")
@click.option("--label-scheme", type=click.Choice(tuple(SCHEMES)),
              help="Labels to write (default: the input's release or task).")
@click.option("--task", type=click.Choice(TASKS), help="Label scheme of INPUT_DIR when its folders do not say.")
@click.option("--postprocess", "steps", multiple=True, metavar="STEP",
              help="NAME[:KEY=VALUE,...], repeatable, applied in order, in place of the model's own (its "
                   "contract's, printed in the header); 'none': no post-processing. Steps: "
                   + "; ".join(step.usage() for step in STEPS.values()) + ".")
@click.option("--save-probabilities", is_flag=True, help="Also write OUTPUT_DIR/probabilities/<id>.nii.gz.")
@click.option("--spacing", help="Voxel size in mm to predict at, overriding the model's contract: 3 or 3,3,2; "
                                "'source' (or 'none'): the source grid.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--device", default="auto", show_default=True, type=DeviceType(),
              help="Where Keras and SavedModel models run: auto (TensorFlow's choice), cpu, gpu (GPU 0) or "
                   "gpu:N. ONNX and LiteRT models run on the CPU.")
@needs_tensorflow
def predict_command(models, input_dir, output_dir, overlap, window, tta, batch_size, label_scheme, task, steps,
                    save_probabilities, spacing, overwrite, device):
    """Segment every case of INPUT_DIR into OUTPUT_DIR/<case id>.nii.gz on the source grid.

    MODEL is a run directory, a .keras file, pretrained:NAME (`bratskeras
    pretrained` lists them), or an exported SavedModel folder, .onnx or
    .tflite file; its input contract (modalities, spacing,
    normalisation, crop, target) says how cases are prepared for it.
    Several MODELs are an ensemble: each runs on its own contract, and the
    mean of their probabilities is decoded (they must agree on target,
    task and modalities).
    """
    from bratskeras.cli.models import parse_shape, parse_spacing
    from bratskeras.data import layouts
    from bratskeras.predict import inference, tiling

    model_task = _check_models(models, device)
    spacing_override = parse_spacing(spacing, allow_source=True) if spacing is not None else None
    postprocess = parse_steps(steps)
    windows = tiling.WindowSettings(window=parse_shape(window, 3, "--window") if window else None,
                                    overlap=overlap, batch_size=batch_size, mirror=tta)
    settings = inference.PredictSettings(windows=windows, label_scheme=label_scheme, postprocess=postprocess,
                                         save_probabilities=save_probabilities, device=device)
    _check_steps_for(postprocess or (), model_task)
    # A task model reads its input as that task unless the user said otherwise.
    dataset = layouts.discover(input_dir, task=task or model_task)
    dataset.refuse_duplicates()  # one output file per case id: two cases of one id would overwrite each other
    cases = dataset.cases
    # Before the model is loaded or any case predicted: a refusal costs nothing.
    inference.check_output_folder(output_dir, [c.id for c in cases], save_probabilities, overwrite)
    network, setup = _load_models(models, device, spacing is not None, spacing_override,
                                  steps_given=postprocess is not None)
    if postprocess is not None:
        click.echo(f"postprocess: {steps_text(postprocess)} (--postprocess, in place of the model's "
                   f"{steps_text(setup.contract.postprocess)})", err=True)
    if postprocess:  # the model's own steps were checked against it when it loaded (model_setup.setup_for)
        _check_steps_for(postprocess, model_task, setup.modalities)
    for line in dataset.skipped:
        click.echo(f"error: {line}", err=True)
    for line in dataset.ignored:
        click.echo(f"ignored: {line}", err=True)
    click.echo(f"{len(cases)} case(s)", err=True)

    def on_case(result):
        if result.warning:
            click.echo(f"warning: {result.warning}", err=True)
        if result.error:
            click.echo(f"error: {result.error}", err=True)
        else:
            click.echo(f"{result.case_id}: {result.path} ({result.seconds:.1f} s)")

    results = inference.predict_dataset(network, setup, cases, output_dir, settings, overwrite=overwrite,
                                        on_case=on_case, progress_for=_window_progress)
    failed = [r.case_id for r in results if r.error]
    click.echo(f"{len(results) - len(failed)}/{len(results)} case(s) written to {output_dir}", err=True)
    if failed:
        click.echo(f"error: {len(failed)} case(s) failed: {', '.join(failed)}", err=True)
    if dataset.skipped:
        click.echo(f"error: {len(dataset.skipped)} input(s) left out (listed above)", err=True)
    if failed or dataset.skipped:
        sys.exit(1)


@click.command("evaluate")
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("ref_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write per-case metrics to this CSV file, and the summary to summary.json beside it.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
              help="Write the summary JSON (per metric: mean, std, median, quartiles; per case) here "
                   "[default: summary.json beside --out].")
@click.option("--json", "as_json", is_flag=True, help="Print {cases, summary, missing, extra, failed, ignored} as JSON.")
@click.option("--compare-papers", is_flag=True, help="Also print the papers' reported figures beside the means.")
@click.option("--overwrite", is_flag=True, help="Replace existing --out and summary files.")
@click.option("--lesion-wise", is_flag=True,
              help="Add the official BraTS 2023-2025 lesion-wise metrics of the task's groups.")
@click.option("--task", type=click.Choice(TASKS), help="Label scheme of REF_DIR when its folders do not say.")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="all cores",
              help="Processes scoring cases side by side.")
def evaluate_command(pred_dir, ref_dir, out, summary_path, as_json, compare_papers, overwrite, lesion_wise, task,
                     workers):
    """Score PRED_DIR's label maps against REF_DIR's (Dice, HD95, sensitivity, specificity; lesion-wise).

    With --out, the per-case CSV and summary.json beside it (docs/evaluation.md), as nnU-Net writes one.
    """
    from bratskeras.evaluate import scoring as evaluation
    from bratskeras.platform import claims, outputs

    if out and summary_path is None:
        summary_path = os.path.join(os.path.dirname(os.path.abspath(out)), "summary.json")
    files = [(path, kind) for path, kind in ((out, evaluation.metrics_csv_kind()),
                                             (summary_path, evaluation.summary_json_kind())) if path]
    if len({os.path.abspath(path) for path, _ in files}) < len(files):
        raise click.UsageError("--out and --summary name the same file")
    for path, kind in files:  # before any case is scored: a refusal costs nothing
        outputs.refuse_existing(path, overwrite, kind)
        outputs.ensure_writable_folder(os.path.dirname(os.path.abspath(path)))
    with contextlib.ExitStack() as held:
        # One writer per output folder (claims.claim_folder): a second writer there is refused.
        for folder in sorted({os.path.dirname(os.path.abspath(path)) for path, _ in files}):
            held.enter_context(claims.claim_folder(folder, "evaluate"))
        result = evaluation.evaluate(pred_dir, ref_dir, lesion_wise=lesion_wise, task=task, workers=workers)
        if out:
            _write_text(out, evaluation.rows_to_csv(result.rows), overwrite, evaluation.metrics_csv_kind())
        if summary_path:
            _write_text(summary_path, result.summary_json(pred_dir, ref_dir, task), overwrite,
                        evaluation.summary_json_kind())
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        unreadable = sum(row["status"] == "unreadable" for row in result.rows)
        click.echo(f"{len(result.rows)} case(s) scored ({len(result.missing)} missing, {unreadable} unreadable, "
                   "scored as empty)")
        click.echo(evaluation.summary_table(result.summary))
        if lesion_wise:
            click.echo("lesion-wise (means over cases, as the challenge aggregates):")
            click.echo(evaluation.lesionwise_table(result.summary["lesion_wise"]))
    if compare_papers:
        click.echo(evaluation.comparison_table(result.summary))
    for path in result.extra:
        click.echo(f"warning: {path}: no reference case, not scored", err=True)
    for line in result.ignored:
        click.echo(f"ignored: {line}", err=True)
    for case_id in result.missing:
        click.echo(f"error: case {case_id}: no prediction in {pred_dir} (scored as an empty prediction)", err=True)
    for message in result.failed:
        click.echo(f"error: {message}", err=True)
    if not result.ok:
        sys.exit(1)


def _write_text(path, text, overwrite, kind):
    """Writes `text` to `path` atomically, under outputs' --overwrite rules (`kind`: artefacts.ArtefactKind)."""
    from bratskeras.platform import outputs

    def write(tmp):
        with open(tmp, "w") as stream:
            stream.write(text)

    outputs.write_artefact(path, write, kind=kind, overwrite=overwrite)


@click.command("show")
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--case", "case_ids", multiple=True, help="Only this case id (repeatable; default all).")
@click.option("--overwrite", is_flag=True, help="Replace existing PNGs.")
@click.option("--task", type=click.Choice(TASKS), help="Label scheme of DATA_DIR when its folders do not say.")
def show_command(pred_dir, data_dir, out_dir, case_ids, overwrite, task):
    """Write OUT_DIR/<case id>.png: reference and prediction over FLAIR in three planes.

    Both columns are drawn in the colours of the case's own structures (one
    legend), with the case's Dice per region in the title.
    """
    from bratskeras.core.errors import BratsKerasError
    from bratskeras.data import layouts
    from bratskeras.evaluate import visualize
    from bratskeras.evaluate.scoring import find_predictions
    from bratskeras.platform import artefacts, claims, outputs

    dataset = layouts.discover(data_dir, task=task)
    dataset.refuse_duplicates()
    cases = [dataset.case(c) for c in case_ids] if case_ids else dataset.cases
    predictions = find_predictions(pred_dir)
    for case in cases:
        outputs.refuse_existing(os.path.join(out_dir, f"{case.id}.png"), overwrite, artefacts.KINDS["png"])
    outputs.ensure_writable_folder(out_dir)
    failed = list(dataset.skipped)
    for line in dataset.skipped:
        click.echo(f"error: {line}", err=True)
    for line in dataset.ignored:
        click.echo(f"ignored: {line}", err=True)
    with claims.claim_folder(out_dir, "show"):
        for case in cases:
            try:
                if case.id not in predictions:
                    raise BratsKerasError(f"case {case.id}: no prediction in {pred_dir}")
                # Again under the claim: another writer may have put a file there before it.
                outputs.refuse_existing(os.path.join(out_dir, f"{case.id}.png"), overwrite, artefacts.KINDS["png"])
                click.echo(visualize.show_case(case, predictions[case.id], out_dir))
            except (BratsKerasError, ValueError, OSError) as error:
                failed.append(case.id)
                click.echo(f"error: {user_message(error)}", err=True)
    if failed:
        sys.exit(1)


COMMANDS = [predict_command, evaluate_command, show_command]
