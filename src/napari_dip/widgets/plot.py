"""A live plot of a fit: the loss, the stopping signal and the chosen stop point.

Uses matplotlib's Qt canvas when matplotlib is installed; otherwise a one-line text fallback, so
the widgets work without it. Redraws are throttled: the fit may yield hundreds of snapshots a
second on a GPU, and the plot must not slow it down.
"""

from __future__ import annotations

import math
import time
from typing import Any

from magicgui.widgets import Container, Label

__all__ = ["FitPlot"]


class FitPlot(Container):
    """Loss (left axis) and stop signal (right axis: hold-out error, residual or ES-WMV variance), log scales, per iteration
    of the plane being fitted, with a dashed line at the iteration whose estimate is kept.

    Parameters
    ----------
    min_interval : float
        Seconds between two redraws while a fit runs.
    """

    def __init__(self, min_interval: float = 0.5, **kwargs: Any):
        super().__init__(labels=False, **kwargs)
        self.min_interval = float(min_interval)
        self.iterations: list[int] = []
        self.losses: list[float] = []
        self.signal_iterations: list[int] = []
        self.signals: list[float] = []
        self.stop_iteration = 0
        self.title = ""
        self._last_draw = 0.0
        self.figure = None
        self.canvas = None
        self.summary = Label(value="")
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - matplotlib missing
            self.summary.value = "(install matplotlib for a live plot of the loss)"
        else:
            self.figure = Figure(figsize=(3.2, 2.2), dpi=90)
            self.figure.subplots_adjust(left=0.2, right=0.8, bottom=0.2, top=0.88)
            self.canvas = FigureCanvasQTAgg(self.figure)
            self.canvas.setMinimumHeight(170)
            self._loss_ax = self.figure.add_subplot(111)
            self._signal_ax = self._loss_ax.twinx()
            (self._loss_line,) = self._loss_ax.plot([], [], color="tab:blue", lw=1, label="loss")
            (self._signal_line,) = self._signal_ax.plot([], [], color="tab:orange", lw=1, label="stop signal")
            self._stop_line = self._loss_ax.axvline(0, color="tab:green", ls="--", lw=1, visible=False)
            self._loss_ax.set_xlabel("iteration", fontsize=8)
            self._loss_ax.set_ylabel("loss", fontsize=8, color="tab:blue")
            self._signal_ax.set_ylabel("stop signal", fontsize=8, color="tab:orange")
            for ax in (self._loss_ax, self._signal_ax):
                ax.tick_params(labelsize=7)
            self.native.layout().addWidget(self.canvas)
        self.append(self.summary)

    def reset(self, title: str = "") -> None:
        """Clear the curves (at the start of a run or of a new plane)."""
        self.iterations.clear()
        self.losses.clear()
        self.signal_iterations.clear()
        self.signals.clear()
        self.stop_iteration = 0
        self.title = title
        self.draw(force=True)

    def add(self, snap: Any) -> None:
        """Append one snapshot's loss and signal; redraw if due (always at a plane's end)."""
        if snap.loss is not None and math.isfinite(snap.loss) and snap.loss > 0:
            self.iterations.append(snap.iteration)
            self.losses.append(snap.loss)
        if snap.stop_signal is not None and math.isfinite(snap.stop_signal) and snap.stop_signal > 0:
            self.signal_iterations.append(snap.iteration)
            self.signals.append(snap.stop_signal)
        self.stop_iteration = int(snap.best_iteration)
        last = snap.stopped or snap.iteration >= snap.total
        self.draw(force=last)

    def draw(self, force: bool = False) -> None:
        """Redraw now if ``force`` or at least ``min_interval`` seconds passed since the last."""
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        stop = f"; estimate from iteration {self.stop_iteration}" if self.stop_iteration else ""
        last_loss = f"loss {self.losses[-1]:.3g}" if self.losses else "no iteration yet"
        self.summary.value = f"{self.title}{': ' if self.title else ''}{last_loss}{stop}"
        if self.canvas is None:
            return
        self._loss_line.set_data(self.iterations, self.losses)
        self._signal_line.set_data(self.signal_iterations, self.signals)
        self._stop_line.set_xdata([self.stop_iteration, self.stop_iteration])
        self._stop_line.set_visible(self.stop_iteration > 0)
        for ax, ys in ((self._loss_ax, self.losses), (self._signal_ax, self.signals)):
            scale = "log" if ys else "linear"
            if ax.get_yscale() != scale:
                ax.set_yscale(scale)
            ax.relim()
            ax.autoscale_view()
        self._loss_ax.set_xlim(0, max(self.iterations[-1] if self.iterations else 1, self.stop_iteration, 1))
        self._loss_ax.set_title(self.title, fontsize=8)
        self.canvas.draw_idle()
