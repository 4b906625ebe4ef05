"""No-ground-truth stopping rules.

Both rules watch a signal every ``every`` iterations, remember the iteration where it was lowest
(the fit loop keeps the averaged output from that iteration as the estimate) and request a stop
once ``patience`` iterations pass without a new minimum.

``HoldOut`` (default, ``stop_rule='holdout'``)
    A random ``fraction`` of the measured pixels (seeded) is kept out of the loss. The signal is
    the mean squared error of the averaged output (through the forward operator) on those
    held-out pixels. For noise that is independent from pixel to pixel (Gaussian, Poisson,
    camera read noise) its expectation is ``MSE(estimate, clean) + sigma^2`` on those pixels, so
    its minimum tracks the minimum of the true error without knowing the clean image. For
    inpainting and super-resolution it measures how well the net predicts pixels it never saw.
    Cost: the held-out pixels (5 % by default) are not fitted, only predicted.

``WindowedVariance`` (``stop_rule='wmv'``)
    ES-WMV (Wang et al., "Early Stopping for Deep Image Prior", TMLR 2023): the windowed moving
    variance ``VAR_t = 1/W sum_i ||x_i - mean(x)||^2 / n`` of the last ``W`` raw outputs. Outputs
    are sampled every ``every`` iterations to bound memory and host syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["StopCheck", "HoldOut", "WindowedVariance", "holdout_mask"]


@dataclass(frozen=True)
class StopCheck:
    """Outcome of one update: the signal (None if not computed), a new best, and a stop request."""

    signal: float | None = None
    improved: bool = False
    stop: bool = False


class _MinimumTracker:
    """Shared minimum/patience logic."""

    def __init__(self, patience: int, every: int, min_iterations: int):
        if patience < 1 or every < 1:
            raise ValueError("patience and every must be >= 1")
        self.patience, self.every, self.min_iterations = int(patience), int(every), int(min_iterations)
        self.best_signal = math.inf
        self.best_iteration = 0

    def _check(self, iteration: int, signal: float) -> StopCheck:
        improved = signal < self.best_signal
        if improved:
            self.best_signal, self.best_iteration = signal, iteration
        stop = iteration >= self.min_iterations and iteration - self.best_iteration >= self.patience
        return StopCheck(signal, improved, stop)


def holdout_mask(shape: tuple[int, int], fraction: float, seed: int) -> torch.Tensor:
    """A seeded ``(1, 1, H, W)`` float mask with about ``fraction`` of pixels set (at least one)."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    mask = (torch.rand((1, 1, *shape), generator=g) < fraction).float()
    if mask.sum() == 0:
        mask.view(-1)[int(torch.randint(mask.numel(), (1,), generator=g))] = 1.0
    return mask


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

    def __init__(self, operator, target: torch.Tensor, held_out: torch.Tensor, patience: int = 400,
                 every: int = 5, min_iterations: int = 100):
        super().__init__(patience, every, min_iterations)
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


class WindowedVariance(_MinimumTracker):
    """ES-WMV: windowed moving variance of the raw outputs with patience."""

    def __init__(self, window: int = 100, patience: int = 400, every: int = 5, min_iterations: int = 100):
        super().__init__(patience, every, min_iterations)
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
