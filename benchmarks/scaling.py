"""Throughput of distributed stack jobs: planes per minute in-process and on 1, 2, ... local workers.

    OMP_NUM_THREADS=1 python benchmarks/scaling.py                  # 8 planes of 48x64, fast, 50 it.
    OMP_NUM_THREADS=1 python benchmarks/scaling.py --planes 16 --workers 1 2 4 --device auto

Each configuration runs the same ``denoise`` job (a synthetic noisy stack, fixed iterations, seed 0)
through :func:`napari_dip.distributed.restore_stack` into a fresh ``.zarr`` store; cluster workers
are separate processes (``LocalCluster(processes=True, threads_per_worker=1)``), started and warmed
up (torch imported) before the clock starts, so the time is: statistics pass + plane tasks +
writes. Every result is checked against the in-process one (bit-identical on the CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_stack(planes: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A noisy uint16 fluorescence-like stack ``(planes, height, width)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 1000 + 500 * np.sin(xx / 6.0) * np.cos(yy / 5.0)
    stack = [base * (1 + 0.05 * k) + rng.normal(0, 80, base.shape) for k in range(planes)]
    return np.clip(stack, 0, 65535).astype(np.uint16)


def _warm(dask_worker=None) -> int:  # noqa: ARG001
    import torch

    import napari_dip.distributed.plane  # noqa: F401

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(48, 64), metavar=("H", "W"))
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process baseline")
    args = parser.parse_args(argv)

    import torch
    from distributed import Client, LocalCluster

    from napari_dip.distributed import restore_stack

    torch.set_num_threads(1)
    stack = make_stack(args.planes, *args.size)
    fit = dict(iterations=args.iterations, preset=args.preset, device=args.device, seed=0)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores visible, "
          f"load average {load[0]:.2f} at start; torch {torch.__version__}, device {args.device}")
    print(f"job: denoise {args.planes} planes of {args.size[0]}x{args.size[1]}, preset {args.preset}, "
          f"{args.iterations} iterations, one torch thread per task")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="napari-dip-scaling-"))
    reference = None
    try:
        if not args.no_in_process:
            tasks: list[float] = []
            start = time.perf_counter()
            reference = restore_stack("denoise", stack, store=tmp / "inprocess.zarr",
                                      on_plane_done=lambda e: tasks.append(e.seconds), **fit)[:]
            rows.append(("in-process", time.perf_counter() - start, float(np.median(tasks))))
        for n in args.workers:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                client.run(_warm)
                seconds: list[float] = []
                start = time.perf_counter()
                out = restore_stack("denoise", stack, store=tmp / f"workers{n}.zarr", scheduler=client,
                                    on_plane_done=lambda e, record=seconds: record.append(e.seconds), **fit)[:]
                rows.append((f"{n} worker{'s' if n > 1 else ''}", time.perf_counter() - start,
                             float(np.median(seconds))))
            if reference is None:
                reference = out
            elif args.device == "cpu" and not np.array_equal(out, reference):
                print(f"warning: {n} worker(s) gave a different result than the first run")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0][1]
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"load average {load[0]:.2f} at the end")
    print(f"{'run':<12} {'seconds':>8} {'planes/min':>11} {'speed-up':>9} {'s/plane task (median)':>22}")
    for name, seconds, task in rows:
        print(f"{name:<12} {seconds:8.1f} {args.planes / seconds * 60:11.1f} {base / seconds:8.2f}x {task:22.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
