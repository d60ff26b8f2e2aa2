"""Full-case inference time of lightweight-unet's architecture in PyTorch (for comparison only).

    python tools/bench_torch_reference.py [--shape 240,240,155] [--repeats 3]

The same network as `build_model("lightweight-unet")` (3 levels, base 16, two
[Conv3d k3 -> InstanceNorm3d(eps 1e-5, no affine) -> LeakyReLU(0.01)] per
block, ConvTranspose3d k2 s2, concat [up, skip], 1x1x1 head; 340,596
parameters), zero-padded to a multiple of 4 as the Keras model does, timed
under `torch.inference_mode()` with the machine's default thread count. Median
seconds after one warm-up. PyTorch is not a dependency of bratskeras: without
it this prints a note and exits 0.
"""

import argparse
import statistics
import time


def build(torch, in_channels=4, base=16, classes=4):
    nn = torch.nn

    def block(c_in, c_out):
        layers = []
        for c in (c_in, c_out):
            layers += [nn.Conv3d(c, c_out, 3, padding=1), nn.InstanceNorm3d(c_out, eps=1e-5),
                       nn.LeakyReLU(0.01)]
        return nn.Sequential(*layers)

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleList([block(in_channels, base), block(base, 2 * base), block(2 * base, 4 * base)])
            self.up = nn.ModuleList([nn.ConvTranspose3d(2 * base, base, 2, 2),
                                     nn.ConvTranspose3d(4 * base, 2 * base, 2, 2)])
            self.dec = nn.ModuleList([block(2 * base, base), block(4 * base, 2 * base)])
            self.head = nn.Conv3d(base, classes, 1)

        def forward(self, x):
            skips = []
            for level, encoder in enumerate(self.enc):
                x = encoder(x)
                if level < 2:
                    skips.append(x)
                    x = torch.nn.functional.max_pool3d(x, 2)
            for level in (1, 0):
                x = self.dec[level](torch.cat([self.up[level](x), skips[level]], dim=1))
            return self.head(x)

    return UNet().eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="240,240,155")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed; nothing measured (pip install torch to compare).")
        return
    d, h, w = (int(s) for s in args.shape.split(","))
    padded = [-(-s // 4) * 4 for s in (d, h, w)]
    model = build(torch)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 4, *padded)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {params} parameters, "
          f"input 1x4x{'x'.join(map(str, padded))}: {statistics.median(times):.3f} s per case "
          f"(median of {args.repeats})")


if __name__ == "__main__":
    main()
