"""Speed: the reference-style fit loop against ours, in one run on one device.

    python benchmarks/speed.py --quick            # CPU: 128 px, both presets, a small stack
    python benchmarks/speed.py                    # 128/256/512 px, stack of 64 planes at 256 px
    python benchmarks/speed.py --device cuda      # on a GPU

The *baseline* is the reference notebooks' loop: the paper's network with ordinary (not in-place)
activations, float32 NCHW tensors, and every iteration a host synchronisation and a copy of the
output to numpy to compute the PSNR against the noisy image and of the average (as the notebooks
print them), plus a deep copy of the weights every 100 iterations for roll-back. *Ours* is
:class:`napari_dip.core.fit.Fitter` with its defaults (in-place activations, channels-last, fused
Adam, dense upsampling gradients; on CUDA bf16 autocast, cuDNN autotuning, loss read back every 10
iterations). The second variant is the other precision: the opt-in bf16 autocast on the CPU, fp32
on CUDA. Both fit the same noisy image from the same seed; timings alternate between the loops
(``--rounds``) so that a busy machine slows both alike; the table gives medians.

Quality check: PSNR of the averaged output against the clean image after ``--quality-iterations``
for both loops. DIP fits are chaotic in floating-point summation order, so equal seeds do not give
equal pixels across implementations; the difference is reported next to the spread of the baseline
itself run twice with different CPU thread counts.

Stacks (``--stack N``): the same planes fitted plane by plane, plane by plane with warm starts
(iterations to the automatic stop) and batched (grouped networks, ``batch_size``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from napari_dip.core.devices import resolve_device
from napari_dip.core.fit import Fitter
from napari_dip.core.inputs import make_input
from napari_dip.core.networks import build_network
from napari_dip.core.restore import Restoration
from napari_dip.core.settings import PRESETS
from napari_dip.samples import cells, psnr


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _image(size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    clean = np.stack([cells(size, seed=seed + c) for c in range(channels)])  # (C, H, W)
    noisy = (clean + np.random.default_rng(seed).normal(0, 0.1, clean.shape)).astype(np.float32)
    return clean, noisy


class Baseline:
    """The reference notebooks' denoising loop (see the module docstring)."""

    def __init__(self, preset: str, noisy: np.ndarray, dev: torch.device, seed: int = 0):
        s = PRESETS[preset]["denoise"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_network(s.network, s.input_channels, noisy.shape[0], **s.network_kwargs)
        for name, m in list(self.net.named_modules()):
            if hasattr(m, "inplace"):
                m.inplace = False
            if isinstance(m, torch.nn.Upsample):  # the reference's plain module
                parent, _, child = name.rpartition(".")
                plain = torch.nn.Upsample(scale_factor=m.scale_factor, mode=m.mode, align_corners=m.align_corners)
                setattr(self.net.get_submodule(parent) if parent else self.net, child, plain)
        self.net = self.net.to(dev)
        self.z = make_input(s.input_channels, *noisy.shape[1:], seed=seed).to(dev)
        self.y = torch.from_numpy(noisy)[None].to(dev)
        self.noisy = noisy
        self.opt = torch.optim.Adam(self.net.parameters(), lr=s.lr)
        self.sigma, self.ema_w = s.reg_noise_std, s.ema
        self.ema = None
        self.last_net = None
        self.i = 0

    def step(self) -> None:
        z = self.z + self.sigma * torch.randn_like(self.z)
        out = self.net(z)
        loss = torch.nn.functional.mse_loss(out, self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.ema = out.detach() if self.ema is None else self.ema * self.ema_w + out.detach() * (1 - self.ema_w)
        out_np = out.detach().cpu().numpy()[0]  # host sync + copy, every iteration
        psnr(out_np, self.noisy, 1.0)
        psnr(self.ema.cpu().numpy()[0], self.noisy, 1.0)
        float(loss.detach())
        if self.i % 100 == 0:
            self.last_net = copy.deepcopy(self.net.state_dict())
        self.i += 1


def _time_steps(step, dev, n: int) -> list[float]:
    times = []
    for _ in range(n):
        _sync(dev)
        t = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return times


def other_precision(dev: torch.device) -> str:
    """The precision of the second variant: the CPU's opt-in bf16, or fp32 on a GPU."""
    return "bf16" if dev.type == "cpu" else "fp32"


def per_iteration(preset: str, size: int, channels: int, dev: torch.device, rounds: int,
                  steps: int) -> dict[str, float]:
    _, noisy = _image(size, channels)
    base = Baseline(preset, noisy, dev)
    settings = PRESETS[preset]["denoise"].replace(stop_rule="none")
    ours = {}
    for name, precision in {"ours": "auto", "ours_other": other_precision(dev)}.items():
        f = Fitter(torch.from_numpy(noisy)[None], settings=settings, iterations=10**6, device=dev,
                   precision=precision)
        ours[name] = f.steps()
    results: dict[str, list[float]] = {"baseline": [], **{k: [] for k in ours}}
    for _ in range(3):  # warm-up: the first calls at a new shape set up oneDNN kernels (seconds)
        base.step()
        for g in ours.values():
            next(g)
    for _ in range(rounds):
        results["baseline"] += _time_steps(base.step, dev, steps)
        for k, g in ours.items():
            results[k] += _time_steps(lambda g=g: next(g), dev, steps)
    return {k: statistics.median(v) for k, v in results.items()}


def quality(preset: str, size: int, dev: torch.device, iterations: int) -> dict[str, float]:
    clean, noisy = _image(size, 1, seed=3)
    out = {}
    for threads in (1, 2) if dev.type == "cpu" else (None,):
        if threads:
            torch.set_num_threads(threads)
        b = Baseline(preset, noisy, dev, seed=0)
        for _ in range(iterations):
            b.step()
        out[f"baseline_{threads or 'gpu'}"] = psnr(b.ema.cpu().numpy()[0], clean[0], 1.0)
    settings = PRESETS[preset]["denoise"].replace(stop_rule="none")
    for name, precision in {"ours": "auto", f"ours_{other_precision(dev)}": other_precision(dev)}.items():
        f = Fitter(torch.from_numpy(noisy)[None], settings=settings, iterations=iterations, device=dev,
                   precision=precision)
        for _ in f.steps():
            pass
        out[name] = psnr(f.result().image[..., 0], clean[0], 1.0)
    return out


def stack_runs(preset: str, planes: int, size: int, dev: torch.device, batch: int, cap: int) -> list[dict]:
    rng = np.random.default_rng(1)
    clean = np.stack([cells(size, seed=7, phase=z / planes * 0.3) for z in range(planes)])
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    rows = []
    for name, kw in [("plane by plane", {}), ("warm start", {"warm_start": True}),
                     (f"batched x{batch}", {"batch_size": batch})]:
        job = Restoration("denoise", noisy, iterations="auto", max_iterations=cap, preset=preset, device=dev, **kw)
        _sync(dev)
        t = time.perf_counter()
        out = job.run()
        _sync(dev)
        seconds = time.perf_counter() - t
        its = [f.iterations for f in job.fits]
        rows.append(dict(mode=name, seconds=seconds, iterations=float(np.mean(its)),
                         psnr=float(np.mean([psnr(o, c, 1.0) for o, c in zip(out, clean)]))))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU-sized run: 128 px, small stack")
    p.add_argument("--device", default="auto")
    p.add_argument("--presets", nargs="+", default=["fast", "paper"])
    p.add_argument("--sizes", nargs="+", type=int, default=None)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per loop per round")
    p.add_argument("--quality-iterations", type=int, default=None)
    p.add_argument("--stack", type=int, default=None, help="planes in the stack benchmark (0: skip)")
    p.add_argument("--stack-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sizes = args.sizes or ([128] if args.quick else [128, 256, 512])
    qits = args.quality_iterations or (100 if args.quick else 500)
    planes = args.stack if args.stack is not None else (8 if args.quick else 64)
    stack_size = args.stack_size or (48 if args.quick else 256)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {threads} threads"
    print(f"device {dev} ({name}), torch {torch.__version__}, {args.channels} channels, medians of "
          f"{args.rounds}x{args.steps} steps")
    other = other_precision(dev)
    print(f"\n| preset | size | baseline s/it | ours s/it | speed-up | ours {other} s/it | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for size in sizes:
            t = per_iteration(preset, size, args.channels, dev, args.rounds, args.steps)
            print(f"| {preset} | {size} | {t['baseline']:.4f} | {t['ours']:.4f} | {t['baseline'] / t['ours']:.2f}x "
                  f"| {t['ours_other']:.4f} | {t['baseline'] / t['ours_other']:.2f}x |", flush=True)
    torch.set_num_threads(threads)
    print(f"\nquality after {qits} iterations (PSNR of the average vs the clean image, 1 channel, "
          f"{sizes[0]} px):")
    for preset in args.presets:
        q = quality(preset, sizes[0], dev, qits)
        torch.set_num_threads(threads)
        print(f"  {preset}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in q.items()), flush=True)
    if planes:
        cap = 600 if args.quick else 3000
        print(f"\nstack: {planes} planes of {stack_size}x{stack_size}, automatic stopping (cap {cap}), "
              f"preset {args.presets[0]}")
        print("| mode | seconds | s/plane | iterations/plane | mean PSNR (dB) |")
        print("|---|---|---|---|---|")
        rows = stack_runs(args.presets[0], planes, stack_size, dev, args.batch, cap)
        for r in rows:
            print(f"| {r['mode']} | {r['seconds']:.1f} | {r['seconds'] / planes:.2f} | {r['iterations']:.0f} | "
                  f"{r['psnr']:.2f} |")
        base = rows[0]["seconds"]
        print("speed-ups vs plane by plane: " + ", ".join(f"{r['mode']} {base / r['seconds']:.2f}x" for r in rows[1:]))


if __name__ == "__main__":
    main()
