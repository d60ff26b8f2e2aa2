"""Writes a held-out set of anatomy phantoms that no demo or test trained on.

    python tools/make_heldout.py OUT_DIR [--cases 3] [--shape 240,240,155] [--layout brats2020] [--seed 2000]

The cases come from bratskeras.synth.anatomy with the HELDOUT generator ranges
(other deformation, contrast, scanner and tumor-size ranges than DEFAULT, on
which the demo trains) and a seed the demo never uses (the demo trains on
seed 0 and scores on 1000), in any layout `bratskeras synth` writes. Whole
heads on BraTS's 240 x 240 x 155 grid by default; score a model on them with
`bratskeras evaluate` after `bratskeras predict`, or with
tools/bench_transfer.py --heldout-dir.
"""

import argparse

from bratskeras.synth import phantoms as synth


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--shape", default="240,240,155", help="D,H,W at 1 mm (smaller: a window on the tumor)")
    parser.add_argument("--layout", default="brats2020", choices=synth.SYNTH_LAYOUTS)
    parser.add_argument("--seed", type=int, default=2000)
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    folders = synth.write_dataset(args.out_dir, cases=args.cases, shape=shape, layout=args.layout, seed=args.seed,
                                  kind="anatomy", settings="heldout")
    print(f"wrote {args.cases} held-out anatomy case(s) to {args.out_dir} ({len(set(folders))} folder(s))")
    return folders


if __name__ == "__main__":
    main()
