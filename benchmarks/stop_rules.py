"""Stopping rules of masked fits, replayed: trace long fits once, then try rules offline.

    # 1. trace: fit the 12 FMD frames (256 px crops) with the default preset and a long patience,
    #    recording every 5 iterations the hold-out signal, the PSNR of the running average and the time
    python benchmarks/stop_rules.py trace --crop 256 --json trace256.json
    #    ... and the synthetic "noisy cells" image of `napari-dip demo` (128 px, 4 seeds) and of the sample (256 px)
    python benchmarks/stop_rules.py trace --cells 128 --seeds 0 1 2 3 --json cells128.json
    python benchmarks/stop_rules.py trace --cells 256 --seeds 0 --json cells256.json
    # 2. replay: what each rule (patience, relative tolerance, which average is kept) would have done
    python benchmarks/stop_rules.py replay trace256.json
    python benchmarks/stop_rules.py replay cells128.json cells256.json
    # 3. a settled running average as the stop: how much the average changed over --lag iterations,
    #    against its residual (traces made since 2026-11-30, which record the changes)
    python benchmarks/stop_rules.py replay trace256.json cells128.json --changes 0.03 0.05 0.08 --lag 50

A rule is replayed exactly as :class:`napari_dip.core.stopping.HoldOut` runs it: no minimum before
the floor (``min_iterations``), a stop ``patience`` iterations after the last minimum more than
``tolerance`` below the previous such one (the FMD wide-field frames, whose noise is spatially
correlated, keep the engine's 2 % tolerance whatever the replayed one is), and either the average at
the signal's minimum (``keep_estimate='minimum'``) or the one at the stop (``'stop'``) is kept.
The traced fits are the same fits up to any earlier stop, so a replayed stop's PSNR and time are
what that rule would have given in that run. Per rule: the mean PSNR, its difference to the
reference rule (patience 100, minimum: the default until 2026-11-30) with the worst frame, the
total time to the stops and the ratio to the reference, and the mean stop iteration.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REFERENCE = (100, 0.0, "minimum")  # the rule before 2026-11-30; now denoising keeps the average at the stop
DEFAULT = (100, 0.0, "stop")  # the rule since then: the reference of --reference traces
CORRELATED_TOLERANCE = 0.02  # napari_dip.core.masking.CORRELATED_NOISE_TOLERANCE
LAGS = (10, 25, 50, 100)  # traced: how much the running average changed over these many iterations


def cells_images(size: int, seeds: list[int]) -> list:
    """The synthetic noisy-cells images (``napari-dip demo`` is ``size=128, seed=0``), scored in counts."""
    from napari_dip.samples import noisy_cells
    from time_to_quality import Image

    out = []
    for seed in seeds:
        clean, noisy = noisy_cells(size, seed=seed)
        out.append(Image("cells", f"cells{size}_seed{seed}", noisy.astype(np.float32),
                         clean * 4095 * 0.8 + 100, 4095 * 0.8))
    return out


def trace(crop: int, out: Path, patience: int, cap: int, images: list[str] | None, cells: int | None = None,
          seeds: list[int] | None = None, overrides: dict | None = None) -> None:
    import torch

    from napari_dip.core.restore import Restoration
    from time_to_quality import DATA, load_set, psnr

    torch.set_num_threads(1)
    records = []
    todo = cells_images(cells, seeds or [0]) if cells else load_set(f"fmd{crop}", DATA, images, 256, 32, 0)
    for img in todo:
        curve: dict[int, tuple[float, float]] = {}
        changes: dict[int, list[float]] = {}  # iteration: [RMS(noisy - average), RMS change over each of LAGS]
        recent: dict[int, np.ndarray] = {}
        start = time.perf_counter()

        def follow(snap, img=img, curve=curve, start=start, changes=changes, recent=recent) -> None:
            if snap.ema is not None:
                average = np.squeeze(snap.ema).astype(np.float64)
                estimate = average if cells else np.clip(average, 0, 255)
                curve[snap.iteration] = (time.perf_counter() - start, psnr(estimate, img.clean, img.peak))
                recent[snap.iteration] = average
                for old in [k for k in recent if k < snap.iteration - max(LAGS)]:
                    del recent[old]
                row = [float(np.sqrt(np.mean((average - np.squeeze(img.noisy)) ** 2)))]
                row += [float(np.sqrt(np.mean((average - recent[snap.iteration - lag]) ** 2)))
                        if snap.iteration - lag in recent else math.nan for lag in LAGS]
                changes[snap.iteration] = row

        seed = int(img.name.rsplit("seed", 1)[1]) if cells else 0
        job = Restoration("denoise", img.noisy, iterations="auto", max_iterations=cap, preset="auto", device="cpu",
                          seed=seed, preview_every=5, **{"stop_patience": patience, "keep_estimate": "minimum",
                                                          **(overrides or {})})
        job.run(follow)
        fitted = job.fits[0]
        records.append(dict(image=img.name, iterations=fitted.iterations, seconds=time.perf_counter() - start,
                            signal_iteration=fitted.history["signal_iteration"], signal=fitted.history["signal"],
                            min_iterations=job.settings.min_iterations, overrides=overrides or {},
                            correlated=bool(job.fits[0].history.get("mask_ratio", [0.3])[0] > 0.5),
                            curve={str(k): v for k, v in curve.items()}, lags=list(LAGS),
                            changes={str(k): v for k, v in changes.items()}))
        print(f"{img.name:22s} {fitted.iterations:5d} it  {records[-1]['seconds']:6.1f} s", flush=True)
        out.write_text(json.dumps(records))


def simulate(iterations, signals, patience: int, tolerance: float, floor: int) -> tuple[int | None, int]:
    """``(stop iteration or None, iteration of the signal minimum)`` of one rule on one trace."""
    best, best_it = math.inf, 0
    significant, significant_it = math.inf, 0
    for it, s in zip(iterations, signals):
        if it < floor:
            continue
        if s < best:
            best, best_it = s, it
        if s < significant * (1 - tolerance):
            significant, significant_it = s, it
        if it >= floor and it - significant_it >= patience:
            return it, best_it
    return None, best_it


def settled(trace: dict, lag: int, threshold: float) -> int | None:
    """First traced iteration (from the floor) where the running average changed by less than
    ``threshold`` times its residual against the noisy image over the last ``lag`` iterations."""
    lags = trace["lags"]
    for it, row in sorted((int(k), v) for k, v in trace["changes"].items()):
        if it >= trace["min_iterations"] and row[1 + lags.index(lag)] < threshold * row[0]:
            return it
    return None


def replay_changes(files: list[Path], lag: int, thresholds: list[float]) -> None:
    """The hold-out rule (patience 100, average at the stop) or, sooner, a settled running average."""
    traces = [t for f in files for t in json.loads(f.read_text()) if "changes" in t]
    base = [replay_rule(t, DEFAULT)[2] for t in traces]
    print(f"{len(traces)} traced fits with the average's changes; reference: patience 100, average at the stop")
    print(f"{'lag':>4} {'threshold':>9} {'mean PSNR':>9} {'vs ref':>7} {'worst':>7} {'ref/time':>8} {'mean stop':>9}")
    for threshold in [0.0, *thresholds]:
        rows = []
        for t, stop in zip(traces, base):
            curve = {int(k): v for k, v in t["curve"].items()}
            early = settled(t, lag, threshold) if threshold else None
            s = stop if early is None else min(early, stop)
            rows.append((curve[s][0], curve[s][1], s, curve[stop][0], curve[stop][1]))
        d = [r[1] - r[4] for r in rows]
        print(f"{lag:4d} {threshold:9.3f} {np.mean([r[1] for r in rows]):9.3f} {np.mean(d):+7.3f} {min(d):+7.3f} "
              f"{sum(r[3] for r in rows) / sum(r[0] for r in rows):8.2f} {np.mean([r[2] for r in rows]):9.0f}")


def replay_rule(t: dict, rule: tuple) -> tuple[float, float, int] | None:
    """``(seconds, PSNR, stop iteration)`` of ``rule`` on one trace, None if it did not stop within it."""
    p, tol, keep = rule
    curve = {int(k): v for k, v in t["curve"].items()}
    base_tol = CORRELATED_TOLERANCE if t.get("correlated") else 0.0
    stop, best = simulate(t["signal_iteration"], t["signal"], p, max(tol, base_tol), t["min_iterations"])
    if stop is None or stop not in curve:
        return None
    return curve[stop][0], curve[stop if keep == "stop" else best][1], stop


def replay(files: list[Path], patiences: list[int], tolerances: list[float],
           reference: list[Path] | None = None) -> None:
    traces = [t for f in files for t in json.loads(f.read_text())]
    rules = [(p, tol, keep) for keep in ("minimum", "stop") for p in patiences for tol in tolerances]
    if REFERENCE not in rules and not reference:
        rules.insert(0, REFERENCE)
    results: dict[tuple, list] = {rule: [replay_rule(t, rule) for t in traces] for rule in rules}
    if reference:  # other traces of the same images (e.g. other settings), with the default rule
        others = {t["image"]: t for f in reference for t in json.loads(f.read_text())}
        ref = [replay_rule(others[t["image"]], DEFAULT) for t in traces]
        print(f"reference: patience {DEFAULT[0]}, average at the {DEFAULT[2]}, on the traces in "
              f"{', '.join(str(f) for f in reference)}: mean {np.mean([r[1] for r in ref]):.3f} dB, "
              f"{sum(r[0] for r in ref):.0f} s, mean stop {np.mean([r[2] for r in ref]):.0f}")
    else:
        ref = results[REFERENCE]
    oracle = np.mean([max(v[1] for v in t["curve"].values()) for t in traces])
    print(f"{len(traces)} traced fits; best PSNR along the curves (the oracle): mean {oracle:.3f} dB")
    print(f"{'patience':>8} {'tolerance':>9} {'keep':>7} {'mean PSNR':>9} {'vs ref':>7} {'worst':>7} "
          f"{'time':>7} {'ref/time':>8} {'mean stop':>9}")
    for rule, rows in results.items():
        p, tol, keep = rule
        if any(r is None for r in rows) or any(r is None for r in ref):
            print(f"{p:8d} {tol:9.4f} {keep:>7}  (some fits did not stop within the trace)")
            continue
        d = [r[1] - q[1] for r, q in zip(rows, ref)]
        total, ref_total = sum(r[0] for r in rows), sum(q[0] for q in ref)
        mark = "  <- reference" if rule == REFERENCE and not reference else ""
        print(f"{p:8d} {tol:9.4f} {keep:>7} {np.mean([r[1] for r in rows]):9.3f} {np.mean(d):+7.3f} {min(d):+7.3f} "
              f"{total:7.0f} {ref_total / total:8.2f} {np.mean([r[2] for r in rows]):9.0f}{mark}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace", help="fit and record the curves")
    t.add_argument("--crop", type=int, default=256, choices=[128, 256, 512])
    t.add_argument("--json", type=Path, required=True)
    t.add_argument("--patience", type=int, default=300, help="long enough for every replayed rule")
    t.add_argument("--cap", type=int, default=1200)
    t.add_argument("--images", nargs="+", default=None, help="frame name substrings to keep")
    t.add_argument("--cells", type=int, default=None, help="trace the synthetic noisy-cells image of this size instead")
    t.add_argument("--seeds", nargs="+", type=int, default=[0], help="with --cells: the images' seeds")
    t.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                   help="engine settings for the traced fits, e.g. noise_model=auto holdout_fraction=0.15")
    r = sub.add_parser("replay", help="replay rules on traced fits")
    r.add_argument("files", nargs="+", type=Path)
    r.add_argument("--patience", nargs="+", type=int, default=[25, 50, 75, 100, 150])
    r.add_argument("--tolerance", nargs="+", type=float, default=[0.0, 0.001, 0.002])
    r.add_argument("--changes", nargs="+", type=float, default=None, metavar="THRESHOLD",
                   help="instead: stop also when the average changed by less than THRESHOLD times its residual "
                        "over --lag iterations (traces made with the average's changes)")
    r.add_argument("--lag", type=int, default=50, choices=LAGS)
    r.add_argument("--reference", nargs="+", type=Path, default=None, metavar="FILE",
                   help="compare with the default rule on these traces of the same images (e.g. other settings)")
    args = p.parse_args(argv)
    if args.command == "trace":
        from quality import parse_overrides

        trace(args.crop, args.json, args.patience, args.cap, args.images, args.cells, args.seeds,
              parse_overrides(args.set))
    elif args.changes:
        replay_changes(args.files, args.lag, args.changes)
    else:
        replay(args.files, args.patience, args.tolerance, args.reference)


if __name__ == "__main__":
    main()
