"""bf16 autocast against float32 on the same device: PSNR at equal iteration counts and at the automatic stop.

    python benchmarks/precision.py --preset fast --iterations 500 --threads 1
    python benchmarks/precision.py --preset paper --iterations 300 --threads 1
    python benchmarks/precision.py --preset fast --iterations auto --threads 1

For each seed: a 128 px synthetic cell image with Gaussian noise (sigma 0.1), fitted once in fp32
and once in bf16 from the same seed; prints the PSNR of the result against the clean image, the
iterations and the wall time of each. DIP fits are chaotic in floating-point rounding, so compare
the mean over seeds, not single rows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_dip.core.fit import Fitter, check_iterations
from napari_dip.core.settings import PRESETS
from napari_dip.samples import cells, psnr


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    p.add_argument("--iterations", default="500", help="a count, or 'auto'")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    iterations = "auto" if args.iterations == "auto" else int(args.iterations)
    check_iterations(iterations)
    print(f"preset {args.preset}, {args.size} px, iterations {iterations}, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    print("| seed | noisy dB | fp32 dB | its | s | bf16 dB | its | s |")
    print("|---|---|---|---|---|---|---|---|")
    diffs = []
    for seed in args.seeds:
        clean = cells(args.size, seed=seed + 3)
        noisy = (clean + np.random.default_rng(seed).normal(0, 0.1, clean.shape)).astype(np.float32)
        settings = PRESETS[args.preset]["denoise"]
        if iterations != "auto":
            settings = settings.replace(stop_rule="none")
        row, values = [], []
        for precision in ("fp32", "bf16"):
            f = Fitter(torch.from_numpy(noisy)[None, None], settings=settings, iterations=iterations,
                       precision=precision, seed=seed, device=args.device)
            start = time.perf_counter()
            for _ in f.steps():
                pass
            value = psnr(f.result().image[..., 0], clean, 1.0)
            values.append(value)
            row += [f"{value:.2f}", str(f.iteration), f"{time.perf_counter() - start:.0f}"]
        diffs.append(values[1] - values[0])
        print(f"| {seed} | {psnr(noisy, clean, 1.0):.2f} | " + " | ".join(row) + " |", flush=True)
    print(f"mean bf16 - fp32: {np.mean(diffs):+.2f} dB")


if __name__ == "__main__":
    main()
