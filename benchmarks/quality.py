"""Restoration quality on the DIP paper's data and on FMD microscopy, with automatic stopping.

Runs four tasks over the data folder (``../shared/data`` by default) and prints, per image and
stopping rule, the PSNR/SSIM of the automatic result, the best checkpoint seen along the same run
(the "oracle", measured against the ground truth every ``--preview-every`` iterations), the
iteration counts and the wall time, next to the paper's published figures.

    # CPU, about 20 minutes on 2 cores: 64 px centre crops, the 'fast' preset, a few images per task
    python benchmarks/quality.py --quick --stop-rule holdout wmv --threads 2 --out quick.md
    # GPU, full images, the 'paper' preset, every image, both stopping rules
    python benchmarks/quality.py --device cuda --stop-rule holdout wmv --out full.md

Tasks (``--tasks``)
    denoise  paper/denoising_color9: Gaussian noise sigma=25 (on 0-255) added here, seeded, clipped.
             Paper: 29.22 dB (1800 steps), 30.43 (averaged outputs), 31.00 (two runs); CBM3D 31.42.
    inpaint  paper/inpainting_table1: 50 % of pixels dropped; known = (masked == GT).
             Paper Table 1: Barbara 32.22, Boat 33.06, House 39.16, Lena 36.16.
    sr       paper/sr_set5_x4: the low-resolution input is the engine's Lanczos-2 ``Downsampler(4)``
             of the HR image. PSNR on the Y channel (BT.601) with a border of ``factor`` pixels
             shaved off. Paper (x4): DIP 29.90, bicubic 28.43.
    fmd      microscopy/fmd: single noisy frames raw/<config>_<k>.png against gt/<config>.png.

Stopping rules (``--stop-rule``): ``auto`` (hold-out, or the discrepancy principle where the noise
is spatially correlated; the table says which it chose), ``holdout``, ``wmv`` and ``discrepancy``
(automatic, capped by the preset's ``iterations`` or ``--max-iterations``) and ``fixed`` (no
stopping: exactly the cap). A rule that stops where it keeps its estimate (``discrepancy``) sees no
later checkpoint, so its own row's oracle is truncated at the stop.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TASK_NAMES = ("denoise", "inpaint", "sr", "fmd")
ENGINE_TASK = {"denoise": "denoise", "inpaint": "inpaint", "sr": "super_resolve", "fmd": "denoise"}
RULES = ("auto", "holdout", "wmv", "discrepancy", "fixed")
SIGMA = 25.0
SR_FACTOR = 4

#: the paper's per-image figures (dB) where it publishes them (Table 1 for inpainting)
PAPER_PER_IMAGE: dict[str, dict[str, float]] = {
    "inpaint": {"barbara": 32.22, "boat": 33.06, "house": 39.16, "lena": 36.16, "peppers": 33.05,
                "c.man": 29.8, "couple": 32.52, "finger": 32.84, "hill": 32.77, "man": 32.20,
                "montage": 34.54},
}
#: the paper's mean over its whole set, when it publishes only that (None: no published figure)
PAPER_MEAN: dict[str, float | None] = {"denoise": 29.22, "inpaint": None, "sr": 29.90, "fmd": None}
#: what the paper says besides DIP's main figure
PAPER_NOTES: dict[str, str] = {
    "denoise": "paper (9 colour images, sigma=25): DIP 29.22 dB after 1800 steps, 30.43 with averaged "
               "outputs, 31.00 averaged over two runs; CBM3D 31.42; noisy input about 20.3",
    "inpaint": "paper Table 1 (50 % of pixels missing), DIP per image; Papyan et al. CSC: Barbara 28.14, "
               "Boat 31.44, House 34.58, Lena 35.04",
    "sr": "paper (Set5 x4, 2000 steps): DIP 29.90 dB, bicubic 28.43, SRResNet 32.10",
    "fmd": "no published DIP figure; the input column is the single noisy frame",
}
#: the project's targets (full-size images, GPU): mean PSNR of the automatic result
TARGETS: dict[str, str] = {
    "denoise": ">= 31.0 dB mean with automatic stopping in one run",
    "inpaint": ">= the paper's Table 1 mean over the same images",
    "sr": ">= 29.9 dB mean (Set5 x4)",
    "fmd": "well above the noisy input",
}
INPUT_LABEL = {"denoise": "noisy", "inpaint": "biharmonic", "sr": "bicubic", "fmd": "noisy"}
#: images of --quick (name substrings); full mode uses every image
QUICK_IMAGES: dict[str, tuple[str, ...]] = {
    "denoise": ("F16", "house", "peppers"),
    "inpaint": ("barbara", "house"),
    "sr": ("butterfly", "head"),
    "fmd": ("Confocal_BPAE_B_1", "TwoPhoton_MICE_1", "WideField_BPAE_G_1"),
}


# -- metrics and image helpers -----------------------------------------------------------------
def center_crop(image: np.ndarray, size: int | None, multiple: int = 1) -> np.ndarray:
    """Centre crop of the two leading (spatial) axes to at most ``size`` pixels a side.

    Parameters
    ----------
    image : array
        ``(H, W)`` or ``(H, W, C)``.
    size : int or None
        Largest side of the crop; None keeps the whole image.
    multiple : int
        Each side of the crop is rounded down to a multiple of this (e.g. the SR factor).

    Returns
    -------
    array
        A view of ``image``.
    """
    h, w = image.shape[:2]
    ch = h if size is None else min(h, int(size))
    cw = w if size is None else min(w, int(size))
    ch, cw = ch - ch % multiple, cw - cw % multiple
    if ch < 1 or cw < 1:
        raise ValueError(f"a crop of {size} (multiple of {multiple}) of a {h}x{w} image is empty")
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """Drop ``border`` pixels on every side of the two leading axes (0 keeps the image)."""
    if border <= 0:
        return image
    return image[border:-border, border:-border]


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Luma of an ``(H, W, 3)`` RGB image on 0-255, as MATLAB's ``rgb2ycbcr`` (ITU-R BT.601).

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``: white maps to 235, black to 16.
    Grayscale ``(H, W)`` images are returned unchanged (as float64).
    """
    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        return img
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def psnr(estimate: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB with a fixed ``data_range`` (inf for identical images)."""
    mse = float(np.mean((np.asarray(estimate, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def ssim(estimate: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM (scikit-image, 7x7 window, Gaussian-free) over the image; colour channels averaged."""
    from skimage.metrics import structural_similarity

    est, ref = np.asarray(estimate, np.float64), np.asarray(reference, np.float64)
    side = min(ref.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return float("nan")
    return float(structural_similarity(est, ref, data_range=data_range, win_size=win,
                                       channel_axis=-1 if ref.ndim == 3 else None))


def evaluation_view(task: str, image: np.ndarray) -> np.ndarray:
    """What the metrics compare: the clipped image, or for ``sr`` its Y channel with a shaved border."""
    img = np.clip(np.asarray(image, np.float64), 0.0, 255.0)
    if task == "sr":
        return shave(rgb_to_y(img), SR_FACTOR)
    return img


def measure(task: str, estimate: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of ``estimate`` against ``clean`` (both 0-255) as the task is evaluated."""
    est, ref = evaluation_view(task, estimate), evaluation_view(task, clean)
    return psnr(est, ref), ssim(est, ref)


def add_gaussian_noise(image: np.ndarray, sigma: float, seed: int, name: str = "") -> np.ndarray:
    """``image + N(0, sigma)``, clipped to 0-255, float32; the noise depends on ``seed`` and ``name``."""
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    return np.clip(np.asarray(image, np.float64) + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.float32)


# -- cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    """One image of one task: what the engine gets and what the result is compared with.

    Attributes
    ----------
    task, name : str
    clean : array
        Ground truth, float64 on 0-255.
    degraded : array
        The engine's input (0-255 units).
    baseline : array
        The input-side reference image at the output size (noisy input, bicubic, biharmonic).
    fill : array, optional
        Inpainting: True where a pixel is to be filled in.
    paper : float, optional
        The paper's figure for this image, where published.
    """

    task: str
    name: str
    clean: np.ndarray
    degraded: np.ndarray
    baseline: np.ndarray
    fill: np.ndarray | None = None
    paper: float | None = None


def _read(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    img = np.asarray(iio.imread(path))
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    return img


def _selected(name: str, images: Sequence[str] | None) -> bool:
    return images is None or any(s.lower() in name.lower() for s in images)


def _paper_key(name: str) -> str:
    """``'Lena512'`` -> ``'lena'``: the name the paper's table uses."""
    return name.lower().rstrip("0123456789")


def task_folder(task: str, data: Path) -> Path:
    """The dataset folder of ``task`` under the data root."""
    return data / {"denoise": "paper/denoising_color9", "inpaint": "paper/inpainting_table1",
                   "sr": "paper/sr_set5_x4", "fmd": "microscopy/fmd"}[task]


def load_cases(task: str, data: Path, crop: int | None = None, images: Sequence[str] | None = None,
               seed: int = 0) -> list[Case]:
    """The images of ``task`` found under ``data`` (centre-cropped to ``crop`` if given).

    Raises
    ------
    FileNotFoundError
        If the task's folder is absent.
    """
    folder = task_folder(task, data)
    if not folder.is_dir():
        raise FileNotFoundError(f"no {task} data at {folder}")
    cases: list[Case] = []
    if task == "fmd":
        for gt_path in sorted((folder / "gt").glob("*.png")):
            gt = center_crop(_read(gt_path), crop).astype(np.float64)
            for raw in sorted((folder / "raw").glob(f"{gt_path.stem}_*.png")):
                if not _selected(raw.stem, images):
                    continue
                noisy = center_crop(_read(raw), crop)
                cases.append(Case(task, raw.stem, gt, noisy, noisy.astype(np.float64)))
        return cases
    for gt_path in sorted(folder.glob("*_GT.png")):
        name = gt_path.stem[: -len("_GT")]
        if not _selected(name, images):
            continue
        paper = PAPER_PER_IMAGE.get(task, {}).get(_paper_key(name))
        if task == "denoise":
            clean = center_crop(_read(gt_path), crop).astype(np.float64)
            noisy = add_gaussian_noise(clean, SIGMA, seed, name)
            cases.append(Case(task, name, clean, noisy, noisy.astype(np.float64), paper=paper))
        elif task == "inpaint":
            gt, masked = _read(gt_path), _read(folder / f"{name}_masked.png")
            gt, masked = center_crop(gt, crop), center_crop(masked, crop)
            fill = masked != gt
            if fill.ndim == 3:
                fill = fill.any(axis=-1)
            cases.append(Case(task, name, gt.astype(np.float64), masked, _biharmonic(masked, fill), fill, paper))
        else:  # sr
            hr = center_crop(_read(gt_path), crop, multiple=SR_FACTOR).astype(np.float64)
            lr, bicubic = make_lr(hr, SR_FACTOR)
            cases.append(Case(task, name, hr, lr, bicubic, paper=paper))
    return cases


def make_lr(hr: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution input (the engine's Lanczos-2 ``Downsampler``) and its bicubic upsampling.

    Parameters
    ----------
    hr : array
        ``(H, W, C)`` or ``(H, W)`` on 0-255, sides multiples of ``factor``.

    Returns
    -------
    lr, bicubic : arrays
        float32 ``(H/f, W/f[, C])`` and float64 ``(H, W[, C])``, both on 0-255.
    """
    import torch

    from napari_dip.core.operators import Downsampler, bicubic_upsample

    arr = hr if hr.ndim == 3 else hr[..., None]
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1) / 255.0)).float()[None]
    with torch.no_grad():
        lr = Downsampler(factor)(x).clamp(0, 1)
        up = bicubic_upsample(lr, factor)
    lr_np = (lr[0].permute(1, 2, 0).numpy() * 255.0).astype(np.float32)
    up_np = up[0].permute(1, 2, 0).double().numpy() * 255.0
    if hr.ndim == 2:
        lr_np, up_np = lr_np[..., 0], up_np[..., 0]
    return lr_np, up_np


def _biharmonic(masked: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """scikit-image biharmonic inpainting of the holes (the inpainting baseline), 0-255."""
    from skimage.restoration import inpaint_biharmonic

    img = masked.astype(np.float64) / 255.0
    out = inpaint_biharmonic(img, fill, channel_axis=-1 if img.ndim == 3 else None)
    return np.clip(out, 0, 1) * 255.0


# -- running -----------------------------------------------------------------------------------
@dataclass
class Row:
    """One (image, stopping rule) result.

    ``curve`` holds (iteration, PSNR of the average) at each checkpoint, ``signal`` the stopping
    rule's (iteration, signal): enough to replay other patiences offline. ``chosen`` is the rule
    ``auto`` picked and ``noise_correlation`` what it measured (empty/None for other rules).
    """

    task: str
    image: str
    rule: str
    input_psnr: float
    input_ssim: float
    psnr: float
    ssim: float
    iterations: int
    stop_iteration: int
    stopped_early: bool
    oracle_psnr: float
    oracle_iteration: int
    seconds: float
    rollbacks: int = 0
    paper: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)
    signal: list[tuple[int, float]] = field(default_factory=list, repr=False)
    chosen: str = ""
    noise_correlation: float | None = None
    delay: int = 0

    @property
    def gap(self) -> float:
        """Oracle best minus the automatic result (dB, >= 0)."""
        return self.oracle_psnr - self.psnr


def run_case(case: Case, rule: str, preset: str = "fast", device: str = "auto", seed: int = 0,
             max_iterations: int | None = None, preview_every: int = 10, **overrides: Any) -> Row:
    """Restore ``case`` once with stopping ``rule``, following the PSNR of the average on the way.

    Parameters
    ----------
    case : Case
    rule : {'auto', 'holdout', 'wmv', 'discrepancy', 'fixed'}
        ``fixed`` runs exactly the cap with no stopping rule.
    preset : str
        Engine preset.
    max_iterations : int, optional
        Cap of the automatic fit (fixed count for ``fixed``); default: the preset's.
    preview_every : int
        The averaged output is compared with the ground truth every this many iterations; the
        best of those checkpoints (and of the final result) is the oracle.
    **overrides
        Further :class:`~napari_dip.core.settings.Settings` fields.
    """
    from napari_dip.core.restore import Restoration
    from napari_dip.core.settings import get_settings

    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
    task = ENGINE_TASK[case.task]
    changes = dict(overrides)
    if max_iterations is not None:
        changes["iterations"] = int(max_iterations)
    changes["stop_rule"] = "none" if rule == "fixed" else rule
    settings = get_settings(preset, task, **changes)
    kwargs: dict[str, Any] = {}
    if task == "inpaint":
        kwargs["mask"] = case.fill
    elif task == "super_resolve":
        kwargs["factor"] = SR_FACTOR
    restoration = Restoration(task, case.degraded, iterations=settings.iterations if rule == "fixed" else "auto",
                              preset=settings, device=device, seed=seed, preview_every=preview_every,
                              tile=None, **kwargs)  # whole images: a plane too large for memory is an error
    curve: list[tuple[int, float]] = []
    ref = evaluation_view(case.task, case.clean)

    def follow(snap) -> None:
        if snap.ema is not None:
            ema = np.reshape(snap.ema, case.clean.shape)
            curve.append((snap.iteration, psnr(evaluation_view(case.task, ema), ref)))

    start = time.perf_counter()
    out = np.reshape(restoration.run(follow), case.clean.shape)
    seconds = time.perf_counter() - start
    fit = restoration.fits[0]
    value, structure = measure(case.task, out, case.clean)
    in_psnr, in_ssim = measure(case.task, case.baseline, case.clean)
    best_it, best = max(curve, key=lambda c: c[1]) if curve else (fit.best_iteration, value)
    if value >= best:
        best_it, best = fit.best_iteration, value
    return Row(case.task, case.name, rule, in_psnr, in_ssim, value, structure, fit.iterations, fit.best_iteration,
               fit.stopped_early, best, best_it, seconds, fit.rollbacks, case.paper, curve,
               list(zip(fit.history.get("signal_iteration", []), fit.history.get("signal", []), strict=True)),
               ",".join(fit.history.get("stop_rule", [])), (fit.history.get("noise_correlation") or [None])[0],
               max(fit.history.get("estimate_delay") or [0]))


def replay_patience(signal: Sequence[Sequence[float]], curve: Sequence[Sequence[float]], patience: int,
                    min_iterations: int = 100, delay: int = 0) -> tuple[int, float]:
    """Where a fit with a shorter ``patience`` would have stopped, from a recorded run.

    Parameters
    ----------
    signal : sequence of (iteration, value)
        The stopping rule's signal curve of a recorded fit (``Row.signal``).
    curve : sequence of (iteration, psnr)
        The PSNR checkpoints of the same fit (``Row.curve``).
    patience, min_iterations : int
        The rule's parameters to replay. Only patiences up to the recorded one are meaningful.
    delay : int
        Iterations from the signal minimum to the kept average (``Row.delay``; ES-WMV's lag).

    Returns
    -------
    (iteration, psnr)
        The iteration of the kept average (the signal minimum at the replayed stop, or at the end
        of the record, plus ``delay``, at most the last checkpoint) and the PSNR of the checkpoint
        nearest to it.
    """
    best, best_it = math.inf, 0
    for it, value in signal:
        if value < best:
            best, best_it = value, int(it)
        if it >= min_iterations and it - best_it >= patience:
            break
    if not curve:
        raise ValueError("no PSNR checkpoints to replay")
    best_it = min(best_it + int(delay), max(int(c[0]) for c in curve))
    near = min(curve, key=lambda c: abs(c[0] - best_it))
    return best_it, float(near[1])


def replay_table(rows: Sequence[dict[str, Any]], patiences: Sequence[int], min_iterations: int = 100,
                 delay: int | None = None) -> str:
    """Markdown table: mean gap to the oracle per task, rule and replayed patience (JSON rows).

    ``delay`` replaces each row's recorded ES-WMV delay (``Row.delay``) where given.
    """
    lines = ["| task | rule | " + " | ".join(f"gap @ patience {p}" for p in patiences) + " |",
             "|---|---|" + "---|" * len(patiences)]
    keys = dict.fromkeys((r["task"], r["rule"]) for r in rows if r["signal"] and r["curve"])
    for task, rule in keys:
        sel = [r for r in rows if r["task"] == task and r["rule"] == rule and r["signal"] and r["curve"]]
        cells = [_f(_mean([r["oracle_psnr"]
                           - replay_patience(r["signal"], r["curve"], p, min_iterations,
                                             r.get("delay", 0) if delay is None else delay)[1]
                           for r in sel])) for p in patiences]
        lines.append(f"| {task} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- tables ------------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def paper_mean(task: str, rows: Sequence[Row]) -> float | None:
    """The paper's mean for the images in ``rows`` (per-image figures) or over its whole set."""
    per = [r.paper for r in rows if r.paper is not None]
    if per and len(per) == len(rows):
        return _mean(per)
    return PAPER_MEAN.get(task)


def _rule(row: Row) -> str:
    return f"{row.rule} ({row.chosen})" if row.chosen else row.rule


def task_table(task: str, rows: Sequence[Row]) -> str:
    """Markdown table of one task: a row per (image, rule), then a mean row per rule."""
    label = INPUT_LABEL[task]
    lines = [f"| image | rule | {label} PSNR | {label} SSIM | auto PSNR | auto SSIM | iterations run | "
             "stop at | oracle best PSNR @ iter | gap (dB) | paper | roll-backs | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.image} | {_rule(r)} | {_f(r.input_psnr)} | {_f(r.input_ssim, 3)} | {_f(r.psnr)} | "
                     f"{_f(r.ssim, 3)} | {r.iterations} | {r.stop_iteration} | {_f(r.oracle_psnr)} @ "
                     f"{r.oracle_iteration} | {_f(r.gap)} | {_f(r.paper)} | {r.rollbacks} | {r.seconds:.1f} |")
    for rule in dict.fromkeys(r.rule for r in rows):
        sel = [r for r in rows if r.rule == rule]
        lines.append(f"| **mean** ({len(sel)}) | {rule} | {_f(_mean([r.input_psnr for r in sel]))} | "
                     f"{_f(_mean([r.input_ssim for r in sel]), 3)} | **{_f(_mean([r.psnr for r in sel]))}** | "
                     f"{_f(_mean([r.ssim for r in sel]), 3)} | {_mean([r.iterations for r in sel]):.0f} | "
                     f"{_mean([r.stop_iteration for r in sel]):.0f} | {_f(_mean([r.oracle_psnr for r in sel]))} | "
                     f"{_f(_mean([r.gap for r in sel]))} | {_f(paper_mean(task, sel))} | "
                     f"{sum(r.rollbacks for r in sel)} | {sum(r.seconds for r in sel):.1f} |")
    return "\n".join(lines)


def summary_table(rows: Sequence[Row]) -> str:
    """Markdown table: per task and rule, the means, the gap and the worst margin over the input."""
    lines = ["| task | rule | images | input PSNR | auto PSNR | oracle PSNR | mean gap | max gap | "
             "worst auto - input | paper | target (full size) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r.task for r in rows):
        for rule in dict.fromkeys(r.rule for r in rows if r.task == task):
            sel = [r for r in rows if r.task == task and r.rule == rule]
            lines.append(f"| {task} | {rule} | {len(sel)} | {_f(_mean([r.input_psnr for r in sel]))} | "
                         f"{_f(_mean([r.psnr for r in sel]))} | {_f(_mean([r.oracle_psnr for r in sel]))} | "
                         f"{_f(_mean([r.gap for r in sel]))} | {_f(max(r.gap for r in sel))} | "
                         f"{_f(min(r.psnr - r.input_psnr for r in sel))} | {_f(paper_mean(task, sel))} | "
                         f"{TARGETS[task]} |")
    return "\n".join(lines)


def report(rows: Sequence[Row], header: dict[str, Any]) -> str:
    """The whole Markdown report: run description, summary, then one table per task."""
    out = ["# napari-dip quality benchmark", ""]
    out += [f"- {k}: {v}" for k, v in header.items()]
    out += ["", "PSNR/SSIM on 0-255 (sr: Y channel, border of 4 px shaved). *auto*: the automatic result; "
            "*oracle*: the best checkpoint of the same run against the ground truth; *gap* = oracle - auto. "
            "*stop at*: the iteration the returned average comes from; *roll-backs*: loss blow-ups recovered from.", "", "## Summary", "", summary_table(rows)]
    for task in dict.fromkeys(r.task for r in rows):
        out += ["", f"## {task}", "", PAPER_NOTES[task] + ".", "", task_table(task, [r for r in rows if r.task == task])]
    return "\n".join(out) + "\n"


def device_description(device: str) -> str:
    """E.g. ``'cuda:0 (NVIDIA H200)'`` or ``'cpu (x86_64, 2 threads)'``."""
    import torch

    from napari_dip.core.devices import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({platform.machine()}, {torch.get_num_threads()} threads)"


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CPU mode: 64 px centre crops (96 px HR crops for sr), the 'fast' preset, a few images "
                        "per task, cap 1500 iterations")
    p.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES))
    p.add_argument("--images", nargs="+", default=None, help="name substrings to keep (default: all; --quick: a few)")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default=None, help="engine preset (default: 'paper'; --quick: 'fast')")
    p.add_argument("--stop-rule", nargs="+", choices=RULES, default=["auto"], dest="rules",
                   help="default: auto, the engine's default")
    p.add_argument("--crop", type=int, default=None, help="centre crop size in px (default: none; --quick: 64)")
    p.add_argument("--sr-crop", type=int, default=None,
                   help="centre crop of the sr HR images (default: --crop; --quick: 96, i.e. a 24 px input)")
    p.add_argument("--max-iterations", type=int, default=None, help="iteration cap (default: the preset's)")
    p.add_argument("--preview-every", type=int, default=None, help="oracle checkpoint spacing (10 quick, 25 full)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                   help="Settings overrides, e.g. --set stop_patience=600 holdout_fraction=0.1")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    p.add_argument("--json", type=Path, default=None, help="write every row (with PSNR curves) as JSON")
    p.add_argument("--replay", type=Path, default=None, metavar="ROWS.json",
                   help="fit nothing: replay shorter patiences (--patience) on a --json file and print the gaps")
    p.add_argument("--patience", nargs="+", type=int, default=[150, 200, 300, 400])
    p.add_argument("--delay", type=int, default=None,
                   help="with --replay: ES-WMV's delay from the variance minimum to the kept average "
                        "(default: each row's recorded one)")
    args = p.parse_args(argv)
    if args.quick:
        args.preset = args.preset or "fast"
        args.crop = args.crop or 64
        args.sr_crop = args.sr_crop or max(args.crop, 96)
        args.max_iterations = args.max_iterations or 1500
    args.preset = args.preset or "paper"
    args.sr_crop = args.sr_crop or args.crop
    args.preview_every = args.preview_every or (10 if args.quick else 25)
    return args


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``['stop_patience=600', 'ema=0.95']`` -> ``{'stop_patience': 600, 'ema': 0.95}``."""
    out: dict[str, Any] = {}
    for item in items:
        name, _, text = item.partition("=")
        if not _:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the benchmark; returns the rows (empty if the data folder is absent)."""
    args = parse_args(argv)
    if args.replay is not None:
        rows_json = json.loads(args.replay.read_text())
        print(replay_table(rows_json, args.patience, int(parse_overrides(args.set).get("min_iterations", 100)),
                           args.delay))
        return []
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(f"data folder not found: {args.data}; nothing to benchmark (pass --data)", file=sys.stderr)
        return []
    overrides = parse_overrides(args.set)
    header = {"command": "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "device": device_description(args.device), "preset": args.preset,
              "crop": (f"{args.crop} px centre crops (sr: {args.sr_crop} px HR)" if args.crop or args.sr_crop
                       else "full images"),
              "iteration cap": args.max_iterations or "the preset's", "stopping rules": ", ".join(args.rules),
              "seed": args.seed, "overrides": overrides or "none",
              "date": time.strftime("%Y-%m-%d %H:%M")}
    print("\n".join(f"{k}: {v}" for k, v in header.items()), flush=True)
    rows: list[Row] = []
    for task in args.tasks:
        images = args.images if args.images is not None else (QUICK_IMAGES[task] if args.quick else None)
        try:
            cases = load_cases(task, args.data, args.sr_crop if task == "sr" else args.crop, images, args.seed)
        except FileNotFoundError as err:
            print(f"skipping {task}: {err}", flush=True)
            continue
        for case in cases:
            for rule in args.rules:
                row = run_case(case, rule, args.preset, args.device, args.seed, args.max_iterations,
                               args.preview_every, **overrides)
                rows.append(row)
                print(f"{task:8s} {case.name:20s} {_rule(row):14s} input {row.input_psnr:6.2f}  auto {row.psnr:6.2f} "
                      f"(stop {row.stop_iteration}/{row.iterations})  oracle {row.oracle_psnr:6.2f} "
                      f"@ {row.oracle_iteration}  gap {row.gap:5.2f}  {row.seconds:6.1f} s"
                      + ("" if row.noise_correlation is None else f"  noise corr {row.noise_correlation:.2f}"),
                      flush=True)
    text = report(rows, header)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "gap": r.gap} for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
