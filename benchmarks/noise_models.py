"""Gaussian against Poisson-Gaussian fitting on FMD crops, in one run (the same minutes of one machine).

    # CPU, 1 thread: two frames, 128 px centre crops, the CPU default preset ('auto' -> 'pretrained')
    python benchmarks/noise_models.py --images Confocal_BPAE_B_1 TwoPhoton_MICE_1 --crop 128 --threads 1
    # all 12 frames, 256 px, also 'auto' (the model chosen by measuring each frame)
    python benchmarks/noise_models.py --crop 256 --models gaussian poisson-gaussian auto --json nm256.json

Every model is fitted with ``iterations='auto'`` and the same preset and seed; per frame it prints
the final PSNR against the 50-frame average, the best PSNR along the curve (the oracle iteration),
the iterations (stop/cap) and seconds, and the estimated camera parameters recorded in the fit's
history; then each model's mean and the per-frame difference to ``gaussian`` (today's engine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from quality import load_cases  # same folder
from time_to_quality import DATA, psnr  # same folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", nargs="+", default=None, help="frame name substrings to keep")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--models", nargs="+", default=["gaussian", "poisson-gaussian"])
    p.add_argument("--preset", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--every", type=int, default=25, help="PSNR every this many iterations (the oracle)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        cases = load_cases("fmd", args.data, args.crop, args.images)
    except FileNotFoundError as err:
        print(f"nothing to measure: {err}")
        return
    import torch

    from napari_dip.core.restore import Restoration

    torch.set_num_threads(args.threads)
    print(f"python benchmarks/noise_models.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    for case in cases:
        for model in args.models:
            curve: list[float] = []

            def follow(snap, curve=curve, clean=case.clean) -> None:
                if snap.ema is not None:
                    curve.append(psnr(np.clip(np.squeeze(snap.ema), 0, 255), clean, 255.0))

            start = time.perf_counter()
            job = Restoration("denoise", case.degraded.astype(np.float32), iterations="auto", preset=args.preset,
                              device="cpu", preview_every=args.every, noise_model=model)
            out = job.run(follow)
            seconds = time.perf_counter() - start
            fit = job.fits[0]
            hist = job.history()[0]
            final = psnr(np.clip(out, 0, 255), case.clean, 255.0)
            row = dict(image=case.name, crop=args.crop, model=model, used=hist.get("noise_model", ["?"])[0],
                       preset=job.resolved_preset, psnr=final, best=max(curve + [final]), seconds=seconds,
                       stop=fit.best_iteration, iterations=fit.iterations, rule=(hist.get("stop_rule") or ["?"])[0],
                       gain=(hist.get("noise_gain") or [None])[0], read=(hist.get("noise_read_variance") or [None])[0],
                       offset=(hist.get("noise_offset") or [None])[0])
            rows.append(row)
            cam = "" if row["gain"] is None else \
                f" gain {row['gain']:.3g} read {row['read']:.3g} offset {row['offset']:.3g}"
            print(f"{case.name:20s} {args.crop:4d} {model:16s} -> {row['used']:16s} {row['preset']:10s} "
                  f"{final:6.2f} dB (best {row['best']:6.2f}) stop {row['stop']}/{row['iterations']} "
                  f"{row['rule']} {seconds:6.1f} s{cam}", flush=True)
    for model in args.models:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        line = f"{model:16s} mean {np.mean([r['psnr'] for r in mine]):6.2f} dB, oracle gap " \
               f"{np.mean([r['best'] - r['psnr'] for r in mine]):.2f} dB"
        if model != "gaussian":
            diffs = [r["psnr"] - g["psnr"] for r in mine for g in rows
                     if g["model"] == "gaussian" and g["image"] == r["image"]]
            if diffs:
                line += f"; vs gaussian mean {np.mean(diffs):+.2f}, worst {min(diffs):+.2f} dB"
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
