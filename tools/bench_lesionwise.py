"""Lesion-wise evaluation of one folder: the official brats-evaluation package vs bratskeras, side by side.

    PYTHONPATH=. python tools/bench_lesionwise.py [--cases 8] [--task gli] [--workers 2]

Writes `--cases` synthetic 240 x 240 x 155 references of the task (synth's
phantoms of the task: with their cavity or cyst, several lesions for mets) and predictions of them (shifted,
grown, thinned, one empty, false-positive lesions added), then times, in
this one process and on the same files:

  official   brats_evaluation.evaluation.evaluate_single_exam over the cases
             with the task's bundled config, one evaluator, as its `main` does
             (one process: the package has no parallel mode)
  bratskeras evaluation.evaluate(..., lesion_wise=True, workers=N): reading,
             the voxel-wise metrics and the lesion-wise ones, a pool of N processes

alternately `--repeats` times each, and checks that both give the same
lesion-wise values (1e-6). It prints wall-clock seconds (the best run of
each, and the ratio of each pair of runs) and CPU seconds (user + system,
this process and its finished workers): on a machine shared with other work
the wall clock moves with their load, the CPU seconds much less. Needs the test extra (`pip install -e ".[test]"`) for the
official package.
"""

import argparse
import math
import os
import resource
import tempfile
import time

import nibabel as nib
import numpy as np
from scipy import ndimage

from bratskeras.core import labels
from bratskeras.data import volumes
from bratskeras.evaluate import scoring as evaluation
from bratskeras.synth import phantoms as synth
from bratskeras.synth.writers import task_case_id

SHAPE = (240, 240, 155)


def write_cases(folder, task, cases):
    """<folder>/ref/<id>.nii.gz and <folder>/pred/<id>.nii.gz for `cases` phantoms."""
    scheme = labels.get_scheme(task)
    rng = np.random.default_rng(0)
    for name in ("ref", "pred"):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    for index in range(cases):
        _, phantom = synth.task_phantom(SHAPE, (7, index), scheme)
        ref = np.asarray(scheme.labels, np.uint8)[synth.scheme_classes(phantom, scheme)]
        pred = _prediction(rng, ref, index, [v for v in scheme.labels if v])
        case_id = task_case_id(scheme, index)
        for name, array in (("ref", ref), ("pred", pred)):
            image = nib.Nifti1Image(array, volumes.brats_affine(SHAPE))
            image.set_data_dtype(np.uint8)
            nib.save(image, os.path.join(folder, name, f"{case_id}.nii.gz"))


def _prediction(rng, ref, index, values):
    kind = index % 4
    if kind == 0:
        pred = np.roll(ref, tuple(rng.integers(-3, 4, 3)), axis=(0, 1, 2))
    elif kind == 1:
        pred = ndimage.grey_dilation(ref, size=(3, 3, 3))
    elif kind == 2:
        pred = np.where(rng.random(ref.shape) < 0.05, 0, ref).astype(np.uint8)
    else:
        pred = np.zeros_like(ref) if index == 3 else ref.copy()
    for _ in range(int(rng.integers(1, 4))):  # false-positive lesions
        corner = rng.integers(10, np.asarray(SHAPE) - 20)
        pred[tuple(slice(c, c + int(rng.integers(3, 9))) for c in corner)] = rng.choice(values)
    return pred


def official_run(folder, task):
    from importlib.resources import files

    from brats_evaluation.evaluation import evaluate_single_exam
    from panoptica import Panoptica_Evaluator

    config = files("brats_evaluation").joinpath("configs", f"config_{labels.get_scheme(task).official_config}.yaml")
    evaluator = Panoptica_Evaluator.load_from_config(str(config))
    results = {}
    for name in sorted(os.listdir(os.path.join(folder, "ref"))):
        case_id = name[: -len(".nii.gz")]
        results[case_id] = evaluate_single_exam(os.path.join(folder, "pred", name), os.path.join(folder, "ref", name),
                                                name, evaluator)
    return results


def _same(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--task", default="gli", choices=labels.TASKS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_cases(folder, args.task, args.cases)
        print(f"wrote {args.cases} {args.task} cases {SHAPE} in {time.perf_counter() - start:.1f} s")
        official_times, our_times, official_cpu, our_cpu = [], [], [], []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), _cpu_seconds()
            official = official_run(folder, args.task)
            official_times.append(time.perf_counter() - start)
            official_cpu.append(_cpu_seconds() - cpu)
            start, cpu = time.perf_counter(), _cpu_seconds()
            ours = evaluation.evaluate(os.path.join(folder, "pred"), os.path.join(folder, "ref"), lesion_wise=True,
                                       task=args.task, workers=args.workers)
            our_times.append(time.perf_counter() - start)
            our_cpu.append(_cpu_seconds() - cpu)
            print(f"run: official {official_times[-1]:.2f} s ({official_cpu[-1]:.2f} CPU-s), "
                  f"bratskeras {our_times[-1]:.2f} s ({our_cpu[-1]:.2f} CPU-s), "
                  f"ratio {official_times[-1] / our_times[-1]:.1f}x; load average {os.getloadavg()[0]:.1f}")
        official_s, ours_s = min(official_times), min(our_times)
    differences = sum(not _same(float(value), float(official[row["id"]][group][name]))
                      for row in ours.rows for group, values in row["lesion_wise"].items()
                      for name, value in values.items())
    print(f"official brats-evaluation (1 process):       {official_s:7.2f} s  "
          f"({official_s / args.cases:.2f} s per case)")
    print(f"bratskeras evaluate --lesion-wise ({args.workers} proc.): {ours_s:7.2f} s  "
          f"({ours_s / args.cases:.2f} s per case)")
    print(f"speed-up: {official_s / ours_s:.1f}x (best runs), {min(official_cpu) / min(our_cpu):.1f}x in CPU "
          f"seconds; values differing by more than 1e-6: {differences} "
          f"of {sum(len(v) for row in ours.rows for v in row['lesion_wise'].values())}")


def _cpu_seconds():
    """User + system seconds of this process and of its children that have finished."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
