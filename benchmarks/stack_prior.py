"""A prior learned from the stack itself: can it make a 32-plane stack 5x faster than plane by plane?

The stack of ``time_to_quality.py --sets stack`` (its noise, seed and clean reference). Both modes
first fine-tune the shipped grayscale weights on the stack's own noisy planes by masked-pixel
reconstruction, as ``napari-dip pretrain my_stack.tif`` does but with only the low mask ratio
(white noise; the CLI also trains the high one in 35 % of its steps) and this script's ``--batch``
and ``--lr`` defaults (4 crops, 0.001; the CLI's are 8 and 0.0005), ``--steps`` steps of 64 px
crops, then:

``fits``
    fit every plane from those weights for exactly ``--iterations`` iterations (no stop rule) and
    print the stack's PSNR (pooled over the planes, as ``time_to_quality.py`` reports it) every 5
    iterations: how many iterations a plane needs from a stack prior against the shipped one
    (``--steps 0``).
``zero-shot``
    no fit at all: the average of ``--passes`` forward passes, each with a fresh 30 % of the
    pixels hidden, at the hidden pixels (the Noise2Self estimate of the network trained on the
    stack).

::

    python benchmarks/stack_prior.py fits --steps 0 --iterations 100
    python benchmarks/stack_prior.py fits --steps 2000 --iterations 60
    python benchmarks/stack_prior.py zero-shot --steps 2000 --passes 64

Compare with ``python benchmarks/time_to_quality.py --sets stack --planes 32 --methods bm3d auto
--threads 1`` (plane by plane with the automatic stop). 1 torch thread; docs/performance.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from time_to_quality import DATA, psnr, stack_image  # same folder


def tuned_weights(noisy: np.ndarray, steps: int, batch: int, lr: float, folder: str) -> tuple[str, float]:
    """The shipped grayscale weights fine-tuned on ``noisy``'s planes; returns (file, seconds)."""
    from napari_dip.core.pretrain import drain_pretraining, pretrain_steps
    from napari_dip.core.settings import get_settings, with_network_of
    from napari_dip.core.weights import builtin_path, load_weights, save_weights

    shipped = str(builtin_path(1))
    if steps == 0:
        return shipped, 0.0
    start = time.perf_counter()
    w = load_weights(shipped)
    settings = with_network_of(get_settings("pretrained", "denoise", weights=None), w)
    net = drain_pretraining(pretrain_steps(list(noisy), settings, channels=1, steps=steps, batch=batch, patch=64,
                                           lr=lr, synthetic_noise=False, init_state=w.state_dict, high_share=0.0))
    path = str(Path(folder) / "stack.pt")
    save_weights(path, net, network=settings.network, network_kwargs=settings.network_kwargs, in_channels=2,
                 out_channels=1, input_kind="masked")
    return path, time.perf_counter() - start


def short_fits(noisy: np.ndarray, clean: np.ndarray, weights: str, iterations: int) -> np.ndarray:
    """Pooled PSNR of the stack every 5 iterations of fixed-length fits of every plane."""
    from napari_dip.core.restore import Restoration

    errors = np.full((len(noisy), iterations // 5 + 1), np.nan)
    for i, plane in enumerate(noisy):
        def follow(snap, i=i) -> None:
            if snap.ema is not None:
                est = np.clip(np.squeeze(snap.ema), 0, 1).astype(np.float64)
                errors[i, snap.iteration // 5] = np.mean((est - clean[i]) ** 2)

        Restoration("denoise", plane, iterations=iterations, preset="auto", weights=weights, stop_rule="none",
                    preview_every=5, device="cpu").run(follow)
    return 10 * np.log10(1.0 / errors.mean(axis=0))


def zero_shot(noisy: np.ndarray, weights: str, passes: int, ratio: float = 0.3, per_batch: int = 8) -> np.ndarray:
    """Each plane's average hidden-pixel prediction over ``passes`` random masks (no fit)."""
    import torch
    import torch.nn.functional as F

    from napari_dip.core.masking import hide, masked_input
    from napari_dip.core.networks import build_network
    from napari_dip.core.weights import load_weights

    w = load_weights(weights)
    net = build_network(w.network, w.in_channels, w.out_channels, **w.network_kwargs)
    net.load_state_dict(w.state_dict)
    net.train()  # batch statistics of the plane, as in fits
    gen = torch.Generator().manual_seed(0)
    out = []
    for plane in noisy:
        lo, hi = float(plane.min()), float(plane.max())  # pre-training scales each image so
        x = torch.from_numpy((plane - lo) / (hi - lo)).float()[None, None]
        h, wd = plane.shape
        m = net.size_multiple
        x = F.pad(x, (0, (-wd) % m, 0, (-h) % m), mode="reflect")
        total, count, done = torch.zeros_like(x), torch.zeros_like(x), 0
        with torch.no_grad():
            while done < passes:
                b = min(per_batch, passes - done)
                visible = hide((b, 1, *x.shape[2:]), ratio, gen)
                pred = net(masked_input(x.expand(b, -1, -1, -1), visible))
                total += (pred * (1 - visible)).sum(0, keepdim=True)
                count += (1 - visible).sum(0, keepdim=True)
                done += b
        out.append((total / count.clamp_min(1))[0, 0, :h, :wd].numpy() * (hi - lo) + lo)
    return np.stack(out)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["fits", "zero-shot"])
    p.add_argument("--steps", type=int, default=2000, help="fine-tuning steps on the stack (0: shipped weights)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--iterations", type=int, default=60, help="fits: iterations per plane")
    p.add_argument("--passes", type=int, default=64, help="zero-shot: masked forward passes per plane")
    p.add_argument("--planes", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    img = stack_image(DATA, args.planes, 0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        weights, tuning = tuned_weights(img.noisy, args.steps, args.batch, args.lr, folder)
        if args.mode == "fits":
            curve = short_fits(img.noisy, img.clean, weights, args.iterations)
            print("stack PSNR by iteration: " + " ".join(f"{5 * j}:{v:.2f}" for j, v in enumerate(curve)
                                                           if np.isfinite(v)))
            final = curve[-1]
        else:
            final = psnr(np.clip(zero_shot(img.noisy, weights, args.passes), 0, 1), img.clean, 1.0)
    total = time.perf_counter() - start
    print(f"{args.mode}, {args.steps} tuning steps ({tuning:.0f} s): {final:.2f} dB, {total:.0f} s in all "
          f"(noisy {psnr(img.noisy, img.clean, 1.0):.2f} dB)")


if __name__ == "__main__":
    main()
