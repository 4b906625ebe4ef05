"""Microscopy noise as it is: Poisson-Gaussian estimation, variance stabilisation and its inverse.

A camera or photomultiplier pixel measures ``z = gain * p + n`` with ``p`` a Poisson count of
photons (mean ``y``) and ``n`` Gaussian read noise (mean ``offset``, variance ``read_variance``), so
the noise variance grows with the signal::

    var(z | y) = gain * (E[z] - offset) + read_variance                               (1)

The engine's squared-error fit and its stopping rules assume one noise level per image. This
module lets a fit work where that holds:

:func:`estimate_noise`
    ``gain`` and the variance at zero (``read_variance - gain * offset``) from a single image, in
    the manner of Foi et al. (2008, "Practical Poissonian-Gaussian noise modeling and fitting for
    single-image raw-data"): a high-pass detail of the image (the separable second difference
    ``[1, -2, 1] x [1, -2, 1] / 6``, which has unit gain for white noise and removes planes) is
    binned by the local intensity (5x5 mean); in each bin the flattest half of the pixels (the
    weakest local gradient and curvature) gives a robust variance; a weighted least-squares line
    (weights ``n / variance**2``, iterated) gives (1). Pixels within reach of a clipping level
    (a pile-up of values at the image's darkest or brightest value, e.g. an 8-bit frame's 255 or
    a detector floor) are left out, and so are intensity bins where more than a fifth of the
    pixels were. Noise correlated between neighbouring pixels (measured as the stopping rules do,
    :func:`~napari_dip.core.stopping.noise_correlation`) hides most of its variance from a 3x3
    detail; there the variances are scaled by the ratio of a stride-4 detail (neighbours 4 px apart
    are nearly independent, measured on every usable pixel) to the 3x3 one (on the flat pixels the
    bins used), from their median absolute values.
:func:`choose_noise_model`
    ``noise_model='auto'``: Poisson-Gaussian when the fitted variance grows with intensity (the
    slope is positive and at least :data:`MIN_SLOPE_T` standard errors from 0) by at least
    :data:`GROWTH_THRESHOLD` times across the image's intensities (2nd to 98th percentile),
    Gaussian otherwise.
:class:`PoissonGaussian`
    The generalised Anscombe transform (GAT; Murtagh, Starck & Bijaoui 1995) that makes the noise
    of (1) about unit-variance Gaussian, ``f(z) = 2 / gain * sqrt(gain * z + 3/8 gain**2 +
    read_variance - gain * offset)``, and its *exact unbiased inverse* (Makitalo & Foi 2013): the
    intensity ``y`` whose expected transformed value ``E[f(z) | y]`` equals the denoised value.
    That expectation is computed here numerically (Poisson sums times Gauss-Hermite quadrature of
    the read noise, tabulated up to :data:`EXACT_INVERSE_PHOTONS` photons and inverted by
    interpolation); above that, Makitalo & Foi's closed-form approximation of the exact unbiased
    inverse of the Anscombe transform (2011), shifted by the read noise, is used. Their difference
    at the junction is below 1e-3 photons (tested).
:class:`NoisePlan`
    What a fit of one plane does with it: stabilise and map to ``[0, 1]`` before the fit, map
    back and invert after it; in the stabilised domain the noise variance of the normalised
    target is known (``1 / scale**2``), which the discrepancy rule uses instead of its tile
    estimate. :func:`plan_noise` makes it from the settings (``noise_model``, ``noise_gain``,
    ``noise_read_variance``, ``noise_offset``) and falls back to the Gaussian model, with a
    :class:`NoiseModelWarning`, when the image does not allow an estimate.

See docs/engine.md ("Microscopy noise") for the measurements behind the thresholds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NOISE_MODELS", "GROWTH_THRESHOLD", "MIN_SLOPE_T", "EXACT_INVERSE_PHOTONS", "NoiseEstimate",
           "NoiseEstimationError", "NoiseModelWarning", "NoisePlan", "PoissonGaussian", "check_noise_settings",
           "channel_groups", "choose_noise_model", "clip_levels", "estimate_noise", "given_model", "plan_noise"]

#: valid values of :attr:`~napari_dip.core.settings.Settings.noise_model`
NOISE_MODELS = ("auto", "gaussian", "poisson-gaussian")
#: ``'auto'`` picks the Poisson-Gaussian model when the fitted variance at the bright end of the
#: image (98th percentile of the local mean) is at least this many times that at the dark end (2nd)
GROWTH_THRESHOLD = 2.0
#: ... and the fitted gain is at least this many standard errors above 0
MIN_SLOPE_T = 3.0
#: the exact unbiased inverse is tabulated up to this many photons; the closed form above
EXACT_INVERSE_PHOTONS = 80.0

_DETAIL = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0]) / 6.0  # unit gain for white noise: sum of squares 1
_MEAN_RADIUS = 2  # 5x5 local mean
_WIDE_STRIDE = 4  # stride of the detail that sees correlated noise
_KEEP = 0.5  # flattest share of each bin
_MIN_SAMPLES = 600  # flat samples needed in all
_MIN_BIN = 100  # samples per bin
_MAX_BINS = 32
_MAX_CLIPPED_SHARE = 0.2  # bins with more of their pixels near a clipping level are left out
_PILE_UP = 1.5  # a clipping level holds this many times the count of the next value (and >= 0.2 %)
#: variance of a bin's variance relative to 2 var**2 / n: neighbouring 3x3 details overlap (the sum
#: of squared correlations of the detail over all lags is (1 + 8/9 + 1/18)**2 = 3.78)
_DETAIL_OVERLAP = 3.78
_CF = math.sqrt(1.5)


class NoiseEstimationError(ValueError):
    """The image does not allow a Poisson-Gaussian estimate; the message says why."""


class NoiseModelWarning(UserWarning):
    """The fit uses another noise model than the one asked for (the message says which and why)."""


# -- image helpers -----------------------------------------------------------------------------
def _window_sum(x: np.ndarray, weights: np.ndarray, step: int, r: int) -> np.ndarray:
    """Correlation of the ``(N, H, W)`` stack ``x`` with a small kernel whose taps are ``step`` px
    apart, on the interior ``[r:H-r, r:W-r]``."""
    k = weights.shape[0] // 2
    h, w = x.shape[-2:]
    out = np.zeros((x.shape[0], h - 2 * r, w - 2 * r))
    for i in range(weights.shape[0]):
        for j in range(weights.shape[1]):
            if weights[i, j] != 0:
                dy, dx = (i - k) * step, (j - k) * step
                out += weights[i, j] * x[:, r + dy:h - r + dy, r + dx:w - r + dx]
    return out


def _box(x: np.ndarray, radius: int, r: int) -> np.ndarray:
    return _window_sum(x, np.full((2 * radius + 1,) * 2, 1.0 / (2 * radius + 1) ** 2), 1, r)


def _any_near(bad: np.ndarray, radius: int, r: int) -> np.ndarray:
    """True where a ``2 * radius + 1`` square around the pixel (interior ``r``) holds a bad pixel."""
    return _window_sum(bad.astype(np.float64), np.ones((2 * radius + 1,) * 2), 1, r) > 0


def clip_levels(values: np.ndarray) -> tuple[float | None, float | None]:
    """The image's clipping levels, if any: ``(low, high)``.

    A level is the darkest (or brightest) value held by at least 0.2 % of the pixels (with at most
    0.05 % of the pixels beyond it), where it
    holds at least 1.5 times as many pixels as the next value: clipped data pile up at the bound
    (an 8-bit frame's 255, a camera's 0, a detector floor), unclipped data thin out towards their
    extremes. Continuous (float) data without exact repeats have none.
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, None
    uniq, counts = np.unique(v, return_counts=True)
    if len(uniq) < 3:
        return None, None
    least = max(2, int(0.002 * v.size))
    stray = 0.0005 * v.size  # a few values beyond the level (a hot or dead pixel) are tolerated

    def level(order: np.ndarray) -> float | None:
        beyond = 0
        for n, i in enumerate(order[:-1]):
            if counts[i] >= least:
                return float(uniq[i]) if counts[i] >= _PILE_UP * counts[order[n + 1]] else None
            beyond += counts[i]
            if beyond > stray:
                return None
        return None

    idx = np.arange(len(uniq))
    return level(idx), level(idx[::-1])


