"""Time to result of one automatic fit of the bundled demo image, with its PSNR trajectory.

    python benchmarks/time_to_result.py --size 256 --threads 2
    python benchmarks/time_to_result.py --size 256 --threads 2 --precision bf16
    python benchmarks/time_to_result.py --size 256 --threads 1 --cap 5000 --set lr=0.02

Fits ``napari_dip.samples.noisy_cells(size)`` (Poisson + read noise, 12-bit counts) with the
``fast`` preset and automatic stopping, and prints the PSNR of the average every ``--every``
iterations (the oracle, which needs the clean image), where the automatic stop landed, and the
wall time. ``--json`` keeps the curves and the stop signal, e.g. to replay other patiences.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_dip.core.restore import Restoration
from napari_dip.samples import noisy_cells, psnr
from quality import parse_overrides  # the quality benchmark's --set parser (same folder)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--preset", default="fast")
    p.add_argument("--cap", type=int, default=None, help="iteration cap (default: the preset's)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--every", type=int, default=250, help="print the PSNR every this many iterations")
    p.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE", help="setting overrides")
    p.add_argument("--json", default=None, help="write the curves here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    clean, noisy = noisy_cells(args.size, seed=0)
    to_unit = lambda x: (np.asarray(x, np.float64) - 100) / (4095 * 0.8)  # noqa: E731
    job = Restoration("denoise", noisy, iterations="auto", max_iterations=args.cap, preset=args.preset,
                      device=args.device, precision=args.precision, preview_every=25, **overrides)
    curve: list[tuple[int, float, float]] = []
    start = time.perf_counter()

    def follow(snap) -> None:
        if snap.ema is not None:
            curve.append((snap.iteration, psnr(to_unit(np.squeeze(snap.ema)), clean, 1.0),
                          time.perf_counter() - start))
            if snap.iteration % args.every == 0:
                print(f"  iteration {snap.iteration}: {curve[-1][1]:.2f} dB at {curve[-1][2]:.0f} s", flush=True)

    out = job.run(follow)
    seconds = time.perf_counter() - start
    fit = job.fits[0]
    best = max(curve, key=lambda r: r[1])
    print(f"{args.size} px, preset {args.preset}, precision {args.precision}, {torch.get_num_threads()} threads: "
          f"noisy {psnr(to_unit(noisy), clean, 1.0):.2f} dB -> {psnr(to_unit(out), clean, 1.0):.2f} dB in "
          f"{seconds:.0f} s, stopped at {fit.iterations} (estimate from {fit.best_iteration}); "
          f"best average {best[1]:.2f} dB at {best[0]}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"curve": curve, "history": fit.history}, fh)


if __name__ == "__main__":
    main()
