"""Pre-training: a starting point for masked fits, learned by masked-pixel reconstruction.

A network that sees an image with a random share of its pixels hidden learns to predict the
hidden pixels from their neighbours (MPI: Ma et al., "Masked pre-training enables universal
zero-shot denoiser", NeurIPS 2024). Started from such weights, a masked fit of one image
(``Settings(input_kind='masked')``, :mod:`napari_dip.core.masking`) needs a few hundred iterations
instead of thousands (docs/performance.md).

Two ways to pre-train, one loop (:func:`pretrain_steps`):

- **clean images + synthetic noise** (``synthetic_noise=True``; how the shipped weights are made,
  ``napari-dip pretrain --builtin-data``): each crop gets Poisson-Gaussian noise of a random level
  (sometimes spatially correlated, as on wide-field cameras), and the hidden pixels are compared
  with the clean crop;
- **your own noisy images** (``synthetic_noise=False``; ``napari-dip pretrain my_stack.tif``, "a
  prior for my microscope"): the hidden pixels are compared with the image itself. For noise that
  is independent from pixel to pixel that is an unbiased stand-in for the clean image (Noise2Self),
  so no clean data is needed.

Every step's crops hide either a low share of their pixels (``low_ratio``, the setting for white
noise) or, in ``high_share`` of the steps, a high one (``high_ratio``, the setting for correlated
noise, :mod:`napari_dip.core.masking`), so one file serves both. With synthetic noise, band-limited
(correlated) noise appears only in high-ratio steps (half of their crops), as in fits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .masking import masked_input
from .networks import DIPNet, build_network
from .settings import Settings

__all__ = ["PretrainStep", "pretrain_steps", "check_training_images"]


@dataclass(frozen=True)
class PretrainStep:
    """Progress of pre-training after ``step`` of ``total`` steps (``loss``: running mean)."""

    step: int
    total: int
    loss: float
    seconds: float


def check_training_images(images: Sequence[np.ndarray], channels: int, patch: int,
                          names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Validate and normalise training images to float32 ``(H, W, C)`` in ``[0, 1]``.

    Each image is scaled by its own minimum and maximum. Stacks must be split into planes by the
    caller.

    Raises
    ------
    ValueError
        Naming the image: no images, wrong channel count, smaller than ``patch`` pixels a side,
        NaN or infinite values, or constant.
    """
    if len(images) == 0:
        raise ValueError("no training images")
    out = []
    for i, img in enumerate(images):
        name = names[i] if names is not None else f"image {i}"
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] != channels:
            raise ValueError(f"{name}: expected a (Y, X) or (Y, X, {channels}) image, got shape {np.shape(img)}")
        if min(arr.shape[:2]) < patch:
            raise ValueError(f"{name}: {arr.shape[0]}x{arr.shape[1]} pixels is smaller than the {patch} px training "
                             f"crops; use larger images or a smaller patch")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            raise ValueError(f"{name}: is constant; there is nothing to learn from it")
        out.append(((arr - lo) / (hi - lo)).astype(np.float32))
    return out


def _crops(images: list[np.ndarray], rng: np.random.Generator, batch: int, patch: int,
           augment: bool) -> np.ndarray:
    """``(batch, C, patch, patch)`` random crops with flips, rotations and (optionally) contrast changes."""
    out = []
    for _ in range(batch):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        y0, x0 = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        c = img[y0:y0 + patch, x0:x0 + patch]
        c = np.rot90(c, int(rng.integers(4)))
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if augment:  # a random gamma and intensity range: microscopy rarely fills [0, 1]
            c = np.clip(c, 0, 1) ** math.exp(rng.uniform(-0.7, 0.7))
            lo = rng.uniform(0.0, 0.3)
            c = lo + rng.uniform(0.15, 1.0 - lo) * c
        out.append(np.ascontiguousarray(c.transpose(2, 0, 1)))
    return np.stack(out).astype(np.float32)


