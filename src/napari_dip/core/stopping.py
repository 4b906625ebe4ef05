"""No-ground-truth stopping rules.

``WindowedVariance`` is ES-WMV (Wang et al., "Early Stopping for Deep Image Prior", TMLR 2023):
DIP's output first converges towards the image, then drifts as the net fits the noise. The
windowed moving variance

    VAR_t = 1/W * sum_{i=t-W+1..t} ||x_i - mean(x_{t-W+1..t})||^2 / n_pixels

of the last ``W`` outputs is low while the output is stable. The rule tracks its minimum and stops
once ``patience`` iterations pass without a new minimum; the estimate returned is the output
average (EMA) at the minimum, which averages exactly the window that was most stable. Outputs are
sampled every ``every`` iterations to bound memory (``W / every`` images kept) and host syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["StopCheck", "WindowedVariance"]


@dataclass(frozen=True)
class StopCheck:
    """Outcome of one update: the signal (None if not computed), a new best, and a stop request."""

    signal: float | None = None
    improved: bool = False
    stop: bool = False


class WindowedVariance:
    """ES-WMV: windowed moving variance of the outputs with patience.

    Parameters
    ----------
    window : int
        Window length ``W`` in iterations.
    patience : int
        Iterations without a new minimum after which to stop.
    every : int
        Sample one output every ``every`` iterations (the window holds ``window // every``).
    min_iterations : int
        Never request a stop before this iteration.
    """

    def __init__(self, window: int = 100, patience: int = 500, every: int = 5, min_iterations: int = 100):
        if window < 2 or patience < 1 or every < 1:
            raise ValueError("window must be >= 2, patience and every >= 1")
        self.every = int(every)
        self.samples = max(2, window // every)
        self.patience = int(patience)
        self.min_iterations = int(min_iterations)
        self._buffer: torch.Tensor | None = None
        self._count = 0
        self.best_signal = math.inf
        self.best_iteration = 0

    def update(self, iteration: int, output: torch.Tensor) -> StopCheck:
        """Feed the output of ``iteration`` (1-based); returns the check."""
        if iteration % self.every:
            return StopCheck()
        out = output.detach().float()
        if self._buffer is None:
            self._buffer = torch.empty((self.samples, *out.shape), dtype=out.dtype, device=out.device)
        self._buffer[self._count % self.samples].copy_(out)
        self._count += 1
        if self._count < self.samples:
            return StopCheck()
        signal = float(self._buffer.var(dim=0, unbiased=False).mean())
        improved = signal < self.best_signal
        if improved:
            self.best_signal, self.best_iteration = signal, iteration
        stop = iteration >= self.min_iterations and iteration - self.best_iteration >= self.patience
        return StopCheck(signal, improved, stop)
