"""Pixel fusion: combine a masked fit's estimate with each pixel's own noisy value.

A masked fit (``input_kind="masked"``, the ``pretrained`` preset) predicts every pixel from the
others: its estimate ``mu`` never saw the pixel's own noise. The noisy value ``y = x + n`` is a
second, independent look at the same pixel, with the noise variance ``s2n(x)`` the noise model
measures (:func:`~napari_dip.core.noise.estimate_noise`). Their linear minimum-mean-squared-error
combination (a local Wiener filter between the two)::

    x_hat = mu + w * (y - mu),      w = s2p / (s2p + s2n)

weights the pixel by how wrong the prediction is likely to be (``s2p``, the prior error variance)
against how noisy the pixel is. ``s2p`` is not known; because ``mu`` and ``n`` are independent,
``E[(y - mu)^2] = s2p + s2n``, so it is measured locally as a Gaussian-weighted mean of
``(y - mu)^2`` less that of ``s2n``. That local mean has its own sampling error (relative standard
error ``sqrt(2 / N)`` for ``N`` effective pixels), so only the excess above ``z`` such errors
counts: where the prediction is as good as the noise allows, ``w`` is 0 and the estimate is kept.
The idea is the Bayesian step of blind-spot denoisers (Laine et al. 2019, Krull et al. 2020),
here with a measured rather than a learned prior variance.

It needs the estimate to be blind to each pixel's noise: masked fits only, and noise that is
independent from pixel to pixel (for correlated noise the neighbours that made ``mu`` carry part
of ``n``). Measured in docs/engine.md ("Pixel fusion").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .noise import NoiseEstimationError, NoiseModelWarning, NoisePlan, channel_groups, estimate_noise, given_model

__all__ = ["PIXEL_FUSION", "SIGMA", "Z", "Fusion", "FusionPlan", "check_pixel_fusion", "fuse", "plan_fusion",
           "threshold"]

#: Gaussian window (standard deviation, pixels) of the local error variances
SIGMA = 5.0
#: standard errors of the local variance estimate the prediction error must exceed
Z = 1.0


@dataclass(frozen=True)
class Fusion:
    """What :func:`fuse` did to one plane (kept in the fit's history).

    Attributes
    ----------
    image : ndarray
        The fused plane, float32, same shape as the estimate.
    mean_weight : float
        Mean weight given to the noisy pixels (0: the estimate kept, 1: the noisy input).
    """

    image: np.ndarray
    mean_weight: float


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each channel of ``(H, W, C)`` with a Gaussian (reflected borders), in float32."""
    radius = max(1, int(math.ceil(3 * sigma)))
    g = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (g / sigma) ** 2)
    k = k / k.sum()
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32))[:, None]  # (C, 1, H, W)
    h, w = t.shape[-2:]
    ry, rx = min(radius, h - 1), min(radius, w - 1)
    if ry > 0:
        t = F.pad(t, (0, 0, ry, ry), mode="reflect")
    if rx > 0:
        t = F.pad(t, (rx, rx, 0, 0), mode="reflect")
    with torch.no_grad():
        t = F.conv2d(t, k[radius - rx:radius + rx + 1].view(1, 1, 1, -1))
        t = F.conv2d(t, k[radius - ry:radius + ry + 1].view(1, 1, -1, 1))
    return np.moveaxis(t[:, 0].numpy(), 0, -1).astype(np.float64)


def threshold(sigma: float = SIGMA, z: float = Z) -> float:
    """Factor on the local noise variance that the local ``(y - mu)^2`` must exceed (``1 + z sqrt(2/N)``)."""
    n_eff = 4 * math.pi * sigma ** 2  # effective number of pixels under a 2-D Gaussian window
    return 1.0 + z * math.sqrt(2.0 / n_eff)


def fuse(noisy: np.ndarray, estimate: np.ndarray, variance: Callable[[np.ndarray], np.ndarray], *,
         sigma: float = SIGMA, z: float = Z) -> Fusion:
    """Combine a blind estimate with the noisy pixels (see the module docstring).

    Parameters
    ----------
    noisy, estimate : array
        ``(H, W)`` or ``(H, W, C)``, the same shape, in the input's units. Not modified.
    variance : callable
        The noise variance at an intensity (the noise model's line); applied to the estimate.
    sigma : float
        Standard deviation in pixels of the Gaussian window of the local variances (> 0).
    z : float
        Standard errors of the local variance estimate that the prediction error must exceed (>= 0).

    Returns
    -------
    Fusion
    """
    y = np.asarray(noisy, np.float64)
    mu = np.asarray(estimate, np.float64)
    if y.shape != mu.shape:
        raise ValueError(f"noisy image {y.shape} and estimate {mu.shape} differ in shape")
    if not sigma > 0 or not z >= 0:
        raise ValueError(f"sigma must be > 0 and z >= 0, got sigma={sigma!r}, z={z!r}")
    flat = y.ndim == 2
    if flat:
        y, mu = y[..., None], mu[..., None]
    s2n = np.asarray(variance(mu), np.float64)
    finite = s2n[np.isfinite(s2n)]
    floor = 0.05 * max(float(np.median(finite)) if finite.size else 0.0, 1e-12)
    s2n = np.where(np.isfinite(s2n), np.maximum(s2n, floor), floor)  # a line can go <= 0 at the dark end
    r2 = (y - mu) ** 2
    c = r2.shape[-1]
    local = _gaussian_blur(np.concatenate([r2, s2n], axis=-1), sigma)  # one pass for both
    s2p = np.maximum(local[..., :c] - threshold(sigma, z) * local[..., c:], 0.0)
    w = s2p / (s2p + s2n)
    out = (mu + w * (y - mu)).astype(np.float32)
    return Fusion(out[..., 0] if flat else out, float(w.mean()))


