"""No-ground-truth stopping rules.

Both rules watch a signal every ``every`` iterations, remember the iteration where it was lowest
(the fit loop keeps the averaged output from that iteration as the estimate) and request a stop
once ``patience`` iterations pass without a new minimum.

``HoldOut`` (``stop_rule='holdout'``)
    A random ``fraction`` of the measured pixels (seeded) is kept out of the loss. The signal is
    the mean squared error of the averaged output (through the forward operator) on those
    held-out pixels. For noise that is independent from pixel to pixel (Gaussian, Poisson,
    camera read noise) its expectation is ``MSE(estimate, clean) + sigma^2`` on those pixels, so
    its minimum tracks the minimum of the true error without knowing the clean image. For
    inpainting and super-resolution it measures how well the net predicts pixels it never saw.
    Cost: the held-out pixels (5 % by default) are not fitted, only predicted. When denoising small
    images the fraction is raised so that at least 500 values are held out (:func:`holdout_fraction_for`):
    the signal's noise falls only with the count, and ~200 held-out pixels (5 % of a 64 px crop)
    ranked iterations hundreds of steps apart by chance on real microscopy frames.

``WindowedVariance`` (``stop_rule='wmv'``)
    ES-WMV (Wang et al., "Early Stopping for Deep Image Prior", TMLR 2023): the windowed moving
    variance ``VAR_t = 1/W sum_i ||x_i - mean(x)||^2 / n`` of the last ``W`` raw outputs. Outputs
    are sampled every ``every`` iterations to bound memory and host syncs. The minimum marks the
    raw outputs' best moment; the averaged output lags them, so the fit keeps the average
    ``delay`` iterations later (:func:`averaging_lag`).

``stop_rule='auto'`` (default; see :func:`choose_rule`)
    The hold-out assumption fails when the noise is correlated between neighbouring pixels (e.g.
    FMD's wide-field frames, whose noise is band-limited: correlation 0.58 at lag 1): the network
    then predicts the held-out pixels' noise from their fitted neighbours, and the signal keeps
    falling while the true error rises. ``'auto'`` estimates the noise's short-range correlation
    from the noisy image alone (:func:`noise_correlation`) and uses the discrepancy rule above
    :data:`CORRELATED_NOISE_THRESHOLD`, the hold-out otherwise. Only denoising (identity operator)
    is tested: for inpainting and super-resolution the hold-out measures the task itself.

``Discrepancy`` (``stop_rule='discrepancy'``)
    Morozov's discrepancy principle: the averaged output is kept, and the fit stops, when its mean
    squared residual to the measurement first falls to the noise variance, estimated from the
    noisy image alone (:func:`noise_variance`). Unlike ES-WMV its stop moves with the image: on
    FMD wide-field crops the residual of the best average was 0.92-1.08 times the estimate at
    64, 128 and 256 px, while ES-WMV's variance minimum stayed at iteration ~120 and the best
    average moved from ~180 to ~570. It needs noise of about one level across the image
    (camera read noise); for shot noise the flattest tiles are the dark ones and the estimate is
    too low, so ``'auto'`` uses it only where the hold-out cannot work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["StopCheck", "HoldOut", "WindowedVariance", "Discrepancy", "holdout_mask", "noise_correlation",
           "noise_variance", "choose_rule", "averaging_lag", "holdout_fraction_for", "CORRELATED_NOISE_THRESHOLD", "MAX_HOLDOUT_FRACTION"]

#: :func:`noise_correlation` above which ``stop_rule='auto'`` uses ES-WMV. Measured (64 px crops to
#: full 512 px images): Gaussian noise sigma = 25 on 0-255 <= 0.05, sigma = 10 <= 0.18, FMD confocal
#: and two-photon frames <= 0.07, noise-free natural images <= 0.38, FMD wide-field frames 0.53-0.55.
CORRELATED_NOISE_THRESHOLD = 0.45

#: The most :func:`holdout_fraction_for` raises the held-out fraction to on small images.
MAX_HOLDOUT_FRACTION = 0.15


@dataclass(frozen=True)
class StopCheck:
    """Outcome of one update.

    ``signal`` is None where it was not computed; ``improved`` marks a new signal minimum,
    ``capture`` the moment to keep the current averaged output as the estimate (the same moment as
    ``improved`` unless the rule has a ``delay``), and ``stop`` a stop request.
    """

    signal: float | None = None
    improved: bool = False
    stop: bool = False
    capture: bool = False


class _MinimumTracker:
    """Shared minimum/patience logic.

    With ``delay`` > 0 the estimate is captured ``delay`` iterations after a signal minimum (at the
    first update at or after it; a newer minimum before then restarts the wait), and no stop is
    requested while a capture is pending.

    With ``tolerance`` > 0 every new minimum is still captured, but only a minimum more than
    ``tolerance`` (a fraction) below the last such significant one restarts the patience: a signal
    that keeps creeping down by less stops the fit ``patience`` iterations after its last real
    improvement. ``tolerance=1`` lets no later minimum restart the patience: the fit stops
    ``patience`` iterations after its first signal (at ``floor``), whatever the signal does.

    With ``floor`` > 0 signals before iteration ``floor`` are ignored: no minimum (and no estimate)
    is taken from them. A masked fit's estimate is a per-pixel average that needs that many
    iterations to hold several samples of every pixel; a plane that starts warm from its
    neighbour's weights has its lowest hold-out error in its first iterations, before the average
    has any (measured: a warm plane stopped with its iteration-5 estimate, 9.8 dB).
    """

    def __init__(self, patience: int, every: int, min_iterations: int, delay: int = 0, tolerance: float = 0.0,
                 floor: int = 0):
        if patience < 1 or every < 1:
            raise ValueError("patience and every must be >= 1")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        if not 0.0 <= tolerance <= 1.0:
            raise ValueError(f"tolerance must be in [0, 1], got {tolerance}")
        self.patience, self.every, self.min_iterations = int(patience), int(every), int(min_iterations)
        self.delay = int(delay)
        self.tolerance = float(tolerance)
        self.floor = int(floor)
        self.best_signal = math.inf
        self.best_iteration = 0
        self._significant_signal = math.inf
        self._significant_iteration = 0
        self.capture_at: int | None = None

    @property
    def capture_pending(self) -> bool:
        """A signal minimum was seen whose estimate has not been captured yet."""
        return self.capture_at is not None

    def _check(self, iteration: int, signal: float) -> StopCheck:
        if iteration < self.floor:
            return StopCheck(signal, False, False, False)
        improved = signal < self.best_signal
        if improved:
            self.best_signal, self.best_iteration = signal, iteration
        first = self._significant_signal == math.inf  # (inf * 0 is NaN with tolerance 1)
        if first or signal < self._significant_signal * (1.0 - self.tolerance):
            self._significant_signal, self._significant_iteration = signal, iteration
        if self.delay == 0:
            capture = improved
        elif improved:
            self.capture_at, capture = iteration + self.delay, False
        else:
            capture = self.capture_at is not None and iteration >= self.capture_at
            if capture:
                self.capture_at = None
        stop = (iteration >= self.min_iterations and iteration - self._significant_iteration >= self.patience
                and self.capture_at is None)
        return StopCheck(signal, improved, stop, capture)


def holdout_fraction_for(values: int, fraction: float, min_values: int) -> float:
    """The held-out fraction for an image with ``values`` measured values (pixels x channels).

    ``fraction``, raised to ``min_values / values`` where that is larger, but not above
    :data:`MAX_HOLDOUT_FRACTION` (nor below ``fraction``). The hold-out signal's noise falls as
    one over the square root of the held-out count, so small images need a larger share; large
    images keep ``fraction`` and lose no more pixels to validation. Measured on 64 px FMD crops
    (``docs/benchmarks.md``): 5 % (~200 values) vs 12 % (~490) gave final PSNR 33.29 / 33.29 vs
    33.55 / 33.71 dB over 8 frames and two seeds; 25 % lost more to the unfitted pixels (33.15).

    Parameters
    ----------
    values : int
        Measured (known) values of one image: known pixels times channels.
    fraction : float
        The base fraction, in (0, 1).
    min_values : int
        Held-out values wanted at least (0 disables the raise).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    if min_values < 0:
        raise ValueError(f"holdout_min_values must be >= 0, got {min_values}")
    if values <= 0 or min_values == 0:
        return fraction
    return max(fraction, min(MAX_HOLDOUT_FRACTION, min_values / values))


