"""Time to quality: every method on every image in ONE run, with PSNR against time and iterations.

    # CPU, 1 thread: the 256 px FMD crops, all 12 frames, the four methods
    python benchmarks/time_to_quality.py --sets fmd256 --threads 1 --json ttq-fmd256.json
    # full 512 px FMD frames (today's default takes most of an hour a frame on a CPU)
    python benchmarks/time_to_quality.py --sets fmd512 --images Confocal_BPAE_B_1 TwoPhoton_MICE_1 \\
        WideField_BPAE_G_1 --threads 1 --json ttq-fmd512.json
    # the 9 colour images (sigma = 25) on centre crops, and a 32-plane stack with Poisson-Gaussian noise
    python benchmarks/time_to_quality.py --sets color9 stack --threads 1 --json ttq-other.json
    # draw the curves of one or more JSON files
    python benchmarks/time_to_quality.py --plot docs/images/time_to_quality.png --from ttq-*.json

Methods (``--methods``; each is fitted on each image in turn, so their ratios come from the same
minutes of the same machine):

``default``
    Today's default DIP fit as the widget ran it before the speed work: the ``fast`` preset (a
    light skip net from a random code), automatic stopping. The reference for the time ratio.
``auto``
    The package's default now: ``preset='auto'``. On stacks that includes ``neighbour_planes='auto'``
    (one plane on each side) since 2026-12-01; the stack runs recorded before that day fitted plane
    by plane. For plane by plane now: ``--method plane:neighbour_planes=0``, and the stack target
    lines compare every other method with ``auto``.
``bm3d``
    Blind BM3D (PyPI ``bm3d``), the noise level estimated from the image (``references.py``).
``zs-n2n``
    Zero-Shot Noise2Noise (Mansour & Heckel 2023), written from the paper (``references.py``).
``NAME:key=value,...`` (``--method``)
    Any engine settings, e.g. ``masked-random:preset=light,weights=null`` to measure one lever.

Sets (``--sets``): ``fmd128`` and ``fmd256`` (128 and 256 px centre crops of the 12 FMD raw frames against their 50-frame
averages), ``fmd512`` (the full 512 px frames), ``color9`` (the DIP paper's 9 colour images with
seeded Gaussian noise sigma = 25, ``--color-crop`` px centre crops), ``stack`` (the confocal channel
of ``stacks3d/xyzc_16bit__dna_conf_wf.tif``, its central ``--planes`` planes scaled to [0, 1] between
the 0.1 and 99.9 percentiles, then Poisson noise at 30 photons for 1.0 and Gaussian read noise of
2 % of it, seeded; the clean reference is the scaled stack before the noise), ``series128`` and
``series256`` (each FMD configuration's 4 raw frames as a 4-plane stack, 128 or 256 px centre
crops: a time series of a still sample with the microscope's real noise, scored against the 50-frame
average). No method sees the clean image.

Per image it prints the noisy and final PSNR, the wall time, the iterations, the best PSNR the
curve reached, and the ratios to ``default`` and to ``bm3d``; then the targets of the speed issue
with the measured figures. ``--json`` keeps every curve for plots and replays.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quality import load_cases, parse_overrides  # same folder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BUILTIN_METHODS: dict[str, dict[str, Any]] = {
    "default": {"preset": "fast"},
    "auto": {"preset": "auto"},
}
SETS = ("fmd128", "fmd256", "fmd512", "color9", "stack", "series128", "series256")
#: sets whose images are stacks of planes (fitted plane by plane, scored over the stack)
STACK_SETS = ("stack", "series128", "series256")
#: the stack set's default file in ``stacks3d`` (``--stack-file``)
STACK_FILE = "xyzc_16bit__dna_conf_wf.tif"


@dataclass
class Image:
    """One test image: what methods get (``noisy``) and what they are scored against."""

    set: str
    name: str
    noisy: np.ndarray
    clean: np.ndarray
    peak: float  # PSNR data range


@dataclass
class Result:
    set: str
    image: str
    method: str
    noisy_psnr: float
    psnr: float
    seconds: float
    iterations: int | None = None
    best_psnr: float | None = None
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (iteration, seconds, psnr)
    note: str = ""


def psnr(estimate: np.ndarray, clean: np.ndarray, peak: float) -> float:
    mse = float(np.mean((np.asarray(estimate, np.float64) - np.asarray(clean, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


# -- data --------------------------------------------------------------------------------------
def load_set(name: str, data: Path, images: Sequence[str] | None, color_crop: int, planes: int,
             seed: int, stack_file: str = STACK_FILE) -> list[Image]:
    """The images of one set (empty, with a message, when its data is absent)."""
    try:
        if name in ("fmd128", "fmd256", "fmd512"):
            crop = {"fmd128": 128, "fmd256": 256}.get(name)
            return [Image(name, c.name, c.degraded.astype(np.float32), c.clean, 255.0)
                    for c in load_cases("fmd", data, crop, images)]
        if name == "color9":
            return [Image(name, c.name, c.degraded, c.clean, 255.0)
                    for c in load_cases("denoise", data, color_crop, images, seed)]
        if name == "stack":
            return [stack_image(data, planes, seed, stack_file)]
        if name in ("series128", "series256"):
            return series_images(data, int(name[len("series"):]), images)
    except FileNotFoundError as err:
        print(f"skipping {name}: {err}", flush=True)
        return []
    raise ValueError(f"unknown set {name!r}; choose from {SETS}")


def stack_image(data: Path, planes: int, seed: int, stack_file: str = STACK_FILE) -> Image:
    """A ``(planes, Y, X)`` stack with seeded Poisson-Gaussian noise (see the module docstring).

    ``stack_file``: a file in ``stacks3d``; of a ``(Z, C, Y, X)`` file the first channel is used.
    """
    import tifffile

    path = data / "microscopy" / "stacks3d" / stack_file
    if not path.is_file():
        raise FileNotFoundError(f"no stack at {path}")
    raw = tifffile.imread(path).astype(np.float64)
    if raw.ndim == 4:
        raw = raw[:, 0]  # (Z, Y, X): the first channel (dna_conf_wf: the confocal one)
    if raw.shape[0] < planes:
        raise ValueError(f"{path.name} has {raw.shape[0]} planes, fewer than {planes}")
    first = (raw.shape[0] - planes) // 2  # the central planes (the outermost ones are nearly empty)
    raw = raw[first:first + planes]
    lo, hi = np.percentile(raw, [0.1, 99.9])
    clean = np.clip((raw - lo) / (hi - lo), 0.0, 1.0)
    rng = np.random.default_rng(seed + 4242)
    photons, read = 30.0, 0.02
    noisy = rng.poisson(clean * photons) / photons + rng.normal(0.0, read, clean.shape)
    name = "dna_conf" if stack_file == STACK_FILE else Path(stack_file).stem
    return Image("stack", f"{name}_{planes}planes", noisy.astype(np.float32), clean, 1.0)


def series_images(data: Path, crop: int, images: Sequence[str] | None) -> list[Image]:
    """Each FMD configuration's noisy frames as one ``(frames, Y, X)`` stack (centre crops).

    The frames of a configuration are independent noisy acquisitions of the same field of view: a
    time series of a still sample with the microscope's real noise, scored against the 50-frame
    average. Neighbouring planes are then the same structure with independent noise.
    """
    groups: dict[str, list] = {}
    for c in load_cases("fmd", data, crop, images):
        groups.setdefault(c.name.rsplit("_", 1)[0], []).append(c)
    out = []
    for config, cases in groups.items():
        if len(cases) < 2:
            continue
        noisy = np.stack([c.degraded for c in cases]).astype(np.float32)
        clean = np.stack([c.clean for c in cases])
        out.append(Image(f"series{crop}", f"{config}_{len(cases)}frames", noisy, clean, 255.0))
    return out


def is_stack(img: Image) -> bool:
    """Whether ``img`` is a stack of planes (not a colour image, which is also 3-D)."""
    return img.noisy.ndim == 3 and img.set in STACK_SETS


# -- methods -----------------------------------------------------------------------------------
class _TimeLimit(Exception):
    """Raised from the snapshot callback when a fit passes ``--time-limit``."""


def run_dip(img: Image, method: str, settings: dict[str, Any], device: str, every: int,
            time_limit: float | None = None) -> Result:
    """An automatic DIP fit of ``img`` with ``settings`` (``preset`` and any engine setting).

    With ``time_limit`` (seconds) a fit still running then is cancelled and kept as it was (the
    engine's best estimate so far); its note says so, and its time is a lower bound of the fit's.
    """
    from napari_dip.core.restore import Restoration

    start = time.perf_counter()
    curve: list[tuple[int, float, float]] = []
    stack = is_stack(img)
    done_iterations = [0]

    def follow(snap) -> None:
        if time_limit is not None and time.perf_counter() - start > time_limit:
            raise _TimeLimit
        if snap.ema is None or stack:
            return
        curve.append((snap.iteration, time.perf_counter() - start, psnr(np.clip(np.squeeze(snap.ema), 0, img.peak),
                                                                     img.clean, img.peak)))

    options = dict(settings)
    job = Restoration("denoise", img.noisy, iterations="auto", device=device, preview_every=every, **options)
    try:
        out, limited = job.run(follow), False
    except _TimeLimit:
        out, limited = job.result(cancelled=True), True
    seconds = time.perf_counter() - start
    fits = [f for f in job.fits if f is not None]
    done_iterations[0] = int(sum(f.iterations for f in fits))
    if limited and job.current is not None:
        done_iterations[0] += int(job.current.iteration)
    final = psnr(np.clip(out, 0, img.peak), img.clean, img.peak)
    if stack:
        curve = [(done_iterations[0], seconds, final)]
    note = f"stop {fits[0].best_iteration}/{fits[0].iterations}" if len(fits) == 1 else \
        "" if not fits else f"{len(fits)} planes, {done_iterations[0] / len(fits):.0f} it/plane"
    if limited:
        note = f"NOT STOPPED: time limit {time_limit:.0f} s at it {done_iterations[0]}; time is a lower bound"
    return Result(img.set, img.name, method, psnr(img.noisy, img.clean, img.peak), final, seconds,
                  done_iterations[0], max([c[2] for c in curve], default=final), curve, note)


def run_bm3d(img: Image) -> Result:
    from references import bm3d_blind

    start = time.perf_counter()
    scale = img.peak
    if is_stack(img):
        out = np.stack([bm3d_blind(p / scale)[0] * scale for p in img.noisy])
        note = "per plane"
    else:
        res, sigma = bm3d_blind(img.noisy / scale)
        out, note = res * scale, f"sigma {sigma * scale:.2f}"
    seconds = time.perf_counter() - start
    final = psnr(np.clip(out, 0, img.peak), img.clean, img.peak)
    return Result(img.set, img.name, "bm3d",
                  psnr(img.noisy, img.clean, img.peak), final, seconds, None, final, [(0, seconds, final)], note)


def run_zsn2n(img: Image, every: int) -> Result:
    from references import zs_n2n

    start = time.perf_counter()
    scale = img.peak
    curve: list[tuple[int, float, float]] = []
    planes = img.noisy if is_stack(img) else [img.noisy]

    def follow(it, estimate) -> None:
        if it % max(every * 4, 100) == 0 and len(planes) == 1:
            curve.append((it, time.perf_counter() - start, psnr(estimate() * scale, img.clean, img.peak)))

    outs = [zs_n2n(np.clip(p / scale, 0, None), callback=follow) * scale for p in planes]
    out = np.stack(outs) if len(planes) > 1 else outs[0]
    seconds = time.perf_counter() - start
    final = psnr(np.clip(out, 0, img.peak), img.clean, img.peak)
    return Result(img.set, img.name, "zs-n2n", psnr(img.noisy, img.clean, img.peak), final, seconds,
                  2000 * len(planes), max([c[2] for c in curve], default=final), curve or [(2000, seconds, final)])


# -- report ------------------------------------------------------------------------------------
def ratios(results: Sequence[Result]) -> list[str]:
    """One line per result with its ratios to ``default`` and ``bm3d`` on the same image."""
    lines = []
    by = {(r.set, r.image, r.method): r for r in results}
    for r in results:
        ref, bm = by.get((r.set, r.image, "default")), by.get((r.set, r.image, "bm3d"))
        extra = []
        if ref is not None and r.method != "default":
            extra.append(f"{ref.seconds / r.seconds:6.1f}x faster than default, {r.psnr - ref.psnr:+5.2f} dB")
        if bm is not None and r.method != "bm3d":
            extra.append(f"{r.seconds / bm.seconds:6.1f}x bm3d's time, {r.psnr - bm.psnr:+5.2f} dB")
        if len(r.curve) > 1:  # how soon the curve came within 0.1 dB of the final result (a perfect stop)
            near = next((t for _, t, p in r.curve if p >= r.psnr - 0.1), None)
            if near is not None:
                extra.append(f"within 0.1 dB of final at {near:.0f} s")
        lines.append(f"{r.set:7s} {r.image:22s} {r.method:14s} noisy {r.noisy_psnr:6.2f}  final {r.psnr:6.2f}  "
                     f"best {r.best_psnr if r.best_psnr is not None else float('nan'):6.2f}  {r.seconds:8.1f} s  "
                     f"{'' if r.iterations is None else f'{r.iterations:6d} it'}  {r.note:22s}  " + "; ".join(extra))
    return lines


def summary(results: Sequence[Result]) -> list[str]:
    """Mean PSNR and time per set and method, and the issue's targets with the measured figures."""
    out = []
    sets = sorted({r.set for r in results}, key=SETS.index if all(r.set in SETS for r in results) else str)
    for s in sets:
        rows = [r for r in results if r.set == s]
        methods = list(dict.fromkeys(r.method for r in rows))
        out.append(f"\n{s}: mean over {len({r.image for r in rows})} image(s)")
        for m in methods:
            mr = [r for r in rows if r.method == m]
            out.append(f"  {m:14s} PSNR {np.mean([r.psnr for r in mr]):6.2f} dB   time {np.mean([r.seconds for r in mr]):8.1f} s"
                       f"   (median {np.median([r.seconds for r in mr]):.1f} s)")
        out.extend(targets(s, rows))
    return out


def _paired(rows: Sequence[Result], a: str, b: str) -> list[tuple[Result, Result]]:
    by = {(r.image, r.method): r for r in rows}
    return [(by[(i, a)], by[(i, b)]) for i in dict.fromkeys(r.image for r in rows) if (i, a) in by and (i, b) in by]


def targets(s: str, rows: Sequence[Result]) -> list[str]:
    out = []
    pairs = _paired(rows, "auto", "default")
    if pairs and s in ("fmd512", "stack"):
        dpsnr = np.mean([a.psnr - d.psnr for a, d in pairs])
        speed = sum(d.seconds for _, d in pairs) / sum(a.seconds for a, _ in pairs)
        need = 10 if s == "fmd512" else 5
        tol = -0.2 if s == "fmd512" else -0.05
        ok = speed >= need and dpsnr >= tol
        out.append(f"  target ({'512 px: same PSNR within 0.2 dB in <= 1/10 of the time' if s == 'fmd512' else 'stack: >= 5x faster than plane by plane at equal mean PSNR'}): "
                   f"auto {dpsnr:+.2f} dB vs default, {speed:.1f}x faster -> {'MET' if ok else 'NOT MET'}")
    if s in STACK_SETS:  # any other DIP setting against 'auto' (plane by plane in the runs before neighbour_planes='auto')
        others = dict.fromkeys(r.method for r in rows if r.method not in ("auto", "default", "bm3d", "zs-n2n"))
        for m in others:
            pairs = _paired(rows, m, "auto")
            if not pairs:
                continue
            dpsnr = np.mean([a.psnr - b.psnr for a, b in pairs])
            speed = sum(b.seconds for _, b in pairs) / sum(a.seconds for a, _ in pairs)
            fewer = sum(b.iterations for _, b in pairs) / max(sum(a.iterations for a, _ in pairs), 1)
            ok = speed >= 5 and dpsnr >= -0.05
            out.append(f"  target (stack: >= 5x faster than plane by plane at equal mean PSNR): {m} {dpsnr:+.2f} dB "
                       f"vs auto, {speed:.1f}x faster ({fewer:.1f}x fewer iterations) -> {'MET' if ok else 'NOT MET'}")
    bm = _paired(rows, "auto", "bm3d")
    if bm and s == "fmd256":
        dpsnr = np.mean([a.psnr - b.psnr for a, b in bm])
        tr = sum(a.seconds for a, _ in bm) / sum(b.seconds for _, b in bm)
        ok = dpsnr >= 1.0 and tr <= 15
        out.append(f"  target (256 px: >= 1 dB above blind BM3D in <= 15x its time): auto {dpsnr:+.2f} dB, "
                   f"{tr:.1f}x BM3D's time -> {'MET' if ok else 'NOT MET'}")
    return out


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    """PSNR against seconds, one panel per image (methods as lines, single-shot methods as dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys = list(dict.fromkeys((r["set"], r["image"]) for r in results))
    cols = min(4, len(keys))
    rows_n = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
    colours = {"default": "tab:gray", "auto": "tab:red", "bm3d": "tab:blue", "zs-n2n": "tab:green"}
    spare = iter(["tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"] * 10)
    for method in dict.fromkeys(r["method"] for r in results):  # --method variants: a colour each
        colours.setdefault(method, next(spare))
    for ax, key in zip(axes.flat, keys):
        for r in (r for r in results if (r["set"], r["image"]) == key):
            c = colours.get(r["method"])
            curve = np.asarray(r["curve"], float)
            if len(curve) > 1:
                ax.plot(curve[:, 1], curve[:, 2], label=r["method"], color=c, lw=1.4)
            ax.plot([r["seconds"]], [r["psnr"]], "o", color=c, ms=5, label=None if len(curve) > 1 else r["method"])
        ax.set_xscale("log")
        ax.set_title(f"{key[0]}: {key[1]}", fontsize=9)
        ax.set_xlabel("seconds (log)", fontsize=8)
        ax.set_ylabel("PSNR (dB)", fontsize=8)
        ax.tick_params(labelsize=7)
        ys = [p for r in results if (r["set"], r["image"]) == key for p in [r["psnr"], r["noisy_psnr"]]]
        ax.set_ylim(min(ys) - 0.5, max(ys) + 1.5)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    methods = list(dict.fromkeys(r["method"] for r in results))  # one legend for the figure, every method
    handles = [matplotlib.lines.Line2D([], [], color=colours[m], marker="o", lw=1.4, label=m) for m in methods]
    fig.legend(handles=handles, loc="lower right", fontsize=9, title="PSNR vs time; dot = where the fit ended")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["fmd256"], choices=SETS)
    p.add_argument("--methods", nargs="+", default=["bm3d", "zs-n2n", "default", "auto"])
    p.add_argument("--method", action="append", default=[], metavar="NAME:key=value,...",
                   help="an extra DIP method with these settings (repeatable)")
    p.add_argument("--images", nargs="+", default=None, help="name substrings to keep")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--every", type=int, default=25, help="PSNR every this many iterations (DIP curves)")
    p.add_argument("--color-crop", type=int, default=128)
    p.add_argument("--planes", type=int, default=32)
    p.add_argument("--stack-file", default=STACK_FILE,
                   help=f"the stack set's file in stacks3d (default {STACK_FILE}); it needs at least --planes "
                        "planes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None,
                   help="cancel a DIP fit still running after this many seconds (noted; a lower bound)")
    p.add_argument("--json", type=Path, default=None, help="append every result (with curves) to this JSON file")
    p.add_argument("--plot", type=Path, default=None, help="draw the curves of --from files into this PNG")
    p.add_argument("--from", dest="sources", nargs="+", type=Path, default=[],
                   help="print the tables (and with --plot draw the curves) of earlier --json files; runs nothing")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    if args.sources:  # replay: tables (and the plot) of earlier runs
        loaded = [r for f in args.sources for r in json.loads(f.read_text())]
        results = [Result(**{**r, "curve": [tuple(c) for c in r["curve"]]}) for r in loaded]
        print("\n".join(["per image:"] + ratios(results) + summary(results)))
        if args.plot is not None:
            plot(loaded, args.plot)
        return results
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {}
    for spec in args.method:
        name, _, body = spec.partition(":")
        extra[name] = parse_overrides([kv for kv in body.split(",") if kv])
    methods = list(args.methods) + list(extra)
    print(f"python benchmarks/time_to_quality.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s), device {args.device}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    results: list[Result] = []
    previous = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    for set_name in args.sets:
        for img in load_set(set_name, args.data, args.images, args.color_crop, args.planes, args.seed,
                            args.stack_file):
            for m in methods:
                if m == "bm3d":
                    r = run_bm3d(img)
                elif m == "zs-n2n":
                    r = run_zsn2n(img, args.every)
                else:
                    settings = BUILTIN_METHODS.get(m) or extra.get(m)
                    if settings is None:
                        raise SystemExit(f"unknown method {m!r}: use {sorted(BUILTIN_METHODS)}, bm3d, zs-n2n or --method")
                    r = run_dip(img, m, settings, args.device, args.every, args.time_limit)
                results.append(r)
                print(ratios([x for x in results if (x.set, x.image) == (img.set, img.name)])[-1], flush=True)
                if args.json:
                    args.json.write_text(json.dumps(previous + [asdict(x) for x in results]))
    print("\n".join(["", "per image:"] + ratios(results) + summary(results)))
    return results


if __name__ == "__main__":
    main()
