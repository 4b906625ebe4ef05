"""The Poisson-Gaussian estimator against the noise the FMD frames really have.

    python benchmarks/noise_estimate.py                 # the 12 FMD frames, full 512 px and centre crops
    python benchmarks/noise_estimate.py --crops 512 128
    python benchmarks/noise_estimate.py --others         # what 'auto' picks on the colour set and the samples

For each raw frame the *reference* noise is measured with the 50-frame average: the residual
``raw - average`` binned by the average's value (bins of 500 pixels, 200 on 128 px crops; bins
with more than 1 % of their raw values at a clipping level left out), its variance fitted by
weighted least squares ``var = gain * mean + zero_variance`` (the
average's own noise, var/50, and the 8-bit rounding, 1/12, are taken out). The *estimate* is
:func:`napari_dip.core.noise.estimate_noise` on the single frame (or its centre crop), which never
sees the average. Printed per frame and crop: both gains, both variances at the 10th, 50th and 90th
percentiles of the unclipped pixels' average, the ratio estimate/reference at the median, what
``noise_model='auto'`` would choose (with the estimate's growth and the gain's t value), and how
well the generalised Anscombe transform with the *estimated* parameters stabilises the frame: the
variance of ``f(raw) - f(average)`` in the lowest, middle and highest thirds of the unclipped
bins (1.0 everywhere is perfect; the raw variances above differ by 10x or more).

``--others`` prints what ``noise_model='auto'`` chooses where the answer is known: the DIP paper's 9
colour images with seeded Gaussian noise sigma = 25 (full size and 256 px centre crops: it must
choose Gaussian, and then fits exactly as the Gaussian model does, see
tests/test_noise.py::test_the_gaussian_model_leaves_the_fit_as_it_was) and the package's "noisy
cells" sample (Poisson + read noise: Poisson-Gaussian, with its true gain and read variance).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "microscopy" / "fmd"
FRAMES = [f"{c}_{i}" for c in ("Confocal_BPAE_B", "TwoPhoton_MICE", "WideField_BPAE_G") for i in range(1, 5)]


def unclipped_bins(raw: np.ndarray, avg: np.ndarray, min_count: int) -> list[np.ndarray]:
    """Pixel indices binned by the average's value, without bins where more than 1 % of the raw
    values sit at a clipping level (FMD confocal frames have a floor at 3 that holds a quarter of the
    pixels; 255): clipping shrinks the variance."""
    from napari_dip.core.noise import clip_levels

    low, high = clip_levels(raw)
    low = -np.inf if low is None else low
    high = np.inf if high is None else high
    z = raw.ravel()
    order = np.argsort(avg.ravel(), kind="stable")
    return [chunk for chunk in np.array_split(order, max(1, len(order) // min_count))
            if np.mean((z[chunk] <= low) | (z[chunk] >= high)) <= 0.01]


def reference(raw: np.ndarray, avg: np.ndarray, bins: list[np.ndarray]) -> tuple[float, float]:
    """``(gain, zero_variance)`` of ``raw`` from its residual to the 50-frame average ``avg``."""
    r, m = (raw - avg).ravel(), avg.ravel()
    mu = np.array([m[b].mean() for b in bins])
    v = np.array([r[b].var(ddof=1) for b in bins])
    n = np.array([len(b) for b in bins], np.float64)
    # residual variance = var * (1 - 1/50) (the average holds the frame) + the rounding of the average
    v = (v - 1.0 / 12.0) / (1.0 - 1.0 / 50.0)
    model = np.maximum(v, 1e-3)
    x = np.stack([mu, np.ones_like(mu)], 1)
    for _ in range(6):
        w = n / model ** 2
        coef = np.linalg.solve(x.T @ (x * w[:, None]), x.T @ (w * v))
        model = np.maximum(x @ coef, 1e-3)
    return float(coef[0]), float(coef[1])


def stabilised_spread(model, raw: np.ndarray, avg: np.ndarray, bins: list[np.ndarray]) -> list[float]:
    """Variance of ``f(raw) - f(avg)`` in the lowest, middle and highest thirds of the unclipped bins."""
    r = (model.stabilise(raw) - model.stabilise(avg)).ravel()
    parts = np.array_split(np.arange(len(bins)), 3) if len(bins) >= 3 else []
    return [float(r[np.concatenate([bins[i] for i in part])].var(ddof=1)) for part in parts]


def centre(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape
    y, x = (h - size) // 2, (w - size) // 2
    return a[y:y + size, x:x + size]


def others(shared: Path) -> None:
    """What ``noise_model='auto'`` chooses on images whose noise is known (see the module docstring)."""
    import sys
    import warnings

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from napari_dip.core.noise import plan_noise
    from napari_dip.core.settings import Settings
    from napari_dip.samples import noisy_cells
    from time_to_quality import load_set

    print(f"{'image':28s} {'shape':>14s} {'known noise':22s} {'auto':16s} {'growth':>6s} {'gain':>8s} "
          f"{'read var':>8s} note")

    def show(name: str, image: np.ndarray, known: str, rgb: bool) -> None:
        plane = image.astype(np.float64) if rgb else image.astype(np.float64)[..., None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = plan_noise(plane, Settings(noise_model="auto"), "denoise", rgb=rgb)
        e = plan.estimate
        gain = "-" if e is None else f"{e.gain:8.2f}"
        var = "-" if e is None else f"{e.zero_variance:8.1f}"
        growth = "-" if e is None else f"{min(e.growth, 999):6.2f}"
        print(f"{name:28s} {str(image.shape):>14s} {known:22s} {plan.model:16s} {growth:>6s} {gain:>8s} {var:>8s} "
              f"{plan.note or ''}", flush=True)

    for crop in (None, 256):
        for img in load_set("color9", shared, None, crop or 10 ** 6, 32, 0):
            show(f"color9 {img.name}" + (f" {crop} px" if crop else ""), img.noisy, "Gaussian sigma 25", True)
    for size, photons in ((256, 30.0), (512, 30.0), (256, 5.0)):
        _clean, noisy = noisy_cells(size, photons=photons, read_noise=0.03, seed=0)
        gain, read = 4095 * 0.8 / photons, (0.03 * 4095 * 0.8) ** 2
        show(f"noisy cells {size} px, {photons:.0f} ph", noisy, f"P-G {gain:.0f}, {read:.0f}", False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--crops", nargs="+", type=int, default=[512, 256, 128])
    p.add_argument("--others", action="store_true", help="what 'auto' chooses on the colour set and the samples")
    args = p.parse_args(argv)
    if args.others:
        others(args.data.parents[1])
        return
    if not args.data.is_dir():
        print(f"FMD data not found at {args.data}; nothing to measure (pass --data)")
        return
    from PIL import Image

    from napari_dip.core.noise import NoiseEstimationError, choose_noise_model, estimate_noise

    print(f"{'frame':22s} {'crop':>4s} {'ref gain':>8s} {'est gain':>8s} {'ref b':>7s} {'est b':>7s} "
          f"{'ref var p10/p50/p90':>20s} {'est var p10/p50/p90':>20s} {'est/ref@p50':>11s} "
          f"{'growth':>6s} {'t':>5s} {'corr':>5s} {'auto':16s} GAT var lo/mid/hi")
    for name in FRAMES:
        config = name.rsplit("_", 1)[0]
        raw_full = np.asarray(Image.open(args.data / "raw" / f"{name}.png"), np.float64)
        avg_full = np.asarray(Image.open(args.data / "gt" / f"{config}.png"), np.float64)
        for size in args.crops:
            raw, avg = centre(raw_full, size), centre(avg_full, size)
            bins = unclipped_bins(raw, avg, 500 if size >= 256 else 200)
            a, b = reference(raw, avg, bins)
            q = np.percentile(avg.ravel()[np.concatenate(bins)], [10, 50, 90])  # of the unclipped pixels
            ref_var = a * q + b
            try:
                est = estimate_noise(raw)
            except NoiseEstimationError as err:
                print(f"{name:22s} {size:4d} {a:8.3f} {'-':>8s} {b:7.1f} {'-':>7s} "
                      f"{'/'.join(f'{v:.0f}' for v in ref_var):>20s}  cannot estimate: {err}")
                continue
            est_var = est.variance(q)
            try:
                spread = "/".join(f"{v:.2f}" for v in stabilised_spread(est.model(), raw, avg, bins))
            except NoiseEstimationError:
                spread = "-"
            print(f"{name:22s} {size:4d} {a:8.3f} {est.gain:8.3f} {b:7.1f} {est.zero_variance:7.1f} "
                  f"{'/'.join(f'{v:.0f}' for v in ref_var):>20s} {'/'.join(f'{v:.0f}' for v in est_var):>20s} "
                  f"{est_var[1] / ref_var[1]:11.2f} {min(est.growth, 999):6.1f} {est.gain_t:5.1f} "
                  f"{est.correlation_factor:5.2f} {choose_noise_model(est):16s} {spread}", flush=True)


if __name__ == "__main__":
    main()
