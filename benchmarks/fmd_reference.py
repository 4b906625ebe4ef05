"""Is the 50-frame average a fair reference for one FMD frame? A second, independent reference.

    python benchmarks/fmd_reference.py --config TwoPhoton_MICE --frame 1
    python benchmarks/fmd_reference.py --config TwoPhoton_MICE --frame 1 --set holdout_min_values=0

FMD's ground truth is the average of 50 frames, which includes the frame being restored and may
differ from that frame's own expectation (a gain, drift, bleaching). This script fits one raw frame
(a centre crop, the ``fast`` preset, a fixed number of iterations, seed 0) and, every ``--every``
iterations, scores the running average against:

- the 50-frame average (``psnr_gt``), as the quality benchmark does;
- the same after the best gain and offset (``psnr_gt_affine``: what is left once a global intensity
  mismatch is forgiven);
- the mean of the *other* three raw frames (``mse_others``). Its noise is independent of the fitted
  frame's, so for a static sample ``mse_others`` = MSE to the expectation + sigma^2 / 3: it ranks the
  iterations like the true error, without the 50-frame average.

It also prints the stopping rule's signal where one is computed (``stop_rule`` is kept with an
unreachable patience), so the rule's ranking can be read beside the two references. If the
references agree and the signal does not, the stopping rule was fooled, not the benchmark.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_dip.samples import psnr
from quality import center_crop, parse_overrides  # the quality benchmark's own helpers (same folder)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "microscopy" / "fmd"


def centre(image: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` centre crop as float64 (the quality benchmark's crop)."""
    return center_crop(image, size).astype(np.float64)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="TwoPhoton_MICE", help="FMD configuration, e.g. Confocal_BPAE_B")
    p.add_argument("--frame", type=int, default=1, choices=(1, 2, 3, 4))
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--stop-rule", default="holdout", choices=("holdout", "wmv", "none"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE", help="Settings overrides")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"FMD data not found at {args.data}; nothing to check (pass --data)")
        return
    from PIL import Image

    from napari_dip.core.restore import Restoration
    from napari_dip.core.settings import get_settings
    from napari_dip.core.stopping import holdout_fraction_for

    torch.set_num_threads(args.threads)
    raw = {k: centre(np.asarray(Image.open(args.data / "raw" / f"{args.config}_{k}.png")), args.crop)
           for k in range(1, 5)}
    gt = centre(np.asarray(Image.open(args.data / "gt" / f"{args.config}.png")), args.crop)
    others = np.mean([raw[k] for k in raw if k != args.frame], axis=0)
    y = raw[args.frame]
    overrides = parse_overrides(args.set)
    settings = get_settings("fast", "denoise", iterations=args.iterations, stop_rule=args.stop_rule,
                            stop_patience=10 * args.iterations, **overrides)
    # the quality benchmark's path: the uint8 frame through Restoration, seed 0, one whole plane
    restoration = Restoration("denoise", y.astype(np.uint8), preset=settings, seed=0, preview_every=args.every,
                              iterations="auto" if args.stop_rule != "none" else args.iterations, tile=None)
    rows = []

    def follow(snap) -> None:
        if snap.ema is not None and snap.iteration % args.every == 0:
            e = np.asarray(snap.ema, dtype=np.float64).reshape(y.shape)
            gain, offset = np.linalg.lstsq(np.stack([e.ravel(), np.ones(e.size)], 1), gt.ravel(), rcond=None)[0]
            rows.append((snap.iteration, psnr(e, gt, 255.0), psnr(gain * e + offset, gt, 255.0),
                         float(np.mean((e - others) ** 2)), snap.stop_signal))

    restoration.run(follow)
    print(f"{args.config}_{args.frame}, {args.crop} px centre crop, fast, seed 0, rule {args.stop_rule}"
          + (f", {holdout_fraction_for(y.size, settings.holdout_fraction, settings.holdout_min_values):.1%} held out"
             if args.stop_rule == "holdout" else ""))
    print("iteration  psnr_gt  psnr_gt_affine  mse_others  signal")
    for it, a, b, c, s in rows:
        print(f"{it:9d}  {a:7.2f}  {b:14.2f}  {c:10.2f}  " + ("-" if s is None else f"{s:.4e}"))
    for name, col, best in (("psnr_gt", 1, max), ("psnr_gt_affine", 2, max), ("mse_others", 3, min),
                            ("signal", 4, min)):
        vals = [(r[col], r[0]) for r in rows if r[col] is not None]
        if vals:
            print(f"best {name}: iteration {best(vals)[1]}")


if __name__ == "__main__":
    main()
