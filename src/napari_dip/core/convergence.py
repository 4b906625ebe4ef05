"""How far a fit's estimate is from converged, from the measurement alone (no clean image).

A DIP fit first learns the image's structure and only then its noise. While the structure is
still being learnt, the estimate's residual to the measurement ``mean((A x - y)^2)`` is far above
the noise variance (a grey blob after a few iterations: about the image's whole variance); once
the structure is in, it is close to the noise variance. :func:`fit_evidence` measures where a fit
stands on that path as the share of the image's structure (its variance above the noise) that
the estimate still misses::

    unexplained = (residual - noise) / (variance - noise)

where ``variance`` is the measurement's variance and ``noise`` its noise variance estimated from the
measurement itself (:func:`~napari_dip.core.stopping.noise_variance`, as the discrepancy rule
does), both over the measured values only. About 1 for a flat estimate, about 0 at convergence.

The widgets use it to flag a cancelled or capped estimate as *not converged* instead of
presenting it as a result; see :data:`UNEXPLAINED_LIMIT` for the threshold, what it was measured on,
and what it cannot see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .operators import Mask
from .stopping import noise_variance

__all__ = ["Evidence", "UNEXPLAINED_LIMIT", "current_estimate", "fit_evidence", "residual_evidence"]

#: Largest :attr:`Evidence.unexplained` still counted as converged. Measured with the ``fast`` preset
#: on 96-128 px crops (auto stop, cap 1500): the kept estimates were at 0.00-0.06 on noisy cells
#: (20 photons), FMD confocal, two-photon and wide-field frames, a golgi plane, F16 with sigma 25, an
#: inpainting (kate) and a 4x super-resolution (zebra) crop, and at 0.21 on noisy cells with 5 photons
#: (shot noise: the noise estimate is low). After 5-15 iterations (a grey blob) every one was at
#: 0.37-44, after 30 at 0.17-10, after 60 at 0.07-3.4. It is a coarse test: it flags estimates that
#: have not learnt the image yet, not the last decibels (super-resolution reaches 0 by iteration 100
#: and still gains 7 dB after it).
UNEXPLAINED_LIMIT = 0.3


@dataclass(frozen=True)
class Evidence:
    """The residual of an estimate against the noise level of its measurement.

    Attributes
    ----------
    iteration : int
        The iteration the estimate comes from.
    residual : float
        Mean squared residual ``mean((A x - y)^2)`` over the measured values (normalised units).
    noise : float
        Noise variance estimated from the measurement alone (0 when it cannot be estimated).
    variance : float
        Variance of the measurement over its measured values.
    """

    iteration: int
    residual: float
    noise: float
    variance: float

    @property
    def unexplained(self) -> float:
        """Share of the measurement's variance above the noise that the estimate misses (>= 0)."""
        structure = self.variance - self.noise
        if not structure > 1e-12 * max(self.variance, 1e-30):
            return 0.0  # nothing but noise (or a flat image): nothing left to learn
        return max(0.0, (self.residual - self.noise) / structure)

    @property
    def noise_ratio(self) -> float:
        """``residual / noise`` (inf when the noise level is 0)."""
        return self.residual / self.noise if self.noise > 0 else math.inf

    @property
    def converged(self) -> bool:
        """Whether :attr:`unexplained` is at most :data:`UNEXPLAINED_LIMIT`."""
        return self.unexplained <= UNEXPLAINED_LIMIT

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, including the derived ``unexplained`` and ``converged``."""
        out: dict[str, Any] = {k: (round(v, 8) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["unexplained"] = round(self.unexplained, 4)
        out["converged"] = self.converged
        return out


def residual_evidence(estimate: torch.Tensor, target: torch.Tensor, operator=None,
                      noise: float | None = None, iteration: int = 0) -> Evidence:
    """:class:`Evidence` of ``estimate`` against the measurement ``target`` through ``operator``.

    Parameters
    ----------
    estimate : tensor
        ``(1, C, H, W)``, in the fit's normalised units.
    target : tensor
        The measurement ``(1, C, h, w)``.
    operator : LinearOperator, optional
        The forward operator (default identity). A :class:`~napari_dip.core.operators.Mask` restricts
        every figure to the known pixels.
    noise : float, optional
        A noise variance already estimated for ``target`` (computed when None).
    iteration : int
        Recorded in the result.
    """
    with torch.no_grad():
        y = target.detach().float()
        pred = estimate.detach().float() if operator is None else operator(estimate.detach().float())
        if isinstance(operator, Mask):
            known = operator.known.to(y.device).expand_as(y)
        else:
            known = torch.ones_like(y)
        count = float(known.sum())
        if count == 0:
            raise ValueError("no measured value to compare the estimate with")
        residual = float((((pred - y) ** 2) * known).sum()) / count
        mean = float((y * known).sum()) / count
        variance = float((((y - mean) ** 2) * known).sum()) / count
        if noise is None:
            noise = noise_variance(torch.where(known > 0, y, torch.full_like(y, mean)))
    return Evidence(iteration=int(iteration), residual=residual, noise=float(noise), variance=variance)


def current_estimate(fitter) -> torch.Tensor | None:
    """The estimate a :class:`~napari_dip.core.fit.Fitter` would return now (None before any iteration).

    The same choice as the fitter's own result: the average kept at the stop signal's best point
    for automatic fits, else the running average, else the last output.
    """
    if fitter.auto and fitter.best is not None:
        return fitter.best
    return fitter.ema if fitter.ema is not None else fitter.last


def fit_evidence(fitter, noise: float | None = None) -> Evidence | None:
    """:class:`Evidence` of a fitter's current estimate (None before its first iteration, or for a
    batched fit of several images).

    Parameters
    ----------
    fitter : Fitter
    noise : float, optional
        The measurement's noise variance, if already estimated (it does not change during a fit).
    """
    if getattr(fitter, "groups", 1) != 1:
        return None
    estimate = current_estimate(fitter)
    if estimate is None:
        return None
    iteration = fitter.best_iteration if fitter.auto and fitter.best is not None else fitter.iteration
    return residual_evidence(estimate, fitter.target, fitter.operator, noise, iteration)
