"""Where a denoising fit's error goes, by the clean image's intensity (issue 17's noise models).

Fits each FMD crop with one preset under each noise model and prints the PSNR, then the mean squared
error and the mean error (bias) against the 50-frame average in bins of its percentiles (darkest
50 %, 50-90 %, 90-99 %, brightest 1 %)::

    python benchmarks/error_by_intensity.py --images TwoPhoton_MICE_4 TwoPhoton_MICE_1 --preset fast

Results: docs/engine.md, "Microscopy noise" (1 thread).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from time_to_quality import DATA, load_set, psnr  # same folder

PERCENTILES = (0, 50, 90, 99, 100)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="fmd128", choices=["fmd128", "fmd256"])
    p.add_argument("--images", nargs="+", default=["TwoPhoton_MICE_4"])
    p.add_argument("--preset", default="fast")
    p.add_argument("--models", nargs="+", default=["gaussian", "auto"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from napari_dip.core.restore import Restoration

    torch.set_num_threads(args.threads)
    for img in load_set(args.set, DATA, args.images, 128, 32, 0):
        clean = img.clean
        edges = np.percentile(clean, PERCENTILES)
        bins = [(clean >= lo) & (clean <= hi) for lo, hi in zip(edges[:-1], edges[1:])]
        for model in args.models:
            start = time.perf_counter()
            job = Restoration("denoise", img.noisy, iterations="auto", preset=args.preset, device="cpu",
                              noise_model=model)
            out = np.clip(job.run(), 0, img.peak)
            mse = [float(np.mean((out[b] - clean[b]) ** 2)) for b in bins]
            bias = [float(np.mean(out[b] - clean[b])) for b in bins]
            print(f"{img.name} {model:8s} psnr {psnr(out, clean, img.peak):.2f} it {job.fits[0].iterations} "
                  f"({time.perf_counter() - start:.0f} s)  MSE by clean percentile 0-50/50-90/90-99/99-100: "
                  + " ".join(f"{x:.1f}" for x in mse) + "  bias: " + " ".join(f"{b:+.2f}" for b in bias), flush=True)
        print("  bin edges", np.round(edges, 1), flush=True)


if __name__ == "__main__":
    main()
