"""Times bratskeras.evaluate.voxelwise.hd95 and case_metrics on 240 x 240 x 155 synthetic cases.

Usage: PYTHONPATH=. python tools/bench_hd95.py
Prints the best of three runs per case; no assertions.
"""

import time

import numpy as np

from bratskeras.evaluate.voxelwise import case_metrics, hd95

SHAPE = (240, 240, 155)


def sphere(centre, radius):
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < radius**2


def best_of_three(fn):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    cases = {
        "tumor r=40 vs shifted by 3 voxels": (sphere((120, 120, 77), 40), sphere((123, 120, 77), 40)),
        "r=70 vs r=68 (brain-sized box)": (sphere((120, 120, 77), 70), sphere((122, 121, 77), 68)),
        "two r=30 spheres in opposite corners": (sphere((40, 40, 40), 30), sphere((200, 200, 115), 30)),
    }
    for name, (a, b) in cases.items():
        print(f"hd95 {name}: {best_of_three(lambda: hd95(a, b)):.3f} s")
    ref = np.zeros(SHAPE, np.uint8)
    ref[sphere((120, 120, 77), 40)] = 2
    ref[sphere((120, 120, 77), 20)] = 1
    ref[sphere((120, 120, 77), 10)] = 3
    pred = np.roll(ref, 2, axis=0)
    print(f"case_metrics (5 structures x 4 metrics): {best_of_three(lambda: case_metrics(pred, ref)):.3f} s")


if __name__ == "__main__":
    main()
