"""The paper's architecture study on inpainting (Sec. 4, "Inpainting", large holes; Fig. 8).

The paper fills the large scribbled holes of the *library* image with generators of different
depth and with or without skip connections, and finds that deeper encoder-decoders fill large
holes better, while skip connections (UNet, or skip branches in the hourglass) and full-resolution
ResNets are detrimental for large holes. :func:`architecture_study` re-runs that comparison on any
image and hole mask and reports the PSNR inside the hole against the original pixels, so the hole
must be made on an image whose true content is known (``library.png`` is intact under
``library_mask.png``: the notebook applies the mask itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.fit import Snapshot
from ..core.layout import check_image, check_mask
from ..core.networks import build_network, count_parameters
from ..core.restore import Restoration
from ..core.settings import Settings

__all__ = ["ARCHITECTURES", "architecture_study", "format_table", "make_case"]

_HOURGLASS = dict(kernel_up=3, need1x1_up=False, upsample="nearest", pad="reflection")
_CH = (16, 32, 64, 128, 128, 128)
_BASE = Settings(network="skip", input_channels=1, lr=0.01, reg_noise_std=0.0, ema=0.0, iterations=3001,
                 stop_rule="none")


def _hourglass(depth: int, skip: int = 0) -> Settings:
    ch = _CH[:depth]
    # kernel 5 down as in the paper, but 3 at the deepest level: its maps can be 2x2 on small images,
    # where a reflection-padded 5x5 convolution is impossible (and meaningless)
    kernels = (5,) * (depth - 1) + (3,)
    return _BASE.replace(network_kwargs=dict(channels_down=ch, channels_up=ch, channels_skip=(skip,) * depth,
                                             kernel_down=kernels, **_HOURGLASS))


#: The compared generators: encoder-decoders of depth 2, 4 and 6 without skips (depth 6 is the
#: paper's library net), the depth-6 net with 4-channel skip connections, a 5-level UNet and a
#: full-resolution ResNet (8 blocks); UNet and ResNet at lr 0.001 as in the reference notebook.
ARCHITECTURES: dict[str, Settings] = {
    "hourglass depth 2": _hourglass(2),
    "hourglass depth 4": _hourglass(4),
    "hourglass depth 6": _hourglass(6),
    "hourglass depth 6 + skip": _hourglass(6, skip=4),
    "UNet depth 5": _BASE.replace(network="unet", lr=0.001,
                                  network_kwargs=dict(channels=(16, 32, 64, 128, 128), upsample="nearest")),
    "ResNet 8 blocks": _BASE.replace(network="resnet", lr=0.001, network_kwargs=dict(channels=64, blocks=8)),
}


def make_case(image, known, *, scale: int = 1, box: tuple[int, int, int, int] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """An inpainting test case with ground truth: ``(image, hole)`` from an intact image and a mask.

    Parameters
    ----------
    image : array
        ``(H, W)`` or ``(H, W, C)``, intact (its pixels under the hole are the ground truth).
    known : array
        ``(H, W)`` mask in the reference data's convention: nonzero (white) = known pixel,
        zero (black) = hole.
    scale : int
        Integer downscaling (block mean for the image, majority for the hole) to make it cheap.
    box : (top, left, height, width), optional
        Crop after downscaling.

    Returns
    -------
    (image, hole)
        float32 image and boolean hole mask (True = pixel to fill in).
    """
    img = np.asarray(image, np.float32)
    hole = ~check_mask(known)
    if hole.shape != img.shape[:2]:
        raise ValueError(f"mask shape {hole.shape} does not match the image's {img.shape[:2]}")
    if scale > 1:
        h, w = (img.shape[0] // scale) * scale, (img.shape[1] // scale) * scale
        img = img[:h, :w].reshape(h // scale, scale, w // scale, scale, *img.shape[2:]).mean(axis=(1, 3))
        hole = hole[:h, :w].reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3)) > 0.5
    if box is not None:
        t, left, bh, bw = box
        img, hole = img[t:t + bh, left:left + bw], hole[t:t + bh, left:left + bw]
    if not hole.any() or hole.all():
        raise ValueError("the case has no hole pixel, or no known pixel: choose another box")
    return img.astype(np.float32), hole


def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def architecture_study(image, hole, *, architectures: Mapping[str, Settings] | None = None,
                       iterations: int = 3001, device: str = "auto", seed: int = 0, data_range: float | None = None,
                       callback: Callable[[str, Snapshot], Any] | None = None) -> list[dict[str, Any]]:
    """Inpaint ``hole`` in ``image`` with each architecture and score it against the original pixels.

    Parameters
    ----------
    image : array
        ``(H, W)`` or ``(H, W, C)``: the intact image (ground truth), e.g. from :func:`make_case`.
    hole : array
        ``(H, W)``, nonzero = pixel to hide and fill in.
    architectures : mapping of name -> Settings, optional
        Default :data:`ARCHITECTURES`.
    iterations : int
        Iterations per architecture (3001 in the paper's library notebook).
    device, seed
        As for :func:`napari_dip.inpaint`; every architecture uses the same seed.
    data_range : float, optional
        Peak value for PSNR (default: 255 for uint8-like images with a maximum above 1, else 1).
    callback : callable, optional
        Called as ``callback(name, snapshot)`` at every iteration.

    Returns
    -------
    list of dict
        One row per architecture: ``architecture``, ``network``, ``parameters``, ``iterations``,
        ``psnr_hole`` (PSNR over the hole's pixels), ``psnr_image`` (whole image, known pixels
        pasted back), ``seconds``.
    """
    truth = check_image(image).astype(np.float32)
    fill = check_mask(hole)
    if fill.shape != truth.shape[:2]:
        raise ValueError(f"hole shape {fill.shape} does not match the image's {truth.shape[:2]}")
    if data_range is None:
        data_range = 255.0 if float(truth.max()) > 1.0 else 1.0
    damaged = truth.copy()
    damaged[fill] = 0  # the fit never sees the hidden pixels
    channels = 1 if truth.ndim == 2 else truth.shape[-1]
    rows = []
    for name, s in (architectures or ARCHITECTURES).items():
        start = time.perf_counter()
        cb = None if callback is None else (lambda snap, _n=name: callback(_n, snap))
        out = Restoration("inpaint", damaged, mask=fill, iterations=iterations, preset=s, device=device,
                          seed=seed).run(cb)
        seconds = time.perf_counter() - start
        params = count_parameters(build_network(s.network, s.input_channels, channels, **s.network_kwargs))
        rows.append({"architecture": name, "network": s.network, "parameters": params, "iterations": iterations,
                     "psnr_hole": _psnr(out[fill], truth[fill], data_range),
                     "psnr_image": _psnr(out, truth, data_range), "seconds": round(seconds, 2)})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The study's rows as a Markdown table."""
    lines = ["| architecture | network | parameters | iterations | PSNR hole (dB) | PSNR image (dB) | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['architecture']} | {r['network']} | {r['parameters']:,} | {r['iterations']} | "
                     f"{r['psnr_hole']:.2f} | {r['psnr_image']:.2f} | {r['seconds']:.1f} |")
    return "\n".join(lines)