def holdout_mask(shape: tuple[int, int], fraction: float, seed: int) -> torch.Tensor:
    """A seeded ``(1, 1, H, W)`` float mask with about ``fraction`` of pixels set (at least one)."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    mask = (torch.rand((1, 1, *shape), generator=g) < fraction).float()
    if mask.sum() == 0:
        mask.view(-1)[int(torch.randint(mask.numel(), (1,), generator=g))] = 1.0
    return mask


def _tile_residuals(image: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals of ``patch`` x ``patch`` tiles (every channel) after their least-squares plane, and
    their variances; constant (e.g. clipped) tiles are dropped."""
    x = torch.as_tensor(image).detach().to("cpu", torch.float64)
    h, w = x.shape[-2] - x.shape[-2] % patch, x.shape[-1] - x.shape[-1] % patch
    if h == 0 or w == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty.reshape(0, patch * patch), empty
    x = x.reshape(-1, x.shape[-2], x.shape[-1])[:, :h, :w]
    tiles = x.reshape(-1, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4).reshape(-1, patch * patch)
    yy, xx = torch.meshgrid(torch.arange(patch, dtype=torch.float64), torch.arange(patch, dtype=torch.float64),
                            indexing="ij")
    design = torch.stack([torch.ones(patch * patch, dtype=torch.float64), yy.flatten(), xx.flatten()], 1)
    residual = tiles - tiles @ (design @ torch.linalg.pinv(design)).T
    variance = residual.var(dim=1)
    keep = variance > 1e-12
    return residual[keep], variance[keep]