# -- estimation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseEstimate:
    """Poisson-Gaussian parameters measured on one image (input units).

    Attributes
    ----------
    gain : float
        ``a``: growth of the noise variance per unit of intensity.
    zero_variance : float
        ``b``: the variance at intensity 0, ``read_variance - gain * offset`` (negative when the
        camera adds an offset and the read noise is small).
    gain_t : float
        The gain in standard errors (from the scatter of the bins about the line).
    growth : float
        Fitted variance at the bright end of the image (98th percentile of the local mean) over that
        at the dark end (2nd percentile); ``inf`` when the dark end's is not positive.
    correlation_factor : float
        Factor applied to the 3x3 detail's variances for noise correlated between neighbours
        (1.0 for white noise).
    intensity_range : (float, float)
        The 2nd and 98th percentiles of the local mean.
    clipped : (float or None, float or None)
        The clipping levels found (:func:`clip_levels`).
    bins : list of (mean, variance, count)
        The measured points the line was fitted to.
    """

    gain: float
    zero_variance: float
    gain_t: float
    growth: float
    correlation_factor: float
    intensity_range: tuple[float, float]
    clipped: tuple[float | None, float | None]
    bins: list[tuple[float, float, int]] = field(repr=False)

    def variance(self, z):
        """The fitted noise variance at intensity ``z``."""
        return self.gain * np.asarray(z, np.float64) + self.zero_variance

    @property
    def poissonian(self) -> bool:
        """Whether the variance grows with intensity enough for the Poisson-Gaussian model."""
        return self.gain > 0 and self.gain_t >= MIN_SLOPE_T and self.growth >= GROWTH_THRESHOLD

    def model(self) -> PoissonGaussian:
        """The :class:`PoissonGaussian` of this estimate (the smallest offset that explains it).

        Raises
        ------
        NoiseEstimationError
            When the gain is not positive (the variance does not grow with intensity).
        """
        if not self.gain > 0:
            raise NoiseEstimationError(f"the noise variance does not grow with intensity (fitted gain "
                                       f"{self.gain:.4g}): there is no Poisson component to model")
        b = self.zero_variance
        return PoissonGaussian(self.gain, max(b, 0.0), max(-b, 0.0) / self.gain)


