"""A live plot of a fit: the loss, the stopping signal and the chosen stop point.

Uses matplotlib's Qt canvas when matplotlib is installed; otherwise only the one-line summary, so
the widgets work without it. The curves restart for every fit (each plane, and each tile of a
tiled plane). Redraws are throttled (a fit may report many points a second and a matplotlib draw
takes tens of milliseconds in the GUI thread) and skipped while the plot is hidden; colours follow
the napari theme.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from magicgui.widgets import Container, Label

__all__ = ["FitPlot"]


class FitPlot(Container):
    """Loss (left axis) and stop signal (right axis: hold-out error, residual or ES-WMV variance),
    log scales, per iteration of the fit in progress, with a dashed line at the iteration whose
    estimate is kept.

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
        self.draws = 0  # redraws of the canvas (for tests)
        #: says whether the plot is open (e.g. its collapsible section is expanded); None: always
        self.is_open: Callable[[], bool] | None = None
        self._last_draw = 0.0
        self._stale = False
        self.figure = None
        self.canvas = None
        self.colors = {"background": "#23242b", "text": "#f0f1f2", "loss": "#6cb6ff", "signal": "#f5a623",
                       "stop": "#7ed957", "grid": "#565f6c"}
        self.summary = Label(value="")  # one line above the curves: the fit, the last loss, the kept iteration
        from qtpy.QtWidgets import QSizePolicy

        # clipped in a narrow dock rather than widening it
        self.summary.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.append(self.summary)
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - matplotlib missing
            self.summary.value = "(install matplotlib for a live plot of the loss)"
        else:
            self.figure = Figure(figsize=(3.0, 1.8), dpi=90, layout="constrained")
            self.canvas = FigureCanvasQTAgg(self.figure)
            self.canvas.setMinimumHeight(140)
            self.canvas.setMinimumWidth(120)
            self._loss_ax = self.figure.add_subplot(111)
            self._signal_ax = self._loss_ax.twinx()
            (self._loss_line,) = self._loss_ax.plot([], [], lw=1, label="loss")
            (self._signal_line,) = self._signal_ax.plot([], [], lw=1, label="stop signal")
            self._stop_line = self._loss_ax.axvline(0, ls="--", lw=1, visible=False)
            self._loss_ax.set_xlabel("iteration", fontsize=7)
            self._loss_ax.set_ylabel("loss", fontsize=7)
            self._signal_ax.set_ylabel("stop signal", fontsize=7)
            for ax in (self._loss_ax, self._signal_ax):
                ax.tick_params(labelsize=6)
            self.native.layout().addWidget(self.canvas)
            self.set_colors(self.colors)

    # -- appearance ---------------------------------------------------------------------------
    def set_colors(self, colors: dict[str, str]) -> None:
        """Apply theme colours: ``background``, ``text``, ``loss``, ``signal``, ``stop``, ``grid``."""
        self.colors = {**self.colors, **colors}
        if self.canvas is None:
            return
        c = self.colors
        self.figure.set_facecolor(c["background"])
        self._loss_line.set_color(c["loss"])
        self._signal_line.set_color(c["signal"])
        self._stop_line.set_color(c["stop"])
        for ax in (self._loss_ax, self._signal_ax):
            ax.set_facecolor(c["background"])
            ax.tick_params(colors=c["text"], which="both")
            for spine in ax.spines.values():
                spine.set_color(c["grid"])
        self._loss_ax.xaxis.label.set_color(c["text"])
        self._loss_ax.yaxis.label.set_color(c["loss"])
        self._signal_ax.yaxis.label.set_color(c["signal"])
        self.draw(force=True)

    # -- data ---------------------------------------------------------------------------------
    def reset(self, title: str = "") -> None:
        """Clear the curves (at the start of a run, a plane or a tile)."""
        self.iterations.clear()
        self.losses.clear()
        self.signal_iterations.clear()
        self.signals.clear()
        self.stop_iteration = 0
        self.title = title
        self.draw(force=True)

    def extend(self, losses: Iterable[tuple[int, float]], signals: Iterable[tuple[int, float]],
               stop_iteration: int, force: bool = False) -> None:
        """Append ``(iteration, value)`` points of the loss and the stop signal; redraw if due."""
        for it, value in losses:
            if value is not None and math.isfinite(value) and value > 0:
                self.iterations.append(int(it))
                self.losses.append(float(value))
        for it, value in signals:
            if value is not None and math.isfinite(value) and value > 0:
                self.signal_iterations.append(int(it))
                self.signals.append(float(value))
        self.stop_iteration = int(stop_iteration)
        self.draw(force=force)

    def add(self, snap: Any) -> None:
        """Append one snapshot's loss and signal (redraws at a fit's end)."""
        self.extend([(snap.iteration, snap.loss)], [(snap.iteration, snap.stop_signal)], snap.best_iteration,
                    force=snap.stopped or snap.iteration >= snap.total)

    # -- drawing ------------------------------------------------------------------------------
    @property
    def shown(self) -> bool:
        """Whether the plot is open (a collapsed plot is not redrawn)."""
        return self.canvas is not None and (self.is_open is None or bool(self.is_open()))

    def draw(self, force: bool = False) -> None:
        """Redraw if ``force`` or at least ``min_interval`` seconds passed since the last redraw."""
        now = time.monotonic()
        stop = f"; estimate from iteration {self.stop_iteration}" if self.stop_iteration else ""
        last_loss = f"loss {self.losses[-1]:.3g}" if self.losses else "no iteration yet"
        self.summary.value = f"{self.title}{': ' if self.title else ''}{last_loss}{stop}"
        self._stale = True
        if self.canvas is None or not self.shown or (not force and now - self._last_draw < self.min_interval):
            return
        self._last_draw = now
        self._stale = False
        self.draws += 1
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
        self.canvas.draw_idle()

    def redraw_if_stale(self) -> None:
        """Draw what accumulated while the plot was hidden (call when it is shown again)."""
        if self._stale:
            self.draw(force=True)
