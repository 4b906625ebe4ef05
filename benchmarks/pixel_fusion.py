"""Pixel fusion replayed on saved estimates: which window and threshold (issue 17, docs/engine.md).

Fits each image once with the engine's masked fit and ``pixel_fusion=False`` (``preset="auto"`` on a
CPU, automatic stop), keeps the estimate, then fuses it with the noisy image under several settings of
:func:`napari_dip.core.fusion.fuse` (Gaussian window ``sigma``, threshold ``z`` standard errors) and a
single weight for the whole plane, and prints the PSNR gain of each over the estimate::

    python benchmarks/pixel_fusion.py --set fmd128 --save est-fmd128.npz
    python benchmarks/pixel_fusion.py --from est-fmd128.npz          # replay without fitting again

Sets: those of ``time_to_quality.py`` (``fmd128``, ``fmd256``, ``color9`` with ``--color-crop`` px crops,
default 256) and ``cells`` (the noisy-cells sample at 256 px, seeds 0-3). The noise variance is the image's own estimate
(:func:`~napari_dip.core.noise.estimate_noise`), as the engine uses it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from time_to_quality import DATA, Image, load_set, psnr  # same folder

VARIANTS = [(s, z) for s in (3.0, 5.0, 7.0) for z in (0.0, 1.0, 2.0)]


def images(name: str, names: Sequence[str] | None, color_crop: int = 256) -> list[Image]:
    if name == "cells":
        from napari_dip.samples import noisy_cells

        out = []
        for seed in range(4):
            clean, noisy = noisy_cells(256, seed=seed)
            out.append(Image("cells", f"cells_{seed}", noisy.astype(np.float32), clean * 4095 * 0.8 + 100, 4095.0))
        return [img for img in out if not names or any(n in img.name for n in names)]
    return load_set(name, DATA, names, color_crop, 32, 0)


def fit_all(imgs: list[Image], threads: int) -> dict[str, np.ndarray]:
    import torch

    from napari_dip.core.restore import Restoration

    torch.set_num_threads(threads)
    saved: dict[str, np.ndarray] = {}
    for img in imgs:
        start = time.perf_counter()
        job = Restoration("denoise", img.noisy, iterations="auto", device="cpu", pixel_fusion=False)
        mu = job.run()
        print(f"fitted {img.name}: {psnr(np.clip(mu, 0, img.peak), img.clean, img.peak):.2f} dB, "
              f"{job.fits[0].iterations} it, {time.perf_counter() - start:.0f} s", flush=True)
        saved.update({f"{img.name}|noisy": img.noisy, f"{img.name}|clean": img.clean, f"{img.name}|mu": mu,
                      f"{img.name}|peak": np.array(img.peak)})
    return saved


def replay(saved: dict[str, np.ndarray]) -> None:
    from napari_dip.core.fusion import fuse
    from napari_dip.core.noise import estimate_noise

    names = list(dict.fromkeys(k.split("|")[0] for k in saved))
    heads = ["global"] + [f"s{s:g}z{z:g}" for s, z in VARIANTS]
    print(f"{'image':24s} {'estimate':>8s} " + " ".join(f"{h:>7s}" for h in heads) + "   (dB gained)")
    gains = []
    for n in names:
        y, x, mu = (np.asarray(saved[f"{n}|{k}"], np.float64) for k in ("noisy", "clean", "mu"))
        peak = float(saved.get(f"{n}|peak", 255.0))
        line = estimate_noise(y)
        base = psnr(np.clip(mu, 0, peak), x, peak)
        s2n = np.maximum(line.variance(np.clip(mu, 0, None)), 1e-6)
        s2p = max(float(np.mean((y - mu) ** 2 - s2n)), 0.0)  # one prior variance for the plane
        row = [psnr(np.clip(mu + s2p / (s2p + s2n) * (y - mu), 0, peak), x, peak) - base]
        row += [psnr(np.clip(fuse(y, mu, line.variance, sigma=s, z=z).image, 0, peak), x, peak) - base
                for s, z in VARIANTS]
        gains.append(row)
        print(f"{n:24s} {base:8.2f} " + " ".join(f"{g:+7.2f}" for g in row), flush=True)
    g = np.array(gains)
    print(f"{'mean':24s} {'':8s} " + " ".join(f"{v:+7.2f}" for v in g.mean(0)))
    print(f"{'worst':24s} {'':8s} " + " ".join(f"{v:+7.2f}" for v in g.min(0)))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="fmd128", choices=["fmd128", "fmd256", "color9", "cells"])
    p.add_argument("--images", nargs="+", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--color-crop", type=int, default=256, help="centre crop of the colour images (px)")
    p.add_argument("--save", type=Path, default=None, help="keep the estimates (.npz) to replay with --from")
    p.add_argument("--from", dest="replay", type=Path, default=None, help="replay saved estimates")
    args = p.parse_args(argv)
    if args.replay is not None:
        with np.load(args.replay) as f:
            saved = {k: f[k] for k in f.files}
    else:
        imgs = images(args.set, args.images, args.color_crop)
        if not imgs:
            return
        saved = fit_all(imgs, args.threads)
        if args.save is not None:
            np.savez_compressed(args.save, **saved)
    replay(saved)


if __name__ == "__main__":
    main()
