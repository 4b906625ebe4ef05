"""Synthetic sample data, made at run time with numpy (no download, nothing to license).

Fluorescence-like cells: bright nuclei, dimmer cytoplasm with a brighter membrane rim, and
punctate spots, on a dark background; noisy versions add Poisson (shot) and Gaussian (read)
noise, as a camera would. Everything is reproducible from ``seed``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cells", "noisy_cells", "cells_stack", "psnr"]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur via FFT (periodic boundary), numpy only."""
    h, w = img.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(img) * g, s=(h, w))


def cells(size: int | tuple[int, int] = 256, n_cells: int = 14, seed: int = 0, phase: float = 0.0) -> np.ndarray:
    """A clean fluorescence-like image in ``[0, 1]`` (float32, ``(H, W)``).

    ``phase`` (0..1) moves and reshapes the cells slightly: consecutive phases give the planes of
    a smooth stack.
    """
    h, w = (size, size) if np.isscalar(size) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    scale = min(h, w)
    for _ in range(n_cells):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        r = rng.uniform(0.07, 0.13) * scale * (1 + 0.15 * np.sin(2 * np.pi * phase + rng.uniform(0, 6)))
        ecc, ang = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        cy += 0.03 * scale * np.sin(2 * np.pi * phase)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(ang) + dy * np.sin(ang)) / ecc
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        d = np.sqrt(u**2 + v**2) / r
        cyto = 0.25 * (d < 1) + 0.35 * np.exp(-((d - 1) ** 2) / 0.004)
        nucleus = 0.75 * (d < 0.45 * rng.uniform(0.8, 1.2))
        img = np.maximum(img, cyto + nucleus)
    spots = np.zeros((h, w))
    for _ in range(n_cells * 6):
        spots[rng.integers(0, h), rng.integers(0, w)] = rng.uniform(2, 6)
    img = _blur(img, 1.2) + _blur(spots, 1.0) + 0.03
    return np.clip(img / img.max(), 0, 1).astype(np.float32)


def noisy_cells(size: int | tuple[int, int] = 256, photons: float = 30.0, read_noise: float = 0.03,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)``: clean in ``[0, 1]`` and a noisy uint16 camera image.

    The noisy image has Poisson noise at ``photons`` photons for the brightest pixel plus Gaussian
    read noise (std ``read_noise`` of the peak), scaled to 12-bit counts (0..4095).
    """
    clean = cells(size, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    noisy = rng.poisson(clean * photons) / photons + rng.normal(0, read_noise, clean.shape)
    counts = np.clip(np.round(noisy * 4095 * 0.8 + 100), 0, 4095).astype(np.uint16)
    return clean, counts


def cells_stack(planes: int = 5, size: int = 96, seed: int = 0, hole_fraction: float = 0.05
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(clean, damaged, mask)``: a smooth ``(Z, Y, X)`` float32 stack, the stack with the
    pixels under ``mask`` zeroed (scratches and missing blocks), and the uint8 label mask
    (1 = pixel to fill in)."""
    clean = np.stack([cells(size, seed=seed, phase=z / max(planes, 1) * 0.3) for z in range(planes)])
    rng = np.random.default_rng(seed + 7)
    mask = np.zeros(clean.shape, np.uint8)
    for z in range(planes):
        for _ in range(3):  # scratches
            y0 = rng.integers(0, size)
            mask[z, y0:y0 + 2, rng.integers(0, size // 2):] = 1
        by, bx = rng.integers(0, size - 12, 2)  # a missing block
        mask[z, by:by + 10, bx:bx + 10] = 1
        extra = rng.random((size, size)) < hole_fraction
        mask[z][extra] = 1
    damaged = np.where(mask > 0, 0.0, clean).astype(np.float32)
    return clean, damaged, mask


def psnr(estimate: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (data range: that of ``reference`` unless given)."""
    ref = np.asarray(reference, np.float64)
    est = np.asarray(estimate, np.float64)
    if data_range is None:
        data_range = float(ref.max() - ref.min()) or 1.0
    mse = float(np.mean((est - ref) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)
