"""Seconds per iteration of each preset at 128/256/512 px on the current device, and the
parameter counts.

    python benchmarks/presets.py                 # all presets, 128 256 512, RGB, auto device
    python benchmarks/presets.py --sizes 128 256 --iterations 5 --device cpu

Each figure is the median over ``--iterations`` timed steps after ``--warmup`` steps of a real
fit (Adam step, jitter, EMA: the whole loop), with the host synchronised each step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from napari_dip.core.fit import Fitter
from napari_dip.core.networks import build_network, count_parameters
from napari_dip.core.settings import PRESETS


def time_preset(preset: str, size: int, channels: int, device: str, iterations: int, warmup: int) -> float:
    settings = PRESETS[preset]["denoise"].replace(stop_rule="none")
    target = torch.rand(1, channels, size, size)
    fitter = Fitter(target, settings=settings, iterations=warmup + iterations, device=device, sync_every=1)
    gen = fitter.steps()
    times = []
    last = time.perf_counter()
    for snap in gen:
        if fitter.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if snap.iteration > warmup:
            times.append(now - last)
        last = now
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=sorted(PRESETS))
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512])
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_dip.core.devices import resolve_device

    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {dev} ({name}), torch {torch.__version__}, {args.channels} channels")
    print("| preset | parameters | " + " | ".join(f"{s}x{s} s/it" for s in args.sizes) + " |")
    print("|---|---|" + "---|" * len(args.sizes))
    for preset in args.presets:
        s = PRESETS[preset]["denoise"]
        n = count_parameters(build_network(s.network, s.input_channels, args.channels, **s.network_kwargs))
        cells = [f"{time_preset(preset, size, args.channels, args.device, args.iterations, args.warmup):.4f}"
                 for size in args.sizes]
        print(f"| {preset} | {n:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