# -- per plane: whether and with which noise variances ------------------------------------------
PIXEL_FUSION = ("auto", True, False)


def check_pixel_fusion(settings: Any, task: str) -> None:
    """Validate ``settings.pixel_fusion`` for ``task`` (a clear error before any fit).

    Raises
    ------
    ValueError
        For a value other than ``'auto'``, True or False, or True where the fit's estimate sees
        each pixel's own noise (not a masked fit) or the task is not denoising.
    """
    value = getattr(settings, "pixel_fusion", "auto")
    if not (isinstance(value, bool) or (isinstance(value, str) and value == "auto")):
        raise ValueError(f"pixel_fusion must be 'auto', True or False, got {value!r}")
    if value is True and task != "denoise":
        raise ValueError(f"pixel_fusion=True is for denoising, not {task!r} (the pixels it would weigh in are the "
                         "ones the fit must replace); use 'auto' or False")
    if value is True and getattr(settings, "input_kind", "noise") != "masked":
        raise ValueError("pixel_fusion=True needs a masked fit (the 'pretrained' preset, or input_kind='masked'): "
                         "a fit from a random code has seen every pixel's own noise, so weighing the noisy "
                         "pixel in again would count that noise twice; use 'auto' or False")


@dataclass(frozen=True)
class FusionPlan:
    """Whether one plane is fused, and the noise variance of each of its channel groups.

    Attributes
    ----------
    on : bool
    variances : list of callables
        One per channel (one shared by all channels when pooled, e.g. RGB); empty when off.
    source : {'estimated', 'given', None}
        Where the variances come from.
    note : str or None
        Why a plane is not fused where it could have been (``'auto'``), e.g. correlated noise.
    """

    on: bool
    variances: list = field(default_factory=list)
    source: str | None = None
    note: str | None = None

    def apply(self, noisy: np.ndarray, estimate: np.ndarray) -> Fusion:
        """Fuse ``estimate`` ``(H, W, C)`` with ``noisy`` (input units); unchanged when off."""
        if not self.on:
            return Fusion(np.asarray(estimate, np.float32), 0.0)
        if len(self.variances) == 1:
            return fuse(noisy, estimate, self.variances[0])
        parts = [fuse(noisy[..., i], estimate[..., i], v) for i, v in enumerate(self.variances)]
        return Fusion(np.stack([p.image for p in parts], axis=-1), float(np.mean([p.mean_weight for p in parts])))

    def history(self, mean_weight: float | None = None) -> dict[str, list]:
        """Entries for a fit's ``history``."""
        out: dict[str, list] = {"pixel_fusion": [self.on]}
        if self.on:
            out["pixel_fusion_source"] = [self.source]
            if mean_weight is not None:
                out["pixel_fusion_weight"] = [round(mean_weight, 5)]
        if self.note:
            out["pixel_fusion_note"] = [self.note]
        return out


def plan_fusion(plane: np.ndarray, settings: Any, task: str, noise: NoisePlan | None = None,
                rgb: bool = False) -> FusionPlan:
    """The :class:`FusionPlan` of one plane ``(H, W, C)`` (input units) under ``settings``.

    ``pixel_fusion='auto'``: on for a masked denoising fit where the noise measures independent
    from pixel to pixel; off (with a note) where it is correlated or cannot be measured. True: on
    wherever the noise can be measured (or is given). The variances are the camera's where given
    (``noise_gain`` ...), else the estimate the noise model made (``noise``), else a new estimate
    (:func:`~napari_dip.core.noise.estimate_noise`; channels pooled for RGB, one per channel otherwise).
    """
    value = getattr(settings, "pixel_fusion", "auto")
    if value is False or task != "denoise" or getattr(settings, "input_kind", "noise") != "masked":
        return FusionPlan(False)
    x = np.asarray(plane, np.float64)
    if x.ndim == 2:
        x = x[..., None]
    model = given_model(settings)
    if model is not None:
        return FusionPlan(True, [model.variance], "given")
    groups = channel_groups(x, rgb)
    estimates = []
    if noise is not None and noise.estimate is not None and len(groups) == 1:
        estimates = [noise.estimate]
    else:
        for g in groups:
            try:
                estimates.append(estimate_noise(g))
            except NoiseEstimationError as err:
                note = f"not fused: cannot measure this plane's noise ({err})"
                if value is True:
                    warnings.warn(note, NoiseModelWarning, stacklevel=2)
                return FusionPlan(False, note=note)
    correlated = [e.correlation_factor for e in estimates if e.correlation_factor != 1.0]
    if value == "auto" and correlated:
        return FusionPlan(False, note=f"not fused: the noise is correlated between neighbouring pixels (variance "
                                      f"factor {max(correlated):.3g}), so the estimate is not blind to it")
    return FusionPlan(True, [e.variance for e in estimates], "estimated")