def noise_variance(image: torch.Tensor, patch: int = 8) -> float:
    """The noise variance of ``image``, from the noisy image alone: the median, over ``patch`` x
    ``patch`` tiles (every channel), of the variance left after each tile's least-squares plane.

    The median tile is mostly noise on microscopy and natural images at useful noise levels, and
    the median ignores the edge-laden tiles. Measured on FMD wide-field frames (band-limited read
    noise): 231-257 against 265-291 for the frame minus the 50-frame average (0-255 units), which
    also holds the ground truth's own error. Too low for shot noise (the median tile is dark).

    Returns
    -------
    float
        The estimate in the image's units squared; 0.0 with fewer than 4 non-constant tiles.
    """
    if patch < 3:
        raise ValueError("patch must be >= 3")
    _, variance = _tile_residuals(image, patch)
    return float(variance.median()) if len(variance) >= 4 else 0.0


def noise_correlation(image: torch.Tensor, patch: int = 8, keep: float = 0.3) -> float:
    """Short-range spatial correlation of the noise of ``image``, from the noisy image alone.

    The image is cut into ``patch`` x ``patch`` tiles (every channel separately); a least-squares
    plane is removed from each tile, and the ``keep`` fraction of tiles with the smallest residual
    variance (the flattest: mostly noise) is kept, ignoring constant (e.g. clipped) tiles. On those
    residuals the normalised autocorrelations at lags 1 and 2 (mean of the x and y directions) are
    ``r1`` and ``r2``; the result is ``r1 - r2``.

    For white noise both are about 0. Noise correlated over a pixel or two (binned, interpolated
    or band-limited camera noise) gives ``r1 >> r2`` (FMD wide-field: 0.46 and -0.08). Smooth image
    content left in the flattest tiles is correlated at both lags, so it raises ``r1 - r2`` much
    less than it raises ``r1`` alone.

    Parameters
    ----------
    image : tensor
        ``(..., H, W)``; leading dimensions (batch, channels) are pooled.
    patch : int
        Tile side in pixels.
    keep : float
        Fraction of the tiles (the flattest) that enter the estimate, in (0, 1].

    Returns
    -------
    float
        ``r1 - r2``; 0.0 when the image has fewer than 4 non-constant tiles (no evidence).
    """
    if patch < 3 or not 0 < keep <= 1:
        raise ValueError("patch must be >= 3 and keep in (0, 1]")
    residual, variance = _tile_residuals(image, patch)
    if len(variance) < 4:
        return 0.0
    flattest = torch.sort(variance, stable=True).indices[: max(4, int(len(variance) * keep))]
    r = residual[flattest].reshape(-1, patch, patch)
    power = float((r ** 2).mean())

    def lag(k: int) -> float:
        return float((r[:, :, k:] * r[:, :, :-k]).mean() + (r[:, k:] * r[:, :-k]).mean()) / (2 * power)

    return lag(1) - lag(2)


def choose_rule(target: torch.Tensor, denoising: bool = True,
                threshold: float = CORRELATED_NOISE_THRESHOLD) -> tuple[str, float | None]:
    """The rule ``stop_rule='auto'`` uses for one image: ``'discrepancy'`` for correlated noise, else ``'holdout'``.

    Parameters
    ----------
    target : tensor
        The measurement of one image, ``(..., H, W)``.
    denoising : bool
        Whether the forward operator is the identity; other tasks always get ``'holdout'``.
    threshold : float
        :func:`noise_correlation` above which the noise counts as correlated.

    Returns
    -------
    rule : {'holdout', 'discrepancy'}
    correlation : float or None
        The measured :func:`noise_correlation` (None when not measured).
    """
    if not denoising:
        return "holdout", None
    correlation = noise_correlation(target)
    return ("discrepancy" if correlation > threshold else "holdout"), correlation


