"""Measures the input pipeline: first-time preprocessing and patches per second.

    PYTHONPATH=. python tools/bench_pipeline.py [--cases 3] [--patches 60]

Writes full-size (240 x 240 x 155) synthetic cases as .nii and .nii.gz in a
temporary folder, times caching them (read + z-score + crop + .npy write),
then times 128^3 x 4 patches drawn from the cache with CPU augmentation
(without and with the optional small-angle rotation, which resamples the
whole patch, and with nnU-Net's set, `fit --augment nnunet`) and with
augmentation left to the device (augment_on="device").
The gzip line is the lower bound for .nii.gz: decompressing the same files.
"""

import argparse
import glob
import gzip
import tempfile
import time

from bratskeras.data import augment, cache, layouts
from bratskeras.platform import benchmark
from bratskeras.synth import phantoms as synth

FULL_SHAPE = (240, 240, 155)


def time_preprocessing(root, layout, cases, cache_dir):
    synth.write_dataset(root, cases=cases, shape=FULL_SHAPE, layout=layout)
    dataset = layouts.discover(root)
    start = time.perf_counter()
    cached = cache.cache_dataset(dataset.cases, cache_dir, workers=2)
    return cases / (time.perf_counter() - start), cached


def time_patches(cached, augment_on, patches, batch_size=2, rotation_degrees=0.0, augmentation=None):
    return benchmark.pipeline_patches_per_second(cached, (128, 128, 128), augment_on, patches, batch_size,
                                                 rotation_degrees, augmentation)


def time_gzip_only(root, cases):
    """cases/s for decompressing every .nii.gz of the cases, nothing else."""
    start = time.perf_counter()
    for path in glob.glob(f"{root}/**/*.nii.gz", recursive=True):
        with gzip.open(path) as stream:
            while stream.read(1 << 24):
                pass
    return cases / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--patches", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nii_rate, cached = time_preprocessing(f"{tmp}/nii", "brats2020", args.cases, f"{tmp}/cache")
        gz_rate, _ = time_preprocessing(f"{tmp}/gz", "brats2021", args.cases, f"{tmp}/cache")
        print(f"first-time preprocessing, .nii:    {nii_rate:.2f} cases/s")
        print(f"first-time preprocessing, .nii.gz: {gz_rate:.2f} cases/s "
              f"(gzip decoding alone, one core: {time_gzip_only(f'{tmp}/gz', args.cases):.2f} cases/s)")
        print(f"128^3 x 4 patches, CPU augmentation:      {time_patches(cached, 'cpu', args.patches):.1f} patches/s")
        rotated = time_patches(cached, "cpu", args.patches, rotation_degrees=10.0)
        print(f"128^3 x 4 patches, CPU augmentation + small rotations (+-10 deg): {rotated:.1f} patches/s")
        nnunet = time_patches(cached, "cpu", args.patches, augmentation=augment.AUGMENTATION_SETS["nnunet"])
        print(f"128^3 x 4 patches, CPU augmentation, nnU-Net's set (--augment nnunet): {nnunet:.1f} patches/s")
        print(f"128^3 x 4 patches, augmentation on device: {time_patches(cached, 'device', args.patches):.1f} patches/s")


if __name__ == "__main__":
    main()
