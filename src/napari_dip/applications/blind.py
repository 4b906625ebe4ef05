"""Blind restoration: JPEG artefacts and other unknown degradations.

The paper (Sec. 4, "JPEG artifacts removal") treats a compressed image exactly as a noisy one:
the denoising objective ``min_θ ‖f_θ(z) − x0‖²`` with no model of the degradation. The network
fits natural structure long before it fits the 8x8 block pattern and ringing, so an early-stopped
(or averaged) output is a restoration. :data:`JPEG_SETTINGS` holds the reference notebook's
settings; :func:`blockiness` measures the 8x8 block-boundary artefact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.fit import Snapshot
from ..core.restore import Restoration
from ..core.settings import Settings

__all__ = ["JPEG_SETTINGS", "blockiness", "restore_blind"]

#: Reference settings of the paper's JPEG experiment (snail): a light skip net
#: [8, 16, 32, 64, 128] with skips only at the two deepest scales, a 3-channel noise code,
#: lr 0.01, 2400 iterations, jitter 1/30 and an output average.
JPEG_SETTINGS = Settings(
    network="skip",
    network_kwargs=dict(channels_down=(8, 16, 32, 64, 128), channels_up=(8, 16, 32, 64, 128),
                        channels_skip=(0, 0, 0, 4, 4), upsample="bilinear", pad="reflection"),
    input_channels=3, lr=0.01, reg_noise_std=1.0 / 30.0, ema=0.99, iterations=2400,
)


def restore_blind(image, *, iterations: int | str = 2400, preset: str | Settings = "jpeg", device: str = "auto",
                  seed: int = 0, channel_axis: int | None = None,
                  callback: Callable[[Snapshot], Any] | None = None, **options) -> np.ndarray:
    """Remove JPEG artefacts (or another unknown degradation) with the denoising formulation.

    Parameters
    ----------
    image : array
        ``(..., Y, X)`` or ``(..., Y, X, C)``, e.g. a decoded JPEG. Never modified.
    iterations : int or 'auto'
        Fixed count (default 2400, the paper's) or automatic stopping capped at the preset's count.
    preset : {'jpeg', 'paper', 'fast'} or Settings
        ``'jpeg'``: :data:`JPEG_SETTINGS`; the others are the core's denoising presets.
    device, seed, channel_axis, callback
        As for :func:`napari_dip.denoise`.
    **options
        ``preview_every``, ``precision``, ``warm_start`` and any
        :class:`~napari_dip.core.settings.Settings` field (``lr``, ``network_kwargs``, ...).

    Returns
    -------
    numpy.ndarray
        float32, same shape and intensity units as ``image``.
    """
    settings = JPEG_SETTINGS if preset == "jpeg" else preset
    job = Restoration("denoise", image, iterations=iterations, preset=settings, device=device, seed=seed,
                      channel_axis=channel_axis, **options)
    return job.run(callback)


def blockiness(image, block: int = 8) -> float:
    """Ratio of the mean absolute step across ``block``-grid boundaries to that inside blocks.

    JPEG codes 8x8 blocks independently, so a compressed image has larger jumps between
    neighbouring pixels that straddle a block boundary than between neighbours inside a block:
    the ratio is > 1 for blocky images and about 1 for images without a grid. The grid is
    anchored at pixel (0, 0), as in a decoded JPEG (crop at multiples of ``block`` to keep it).

    Parameters
    ----------
    image : array
        ``(H, W)`` or ``(H, W, C)``.
    block : int
        Block size (8 for JPEG).
    """
    x = np.asarray(image, np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[0] <= block or x.shape[1] <= block:
        raise ValueError(f"image of shape {x.shape[:2]} is too small for {block}x{block} blocks")
    dx = np.abs(np.diff(x, axis=1))  # dx[:, j] = step between columns j and j+1
    dy = np.abs(np.diff(x, axis=0))
    on_x = (np.arange(dx.shape[1]) + 1) % block == 0
    on_y = (np.arange(dy.shape[0]) + 1) % block == 0
    across = np.concatenate([dx[:, on_x].ravel(), dy[on_y].ravel()])
    inside = np.concatenate([dx[:, ~on_x].ravel(), dy[~on_y].ravel()])
    return float(across.mean() / max(inside.mean(), 1e-12))
