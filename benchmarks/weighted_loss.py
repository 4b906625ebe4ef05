"""Exploratory (issue 17): a likelihood-weighted loss for masked fits, against the plain squared error.

Each hidden pixel's squared error is divided by the Poisson-Gaussian variance the image's own noise
estimate (``core.noise.estimate_noise``) gives at that pixel's 5x5 local mean (floored at
``--floor`` times the median variance, the weights scaled to mean 1), so bright pixels, whose shot
noise is large, count less. Not an engine setting yet: this script patches the fit's pixel weights
after :class:`~napari_dip.core.fit.Fitter` is built, and fits each crop with ``preset="auto"`` and the
automatic stop, once plain (``mse``) and once weighted (``wls``), in one process::

    python benchmarks/weighted_loss.py --set fmd128 --images Confocal TwoPhoton

``--weight holdout`` weights only the hold-out stop signal (the loss stays the plain squared error,
which for a masked fit is an unbiased proxy of the squared error to the clean image, so of PSNR),
``--weight both`` the two.

Results: docs/engine.md, "Microscopy noise" (1 thread).
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Sequence

import numpy as np

from time_to_quality import DATA, load_set, psnr  # same folder


def weight_pixels(fitter, floor: float, where: str = "loss") -> None:
    """Multiply ``fitter``'s pixel weights (``where="loss"``), its hold-out rule's weights
    (``"holdout"``) or both (``"both"``) by 1 / (estimated noise variance at the local mean)."""
    import torch
    import torch.nn.functional as F

    from napari_dip.core.noise import NoiseEstimationError, estimate_noise

    target = fitter.target.mean(1, keepdim=True)
    try:
        est = estimate_noise(target[0, 0].detach().cpu().numpy().astype(np.float64))
    except NoiseEstimationError as err:
        print(f"  no estimate ({err}): plain squared error", flush=True)
        return
    local = F.avg_pool2d(target, 5, 1, 2, count_include_pad=False)[0, 0].cpu().numpy()
    var = est.gain * local + est.zero_variance
    var = np.maximum(var, floor * float(np.median(var)))
    w = torch.from_numpy(1.0 / var).float()[None, None].to(fitter.weight.device).expand_as(fitter.weight)
    known = fitter.weight > 0
    if where in ("loss", "both"):
        fitter.weight = (fitter.weight * w / w[known].mean()).contiguous()
        fitter.all_weights_one = False
    if where in ("holdout", "both"):
        from napari_dip.core.stopping import HoldOut

        for rule in fitter.rules:
            if isinstance(rule, HoldOut):  # its error: a variance-weighted mean over the held-out pixels
                held = rule.held_out * w[:, : rule.held_out.shape[1]]
                rule.held_out = held / held[held > 0].mean() * (rule.held_out > 0)
                rule.count = float(rule.held_out.sum())


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="fmd128", choices=["fmd128", "fmd256"])
    p.add_argument("--images", nargs="+", default=["Confocal", "TwoPhoton"])
    p.add_argument("--floor", type=float, default=0.25)
    p.add_argument("--weight", default="loss", choices=["loss", "holdout", "both"],
                   help="what the weights apply to: the loss, the hold-out stop signal, or both")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from napari_dip.core.restore import Restoration

    torch.set_num_threads(args.threads)
    fitmod = importlib.import_module("napari_dip.core.fit")
    original = fitmod.Fitter.__init__
    mode = {"weighted": False}

    def patched(self, *a, **kw) -> None:
        original(self, *a, **kw)
        if mode["weighted"] and self.masked:
            weight_pixels(self, args.floor, args.weight)

    fitmod.Fitter.__init__ = patched
    diffs, plain, weighted = [], [], []
    for img in load_set(args.set, DATA, args.images, 128, 32, 0):
        row = []
        for flag in (False, True):
            mode["weighted"] = flag
            start = time.perf_counter()
            job = Restoration("denoise", img.noisy, iterations="auto", preset="auto", device="cpu")
            out = job.run()
            row.append((psnr(np.clip(out, 0, img.peak), img.clean, img.peak), job.fits[0].iterations,
                        time.perf_counter() - start))
        (a, ia, ta), (b, ib, tb) = row
        plain.append(a), weighted.append(b), diffs.append(b - a)
        print(f"{img.name:22s} mse {a:.2f} dB ({ia} it, {ta:.0f} s)  wls {b:.2f} dB ({ib} it, {tb:.0f} s)  "
              f"{b - a:+.2f}", flush=True)
    print(f"mean: mse {np.mean(plain):.3f} dB, wls {np.mean(weighted):.3f} dB; difference {np.mean(diffs):+.3f} "
          f"(min {min(diffs):+.2f}, max {max(diffs):+.2f})")


if __name__ == "__main__":
    main()