def _synthetic_noise(x: torch.Tensor, rng: np.random.Generator, gen: torch.Generator,
                     correlated_share: float) -> torch.Tensor:
    """Poisson-Gaussian noise of a random level per crop; ``correlated_share`` of the crops get it band-limited."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    photons = torch.from_numpy(10 ** rng.uniform(0.7, 3.3, shape)).float()
    read = torch.from_numpy(rng.uniform(0.0, 0.12, shape)).float()
    shot_on = torch.from_numpy(rng.random(shape) < 0.6)
    std = torch.where(shot_on, torch.sqrt(x.clamp_min(0) / photons), torch.zeros_like(x))
    white = torch.randn(x.shape, generator=gen)
    noise = std * white + read * torch.randn(x.shape, generator=gen)
    correlated = torch.from_numpy(rng.random(n) < correlated_share)
    if bool(correlated.any()):  # blur the noise of those crops and restore its standard deviation
        k = torch.tensor([0.25, 0.5, 0.25])
        k2 = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 3, 3)
        blurred = F.conv2d(F.pad(noise, (1, 1, 1, 1), mode="reflect"), k2, groups=x.shape[1])
        gain = noise.std(dim=(1, 2, 3), keepdim=True) / blurred.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        noise = torch.where(correlated.view(-1, 1, 1, 1), blurred * gain, noise)
    return x + noise


def pretrain_steps(images: Sequence[np.ndarray], settings: Settings, *, channels: int = 1, steps: int = 20000,
                   batch: int = 8, patch: int = 64, lr: float = 2e-3, seed: int = 0, synthetic_noise: bool = True,
                   low_ratio: tuple[float, float] = (0.2, 0.5), high_ratio: tuple[float, float] = (0.8, 0.95),
                   high_share: float = 0.35, device: str | torch.device = "cpu",
                   init_state: dict[str, torch.Tensor] | None = None, report_every: int = 50,
                   names: Sequence[str] | None = None) -> Generator[PretrainStep, None, DIPNet]:
    """Train ``settings``' network by masked-pixel reconstruction; yields progress, returns the net.

    Parameters
    ----------
    images : sequence of arrays
        ``(Y, X)`` or ``(Y, X, channels)`` images, each at least ``patch`` pixels a side.
    settings : Settings
        Must have ``input_kind='masked'``; its ``network`` and ``network_kwargs`` are trained.
    steps, batch, patch, lr
        Adam steps (the learning rate follows a cosine from ``lr`` to 0), crops per step, crop side.
    seed : int
        Everything random (crops, noise, masks, initial weights) follows from it: equal seeds and
        thread counts give identical weights on a CPU.
    synthetic_noise : bool
        Add synthetic noise and compare with the clean crop (clean images), or compare with the
        image itself (noisy images).
    init_state : dict, optional
        Weights to continue from (fine-tuning shipped weights on your own images).

    Raises
    ------
    ValueError
        For settings that are not masked, bad images (see :func:`check_training_images`) or bad
        step counts.
    """
    if settings.input_kind != "masked":
        raise ValueError("pre-training needs settings with input_kind='masked'")
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {steps} and {batch}")
    for lo, hi in (low_ratio, high_ratio):
        if not 0 < lo <= hi < 1:
            raise ValueError(f"mask ratio ranges must lie in (0, 1), got {(lo, hi)}")
    data = check_training_images(images, channels, patch, names)
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(settings.network, channels + 1, channels, **settings.network_kwargs)
    smallest = net.size_multiple * max(1, net.min_cells)
    if patch < smallest or patch % net.size_multiple:
        raise ValueError(f"patch must be a multiple of {net.size_multiple} and at least {smallest} pixels for this "
                         f"network, got {patch}")
    if init_state is not None:
        net.load_state_dict(init_state)
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start, running = time.perf_counter(), None
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        clean = torch.from_numpy(_crops(data, rng, batch, patch, augment=synthetic_noise))
        high = rng.random() < high_share
        lo, hi = high_ratio if high else low_ratio
        # band-limited noise only with the high ratio, as fits use them together (mask_ratio='auto'):
        # mixing it into low-ratio crops cost 0.3 dB on FMD two-photon frames (docs/performance.md)
        noisy = _synthetic_noise(clean, rng, gen, 0.5 if high else 0.0) if synthetic_noise else clean
        target = clean
        ratio = torch.from_numpy(rng.uniform(lo, hi, (batch, 1, 1, 1))).float()
        visible = (torch.rand((batch, 1, patch, patch), generator=gen) >= ratio).float()
        inp = masked_input(noisy, visible).to(device)
        out = net(inp)
        hidden = (1 - visible).to(device)
        loss = (((out - target.to(device)) ** 2) * hidden).sum() / (hidden.sum() * channels).clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % report_every == 0 or step == steps:
            yield PretrainStep(step, steps, running, time.perf_counter() - start)
    return net


def describe_pretraining(**kwargs: Any) -> dict[str, Any]:
    """The arguments of a pre-training as JSON-able metadata for the weights file."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()
            if isinstance(v, (int, float, str, bool, tuple, list, type(None)))}


def drain_pretraining(gen: Generator[PretrainStep, None, DIPNet],
                      callback: Callable[[PretrainStep], Any] | None = None) -> DIPNet:
    """Run :func:`pretrain_steps` to the end (``callback`` gets each progress report)."""
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(step)