def _pool(image: np.ndarray, known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H, W)`` float64 planes (channels as separate planes) and their unusable pixels."""
    x = np.asarray(image, np.float64)
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 3:
        x = np.moveaxis(x, -1, 0)
    else:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if known is not None:
        bad |= ~np.broadcast_to(np.asarray(known, bool)[None], x.shape)
    return np.where(bad, 0.0, x), bad


def estimate_noise(image, known: np.ndarray | None = None) -> NoiseEstimate:
    """Estimate the Poisson-Gaussian noise (1) of one image (see the module docstring).

    Parameters
    ----------
    image : array
        ``(H, W)`` or ``(H, W, C)`` in the input's units; channels are pooled (one camera).
    known : array, optional
        ``(H, W)`` bool, False where a pixel is not measured (left out, with its neighbours).

    Returns
    -------
    NoiseEstimate

    Raises
    ------
    NoiseEstimationError
        When the image does not allow an estimate: constant, not positive anywhere, too small, all
        clipped, or without enough flat pixels at enough distinct intensities.
    """
    x, bad = _pool(image, known)
    vals = x[~bad]
    if vals.size == 0:
        raise NoiseEstimationError("the image has no finite, measured values")
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        raise NoiseEstimationError(f"the image is constant ({lo:g}): there is no noise to measure")
    if hi <= 0:
        raise NoiseEstimationError("the image has no positive values: it is not a photon count "
                                   "(give noise_model='gaussian', or the camera's parameters)")
    h, w = x.shape[-2:]
    r = _WIDE_STRIDE
    if min(h, w) < 2 * r + 8:
        raise NoiseEstimationError(f"a {h}x{w} image is too small to measure its noise (at least "
                                   f"{2 * r + 8} px a side)")
    low, high = clip_levels(vals)
    clipped = bad.copy()
    if low is not None:
        clipped |= x <= low
    if high is not None:
        clipped |= x >= high
    if clipped[~bad].all():
        raise NoiseEstimationError("every pixel is at a clipping level (saturated or at the floor): "
                                   "there is no noise to measure")
    detail = _window_sum(x, _DETAIL, 1, r)
    mean = _box(x, _MEAN_RADIUS, r)
    near_clip = _any_near(clipped, _MEAN_RADIUS, r)
    # structure: gradient and curvature of the 3x3 mean (a ranking within each bin, no threshold)
    smooth = _box(x, 1, 1)
    sh, sw = smooth.shape[-2:]
    k = r - 1
    c = smooth[:, k:sh - k, k:sw - k]
    gy = smooth[:, k + 1:sh - k + 1, k:sw - k] - smooth[:, k - 1:sh - k - 1, k:sw - k]
    gx = smooth[:, k:sh - k, k + 1:sw - k + 1] - smooth[:, k:sh - k, k - 1:sw - k - 1]
    curv = (smooth[:, k + 2:sh - k + 2, k:sw - k] + smooth[:, k - 2:sh - k - 2, k:sw - k]
            + smooth[:, k:sh - k, k + 2:sw - k + 2] + smooth[:, k:sh - k, k - 2:sw - k - 2] - 4 * c)
    structure = np.abs(gx) + np.abs(gy) + 0.5 * np.abs(curv)

    all_mean = mean[~_any_near(bad, _MEAN_RADIUS, r)]
    z_lo, z_hi = (float(q) for q in np.quantile(all_mean, [0.02, 0.98])) if all_mean.size else (lo, hi)
    valid = ~near_clip
    if int(valid.sum()) < 2 * _MIN_SAMPLES:
        raise NoiseEstimationError(f"too few pixels away from clipping levels and unmeasured pixels "
                                   f"({int(valid.sum())}; clipping at {low}, {high}) to measure the noise")
    m_all, d_all, s_all = mean.ravel(), detail.ravel(), structure.ravel()
    clip_all = near_clip.ravel()
    edges = np.quantile(m_all[~clip_all], np.linspace(0, 1, min(_MAX_BINS, int(valid.sum()) // (2 * _MIN_BIN)) + 1))
    edges = np.unique(edges)
    which = np.clip(np.searchsorted(edges, m_all, side="right") - 1, 0, len(edges) - 2)
    points, flat_index = [], []
    for b in range(len(edges) - 1):
        in_bin = which == b
        total = int(in_bin.sum())
        usable = in_bin & ~clip_all
        n_usable = int(usable.sum())
        if total == 0 or n_usable < 2 * _MIN_BIN or (total - n_usable) > _MAX_CLIPPED_SHARE * total:
            continue
        idx = np.flatnonzero(usable)
        idx = idx[np.argsort(s_all[idx], kind="stable")[: max(_MIN_BIN, int(_KEEP * n_usable))]]
        d = d_all[idx]
        med = np.median(d)
        spread = 1.4826 * np.median(np.abs(d - med))
        if spread > 0:
            keep = np.abs(d - med) <= 4 * spread
            idx, d = idx[keep], d[keep]
        if len(d) < _MIN_BIN:
            continue
        points.append((float(m_all[idx].mean()), float(d.var(ddof=1)), len(d)))
        flat_index.append(idx)
    if sum(p[2] for p in points) < _MIN_SAMPLES or len(points) < 3:
        raise NoiseEstimationError(f"no usable flat region: {len(points)} intensity level(s) with enough flat "
                                   f"pixels away from clipping (3 needed)")
    factor = _correlation_factor(x, bad | clipped, np.concatenate(flat_index), detail.ravel())
    m = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points]) * factor
    n = np.array([p[2] for p in points], np.float64)
    if not (v > 0).any():
        raise NoiseEstimationError("the flat regions have no noise (constant values)")
    # the variance cannot vanish above the image's dark end (the floor, or the darkest local means):
    # a line that reaches 0 higher up was extrapolated from brighter bins; keep it through 0 there
    dark = low if low is not None else z_lo
    a, b, t = _fit_line(m, v, n)
    if a > 0 and -b / a > dark:
        a, b, t = _fit_line(m, v, n, through=dark)
    var_lo, var_hi = a * z_lo + b, a * z_hi + b
    growth = math.inf if var_lo <= 1e-9 * max(abs(var_hi), 1e-300) else float(var_hi / var_lo)
    return NoiseEstimate(float(a), float(b), float(t), float(growth), float(factor), (z_lo, z_hi), (low, high),
                         [(float(p), float(q), int(k)) for p, q, k in zip(m, v, n)])


def _fit_line(m: np.ndarray, v: np.ndarray, n: np.ndarray, through: float | None = None
              ) -> tuple[float, float, float]:
    """Weighted least squares ``v = a m + b`` (weights ``n / model**2``, iterated), or ``v = a (m - through)``
    when ``through`` is given; returns ``(a, b, t)``, ``t`` the gain over its standard error."""
    floor = 0.25 * float(v[v > 0].min())
    model = np.maximum(v, floor)
    x = np.stack([m, np.ones_like(m)], 1) if through is None else (m - through)[:, None]
    for _ in range(6):
        wts = n / np.maximum(model, floor) ** 2
        xtwx = x.T @ (x * wts[:, None])
        if abs(np.linalg.det(xtwx)) < 1e-300:
            return 0.0, float(np.average(v, weights=n)), 0.0
        coef = np.linalg.solve(xtwx, x.T @ (wts * v))
        model = x @ coef
    a = float(coef[0])
    b = float(coef[1]) if through is None else -a * through
    wts = n / np.maximum(model, floor) ** 2
    dof = max(len(m) - x.shape[1], 1)
    scatter = max(float((wts * (v - model) ** 2).sum()) / dof, 2.0 * _DETAIL_OVERLAP)
    cov = np.linalg.inv(x.T @ (x * wts[:, None])) * scatter
    se = math.sqrt(max(float(cov[0, 0]), 1e-300))
    return a, b, a / se


def _correlation_factor(x: np.ndarray, unusable: np.ndarray, flat: np.ndarray, detail: np.ndarray) -> float:
    """How much more variance the noise has than the 3x3 detail sees: 1.0 for white noise."""
    import torch

    from .stopping import CORRELATED_NOISE_THRESHOLD, noise_correlation

    if noise_correlation(torch.from_numpy(x)) <= CORRELATED_NOISE_THRESHOLD:
        return 1.0
    r = _WIDE_STRIDE
    wide = _window_sum(x, _DETAIL, r, r).ravel()
    # the 3x3 detail on the flat pixels the bins used, the stride-4 one on every usable pixel: the
    # ranking by the 3x3 mean's gradient picks pixels where correlated noise happens to be locally
    # flat (its 3x3 detail there is low, its stride-4 detail 40 % too low: tested), so the full
    # variance is what the ratio must restore; median absolute values keep the few edges out
    idx = np.flatnonzero(~_any_near(unusable, r, r).ravel())
    flat = flat[~_any_near(unusable, r, r).ravel()[flat]]
    if len(idx) < _MIN_SAMPLES or len(flat) < _MIN_SAMPLES:
        return 1.0
    near = float(np.median(np.abs(detail[flat])))
    return max(1.0, (float(np.median(np.abs(wide[idx]))) / near) ** 2) if near > 0 else 1.0


def choose_noise_model(estimate: NoiseEstimate | None) -> str:
    """``'poisson-gaussian'`` when ``estimate`` says the variance grows with intensity, else ``'gaussian'``."""
    return "poisson-gaussian" if estimate is not None and estimate.poissonian else "gaussian"


# -- the transform -----------------------------------------------------------------------------
def _anscombe_inverse_cf(d: np.ndarray) -> np.ndarray:
    """Makitalo & Foi (2011): closed-form approximation of the exact unbiased inverse of ``2 sqrt(y + 3/8)``."""
    d = np.maximum(np.asarray(d, np.float64), 1e-6)
    return 0.25 * d ** 2 + 0.25 * _CF / d - 1.375 / d ** 2 + 0.625 * _CF / d ** 3 - 0.125


class PoissonGaussian:
    """The noise model (1) with its stabilising transform and exact unbiased inverse.

    Parameters
    ----------
    gain : float
        Intensity units per photon (> 0).
    read_variance : float
        Variance of the Gaussian read noise in the input's units squared (>= 0).
    offset : float
        The read noise's mean (the camera's pedestal), in the input's units.

    Raises
    ------
    ValueError
        For a gain that is not a positive finite number, or a negative or non-finite read variance
        or a non-finite offset.
    """

    def __init__(self, gain: float, read_variance: float = 0.0, offset: float = 0.0):
        try:
            gain, read_variance, offset = float(gain), float(read_variance), float(offset)
        except (TypeError, ValueError):
            raise ValueError(f"noise parameters must be numbers, got gain={gain!r}, read_variance="
                             f"{read_variance!r}, offset={offset!r}") from None
        if not (math.isfinite(gain) and gain > 0):
            raise ValueError(f"the noise gain must be a positive number (intensity units per photon), got {gain!r}")
        if not (math.isfinite(read_variance) and read_variance >= 0):
            raise ValueError(f"the read-noise variance must be a number >= 0 (input units squared), got "
                             f"{read_variance!r}")
        if not math.isfinite(offset):
            raise ValueError(f"the noise offset must be a finite number, got {offset!r}")
        self.gain, self.read_variance, self.offset = gain, read_variance, offset
        self._table: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return (f"PoissonGaussian(gain={self.gain:.6g}, read_variance={self.read_variance:.6g}, "
                f"offset={self.offset:.6g})")

    @property
    def sigma2(self) -> float:
        """Read-noise variance in photons squared."""
        return self.read_variance / self.gain ** 2

    def variance(self, z):
        """Noise variance at mean intensity ``z`` (input units)."""
        return self.gain * (np.asarray(z, np.float64) - self.offset) + self.read_variance

    def stabilise(self, z) -> np.ndarray:
        """The generalised Anscombe transform: noise of about unit variance (float64)."""
        photons = (np.asarray(z, np.float64) - self.offset) / self.gain
        return 2.0 * np.sqrt(np.maximum(photons + 0.375 + self.sigma2, 0.0))

    def expected(self, photons) -> np.ndarray:
        """``E[f(z)]`` for a mean of ``photons`` photons (numerical, exact up to quadrature)."""
        y = np.atleast_1d(np.asarray(photons, np.float64))
        kmax = int(y.max() + 12 * math.sqrt(y.max() + 1) + 30)
        k = np.arange(kmax + 1, dtype=np.float64)
        nodes, weights = np.polynomial.hermite.hermgauss(64)
        s = math.sqrt(self.sigma2)
        inner = k[:, None] + 0.375 + self.sigma2 + math.sqrt(2.0) * s * nodes[None, :]
        g = (2.0 * np.sqrt(np.maximum(inner, 0.0)) * weights[None, :]).sum(1) / math.sqrt(math.pi)
        lgam = np.array([math.lgamma(i + 1.0) for i in k])
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = k[None, :] * np.log(y[:, None]) - y[:, None] - lgam[None, :]
        logp[:, 0] = np.where(y == 0, 0.0, logp[:, 0])
        p = np.exp(np.where(np.isfinite(logp), logp, -np.inf))
        return (p * g[None, :]).sum(1)

    def _inverse_table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._table is None:
            y = np.linspace(0.0, math.sqrt(EXACT_INVERSE_PHOTONS), 801) ** 2
            self._table = (self.expected(y), y)
        return self._table

    def inverse(self, d) -> np.ndarray:
        """The exact unbiased inverse: the intensity (input units) whose expected transform is ``d``.

        Values below the transform's expectation at zero photons map to ``offset`` (zero photons).
        """
        d = np.asarray(d, np.float64)
        ed, y = self._inverse_table()
        photons = np.interp(d, ed, y, left=0.0)
        tail = d > ed[-1]
        if tail.any():
            photons = np.where(tail, _anscombe_inverse_cf(d) - self.sigma2, photons)
        return photons * self.gain + self.offset

    def as_dict(self) -> dict[str, float]:
        return {"gain": self.gain, "read_variance": self.read_variance, "offset": self.offset}


# -- settings and the per-plane plan --------------------------------------------------------------
def check_noise_settings(settings: Any, task: str) -> None:
    """Validate the noise fields of ``settings`` for ``task`` (clear errors before any fit).

    Raises
    ------
    ValueError
        For an unknown ``noise_model``; explicit parameters with the Gaussian model; a gain that is
        not positive or a negative read variance; a gain without a read variance or vice versa; the
        Poisson-Gaussian model for super-resolution or inpainting (not supported).
    """
    model = getattr(settings, "noise_model", "gaussian")
    if model not in NOISE_MODELS:
        raise ValueError(f"unknown noise_model {model!r}; use one of {', '.join(map(repr, NOISE_MODELS))}")
    gain, read, offset = (getattr(settings, f"noise_{k}", None) for k in ("gain", "read_variance", "offset"))
    explicit = gain is not None or read is not None or offset is not None
    if explicit:
        if model == "gaussian":
            raise ValueError("noise_gain/noise_read_variance/noise_offset describe the Poisson-Gaussian model; "
                             "give noise_model='poisson-gaussian' with them (the default model, 'gaussian', "
                             "has no use for them)")
        if gain is None or read is None:
            raise ValueError("give both noise_gain (intensity units per photon) and noise_read_variance (the read "
                             "noise's variance, input units squared; 0 for a photon counter), or neither to "
                             "estimate them from the image")
        PoissonGaussian(gain, read, 0.0 if offset is None else offset)  # raises for bad values
    if task != "denoise" and (model == "poisson-gaussian" or explicit):
        raise ValueError(f"noise_model='poisson-gaussian' is available for denoising only, not {task!r}; "
                         "use noise_model='gaussian' (the default 'auto' is Gaussian there)")


@dataclass
class NoisePlan:
    """How one plane is fitted: its noise model, and the maps to and from the fit's ``[0, 1]`` domain.

    Attributes
    ----------
    model : {'gaussian', 'poisson-gaussian'}
        What the fit uses.
    requested : str
        The ``noise_model`` setting.
    channels : list of PoissonGaussian
        Per channel (one entry shared by all channels when pooled); empty for the Gaussian model.
    low, scale : float
        The stabilised plane's map to ``[0, 1]``: ``(f(z) - low) / scale``.
    estimate : NoiseEstimate or None
        What the image measured (None with explicit parameters, or when it could not be measured).
    source : {'estimated', 'given', None}
    note : str or None
        Why the fit uses the Gaussian model where the Poisson-Gaussian one was asked for or
        considered (``'auto'`` on a plane it cannot measure); issued as a :class:`NoiseModelWarning`
        when the Poisson-Gaussian model was asked for.
    """

    model: str
    requested: str
    channels: list[PoissonGaussian] = field(default_factory=list)
    low: float = 0.0
    scale: float = 1.0
    estimate: NoiseEstimate | None = None
    source: str | None = None
    note: str | None = None

    @property
    def stabilised(self) -> bool:
        return self.model == "poisson-gaussian"

    @property
    def level(self) -> float | None:
        """Noise variance of the normalised stabilised target (None for the Gaussian model)."""
        return 1.0 / self.scale ** 2 if self.stabilised else None

    def _each(self, plane: np.ndarray, fn) -> np.ndarray:
        x = np.asarray(plane, np.float64)
        if len(self.channels) == 1:
            return fn(self.channels[0], x)
        return np.stack([fn(model, x[..., i]) for i, model in enumerate(self.channels)], axis=-1)

    def normalise(self, plane: np.ndarray) -> np.ndarray:
        """Input units ``(h, w, C)`` -> the stabilised plane in ``[0, 1]`` (float32)."""
        return ((self._each(plane, lambda m, v: m.stabilise(v)) - self.low) / self.scale).astype(np.float32)

    def restore(self, x01: np.ndarray) -> np.ndarray:
        """``[0, 1]`` (the fit's output) -> input units through the exact unbiased inverse (float32)."""
        d = np.asarray(x01, np.float64) * self.scale + self.low
        return self._each(d, lambda m, v: m.inverse(v)).astype(np.float32)

    def history(self) -> dict[str, list]:
        """Entries for a fit's ``history`` (lists, as the other entries)."""
        out: dict[str, list] = {"noise_model": [self.model], "noise_model_requested": [self.requested]}
        if self.channels:
            out["noise_source"] = [self.source]
            for key in ("gain", "read_variance", "offset"):
                out[f"noise_{key}"] = [getattr(m, key) for m in self.channels]
            out["noise_scale"] = [self.scale]
        if self.estimate is not None:
            e = self.estimate
            out.update(noise_estimated_gain=[e.gain], noise_estimated_zero_variance=[e.zero_variance],
                       noise_gain_t=[e.gain_t], noise_growth=[e.growth if math.isfinite(e.growth) else None],
                       noise_correlation_factor=[e.correlation_factor])
        if self.note:
            out["noise_note"] = [self.note]
        return out


def given_model(settings: Any) -> PoissonGaussian | None:
    """The camera's :class:`PoissonGaussian` where ``settings`` give its parameters, else None."""
    gain = getattr(settings, "noise_gain", None)
    if gain is None:
        return None
    offset = getattr(settings, "noise_offset", None)
    return PoissonGaussian(gain, settings.noise_read_variance, 0.0 if offset is None else offset)


def channel_groups(x: np.ndarray, rgb: bool) -> list[np.ndarray]:
    """The parts of a plane ``(H, W, C)`` measured apart: all channels pooled for RGB (one camera) or
    a single channel, else each channel (each its own detector)."""
    return [x] if (rgb or x.shape[-1] == 1) else [x[..., i] for i in range(x.shape[-1])]


def plan_noise(plane: np.ndarray, settings: Any, task: str = "denoise", rgb: bool = False,
               warn: bool = True) -> NoisePlan:
    """The :class:`NoisePlan` of one plane ``(H, W, C)`` (input units) under ``settings``.

    ``noise_model='auto'`` measures the plane (:func:`estimate_noise`, channels pooled for RGB,
    one estimate per channel otherwise: each channel its own detector) and uses the
    Poisson-Gaussian model where :func:`choose_noise_model` says so (for multi-channel planes: where
    every channel says so). ``'poisson-gaussian'`` uses the given parameters, or the estimate;
    where the plane does not allow one it falls back to the Gaussian model and warns
    (:class:`NoiseModelWarning`). ``'gaussian'`` measures nothing.
    """
    requested = getattr(settings, "noise_model", "gaussian")
    if requested == "gaussian" or task != "denoise":
        return NoisePlan("gaussian", requested)
    x = np.asarray(plane, np.float64)
    if x.ndim == 2:
        x = x[..., None]
    model = given_model(settings)
    if model is not None:
        return _stabilised(NoisePlan("poisson-gaussian", requested, [model], source="given"), x)
    groups = channel_groups(x, rgb)
    estimates, problem = [], None
    for g in groups:
        try:
            estimates.append(estimate_noise(g))
        except NoiseEstimationError as err:
            problem = str(err)
            break
    if problem is not None or not estimates:
        note = f"cannot estimate the Poisson-Gaussian noise of this plane ({problem}); fitting with the Gaussian model"
        if requested == "poisson-gaussian" and warn:
            warnings.warn(note, NoiseModelWarning, stacklevel=2)
        return NoisePlan("gaussian", requested, note=note)  # 'auto': said in the record, not warned
    choice = "poisson-gaussian" if all(choose_noise_model(e) == "poisson-gaussian" for e in estimates) else "gaussian"
    first = estimates[0]
    if requested == "auto" and choice == "gaussian":
        return NoisePlan("gaussian", requested, estimate=first)
    try:
        models = [e.model() for e in estimates]
    except NoiseEstimationError as err:
        note = f"{err}; fitting with the Gaussian model"
        if warn:
            warnings.warn(note, NoiseModelWarning, stacklevel=2)
        return NoisePlan("gaussian", requested, estimate=first, note=note)
    plan = NoisePlan("poisson-gaussian", requested, models, estimate=first, source="estimated")
    return _stabilised(plan, x)


def _stabilised(plan: NoisePlan, x: np.ndarray) -> NoisePlan:
    """Set the plan's map from the stabilised plane to ``[0, 1]``."""
    d = plan._each(x, lambda m, v: m.stabilise(v))
    d = d[np.isfinite(d)]
    lo, hi = (float(d.min()), float(d.max())) if d.size else (0.0, 1.0)
    plan.low, plan.scale = (lo - 0.5, 1.0) if hi <= lo else (lo, hi - lo)
    return plan