class HoldOut(_MinimumTracker):
    """Error of the averaged output on held-out measured pixels (see the module docstring).

    Parameters
    ----------
    operator : callable
        The forward operator ``A``.
    target : tensor
        The measurement ``y``.
    held_out : tensor
        Weight of each measured value in the validation error (1 = held out), broadcastable.
    """

    def __init__(self, operator, target: torch.Tensor, held_out: torch.Tensor, patience: int = 200,
                 every: int = 5, min_iterations: int = 100, tolerance: float = 0.0, floor: int = 0):
        super().__init__(patience, every, min_iterations, tolerance=tolerance, floor=floor)
        self.operator = operator
        self.target = target
        self.held_out = held_out.expand_as(target)
        self.count = float(self.held_out.sum())
        if self.count == 0:
            raise ValueError("no pixel is held out for validation")

    def update(self, iteration: int, output: torch.Tensor, estimate: torch.Tensor) -> StopCheck:
        if iteration % self.every:
            return StopCheck()
        with torch.no_grad():
            err = ((self.operator(estimate.float()) - self.target) ** 2 * self.held_out).sum() / self.count
        return self._check(iteration, float(err))


def averaging_lag(ema: float) -> int:
    """Iterations between the raw outputs' best moment and the averaged output's: its time constant.

    ES-WMV finds when the *raw* outputs are best (their variance is lowest); the averaged output
    (``ema``: ``a <- ema * a + (1 - ema) * x``) weighs outputs from about ``1 / (1 - ema)``
    iterations back, so it is still catching up then and peaks later. Keeping the average one time
    constant after the variance minimum centres its weights on that moment. Measured on FMD
    wide-field crops (``fast``, ``ema=0.99``, ``docs/benchmarks.md``): the average's best came
    60-75 iterations after the variance minimum on 64 px crops and 120-140 on 128 px crops.
    """
    if not 0 <= ema < 1:
        raise ValueError(f"ema must be in [0, 1), got {ema}")
    return 0 if ema == 0 else round(1 / (1 - ema))


class WindowedVariance(_MinimumTracker):
    """ES-WMV: windowed moving variance of the raw outputs with patience.

    ``delay``: iterations after a variance minimum at which the averaged output is kept as the
    estimate (see :func:`averaging_lag`; 0 keeps the average at the minimum itself).
    """

    def __init__(self, window: int = 100, patience: int = 200, every: int = 5, min_iterations: int = 100,
                 delay: int = 0):
        super().__init__(patience, every, min_iterations, delay)
        if window < 2:
            raise ValueError("window must be >= 2")
        self.samples = max(2, window // self.every)
        self._buffer: torch.Tensor | None = None
        self._count = 0

    def update(self, iteration: int, output: torch.Tensor, estimate: torch.Tensor) -> StopCheck:
        if iteration % self.every:
            return StopCheck()
        out = output.detach().float()
        if self._buffer is None:
            self._buffer = torch.empty((self.samples, *out.shape), dtype=out.dtype, device=out.device)
        self._buffer[self._count % self.samples].copy_(out)
        self._count += 1
        if self._count < self.samples:
            return StopCheck()
        return self._check(iteration, float(self._buffer.var(dim=0, unbiased=False).mean()))


class Discrepancy:
    """Morozov's discrepancy principle (see the module docstring).

    Every ``every`` iterations the signal is the mean squared residual, over the measured values,
    between the operator applied to the averaged output and the measurement; the first time it is
    at most ``level`` (the noise variance), after ``min_iterations``, that average is kept and a
    stop is requested. If it never gets there, the fit runs to its cap and keeps the last average.

    Parameters
    ----------
    operator : callable
        The forward operator ``A``.
    target : tensor
        The measurement ``y`` (one image's channels).
    weight : tensor
        Weight of each measured value in the residual (the loss weight: 0 where unknown),
        broadcastable to ``target``.
    level : float
        The residual to stop at, e.g. :func:`noise_variance` of ``target``; must be > 0.
    """

    delay = 0

    def __init__(self, operator, target: torch.Tensor, weight: torch.Tensor, level: float, every: int = 5,
                 min_iterations: int = 100):
        if not level > 0 or not math.isfinite(level):
            raise ValueError(f"the discrepancy level must be a positive number, got {level}")
        if every < 1:
            raise ValueError("every must be >= 1")
        self.operator, self.target, self.level = operator, target, float(level)
        self.weight = weight.expand_as(target)
        self.count = float(self.weight.sum())
        if self.count == 0:
            raise ValueError("no measured value to compare the output with")
        self.every, self.min_iterations = int(every), int(min_iterations)
        self.best_iteration = 0
        self.capture_pending = False

    def update(self, iteration: int, output: torch.Tensor, estimate: torch.Tensor) -> StopCheck:
        if iteration % self.every:
            return StopCheck()
        with torch.no_grad():
            residual = float(((self.operator(estimate.float()) - self.target) ** 2 * self.weight).sum() / self.count)
        reached = iteration >= self.min_iterations and residual <= self.level
        if reached:
            self.best_iteration = iteration
        return StopCheck(residual, reached, reached, reached)
