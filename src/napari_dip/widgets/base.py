"""The shared widget: controls, run/cancel, live preview, progress, time estimate and honest results.

:class:`RestorationWidget` is a magicgui :class:`~magicgui.widgets.Container`; the task widgets
in :mod:`napari_dip.widgets.tasks` add their own controls to it. The work happens in
:mod:`napari_dip.glue` (the fit runs in a worker thread through
:func:`napari_dip.glue.driver.drive`, which also builds the results); this module wires controls,
shows updates and states how each run ended.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import napari
import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox, Widget
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QWidget

from ..core.devices import available_devices
from ..core.layout import infer_layout, put_plane
from ..core.settings import get_settings, presets_for
from ..glue import (
    ImageInput,
    RunControl,
    RunOptions,
    build_restoration,
    describe_outcome,
    drive,
    outcome_from_job,
    output_layer_kwargs,
    progress_text,
    read_image_layer,
    run_record,
    start_worker,
)
from ._common import _ActivityProgress, _device_kind, _RunSlots
from .plot import FitPlot
from .stackjob import StackJobRunner

__all__ = ["RestorationWidget"]

#: Suffix of an output layer that holds an estimate the engine's evidence says is not converged.
NOT_CONVERGED = " (not converged)"


class _ScrollArea(QScrollArea):
    """A vertical scroll area whose size hint is its content's (Qt caps a scroll area's at 24 text
    lines) and whose minimum height is at most :attr:`min_height`: a widget with its sections
    collapsed never scrolls, an expanded one scrolls when the screen is full, and three widgets
    docked together fit a 1080-pixel screen."""

    min_height = 290

    def __init__(self, content: QWidget):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setWidget(content)
        content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the content grew or shrank: let the dock re-read the size hint
        return super().eventFilter(watched, event)

    def _full_height(self) -> int:
        content = self.widget()
        width = self.width() - 2 * self.frameWidth()  # the viewport's width without a scroll bar
        # at the width it has: wrapped text (the status) takes more lines in a narrow dock
        height = content.heightForWidth(width) if content.hasHeightForWidth() and width > 0 else -1
        # never below the content's minimum (the scroll area does not shrink it further)
        height = max(height, content.minimumSizeHint().height())
        if height <= 0:
            height = content.sizeHint().height()
        # plus the frame the style draws (napari's stylesheet gives scroll areas one, even frameless)
        return height + 2 * self.frameWidth()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():
            self.updateGeometry()  # another width, another wrapped height

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.widget().sizeHint().width() + self.verticalScrollBar().sizeHint().width(),
                     self._full_height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width(),
                     min(self._full_height(), self.min_height))


def _collapsible(title: str, content: Widget, expanded: bool) -> tuple[Container, Any]:
    """A magicgui box holding a superqt collapsible section with ``content`` in it."""
    from superqt import QCollapsible

    box = Container(labels=False, name=f"{title.lower()}_box")
    box.margins = (0, 0, 0, 0)
    section = QCollapsible(title)
    section.setDuration(0)  # no animation: it would repaint the dock for a quarter of a second
    section.layout().setContentsMargins(0, 0, 0, 0)
    section.addWidget(content.native)
    if expanded:
        section.expand(animate=False)
    box.native.layout().addWidget(section)
    return box, section


class RestorationWidget(_RunSlots, Container):
    """Base of the task widgets (not a napari widget by itself).

    The controls are in three places: the **common** section on top (``image``, the task's
    own essentials such as ``mask`` or ``factor``, the iteration cap with ``auto_stop``,
    ``preset``, and for stacks the plane choice), the Run / Cancel / Stop-after-plane buttons,
    and a collapsed **Advanced** section (``device``, ``precision``, ``seed``, ``preview_every``,
    ``warm_start`` with its ``warm_patience``, and the task's fine controls such as ``kernel``). Progress bars, a two-line
    status (where the fit is, and the time left) and a collapsible live plot follow.

    Adding a control (subclasses, or code that extends a widget after building it)::

        class MyWidget(RestorationWidget):
            def _task_controls(self):               # common section, after `image`
                self.noise = ComboBox(name="noise", label="noise", choices=["gaussian", "poisson"])
                return [self.noise]

            def _advanced_task_controls(self):      # Advanced section, at its end
                self.weights = ComboBox(name="weights", label="weights", choices=["none"])
                return [self.weights]

            def _task_options(self):                # what the controls mean for the run
                return {**super()._task_options(), "noise": self.noise.value}

    or, after ``__init__``, ``self.add_control(widget, section="common" | "advanced",
    stack_only=False)``. Controls marked ``stack_only`` are hidden while the chosen image is a
    single plane. ``_task_options`` must return keyword arguments of
    :class:`~napari_dip.glue.RunOptions`; anything else the engine understands can go through
    ``overrides``.

    Widgets for other jobs (the paper's applications, :mod:`napari_dip.widgets.applications`)
    replace what the run is made of, and keep everything else (worker, previews, cancel, records,
    end states): :meth:`_preset_choices` and :meth:`_preset_iterations` (the preset box and the
    iteration count it implies), :meth:`_read_input` (the input), :meth:`_build_job` (any job with
    the run interface of :class:`~napari_dip.core.restore.Restoration`), :meth:`_output_kwargs`
    (the output layer's name and placement), :meth:`_display_plane` and :meth:`_display_output`
    (what the output layer shows of an estimate), :meth:`_finish_result` (measured figures, extra
    layers) and :meth:`_follow_up` (a second run after the first, e.g. a baseline). The class
    attributes :attr:`default_preset`, :attr:`convergence_evidence` and :attr:`stack_jobs` switch
    the rest.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are offered and where the output layer goes.

    Attributes
    ----------
    image, iterations, auto_stop, preset, device, precision, seed, preview_every, warm_start, warm_patience
        The controls (magicgui widgets; set ``.value`` to script them).
    plane_mode, first_plane, last_plane, follow
        Stacks only: which planes to fit (``'all'``, ``'current'``: the plane the viewer shows, or
        ``'range'``: ``first_plane`` to ``last_plane``, numbered from 1), and whether the viewer
        moves to each plane as its fit starts.
    scheduler, store
        (Advanced; widgets with :attr:`stack_jobs`) a dask scheduler's address and an output
        ``.zarr`` store: when either is set, Run starts a stack job
        (:mod:`napari_dip.widgets.stackjob`): every plane not yet in the store is fitted, on the
        cluster's workers when there is a scheduler, and lands in the output layer as it finishes.
    run_button, cancel_button, stop_after_plane_button : PushButton
    discard_button, keep_partial_button : PushButton
        Shown after a run that left an estimate the engine's evidence says is not converged:
        remove the output layer / add a cancelled plane's partial estimate to it.
    progress, slices : ProgressBar
        Iterations of the fit in progress, and planes done (stacks only).
    status : Label
        Where the fit is and the time left, then how the run ended (or the error).
    plot : FitPlot
        Live loss and stop-signal curves of the fit in progress.
    overrides : dict
        Extra core settings for scripts (e.g. ``{"lr": 0.005}``, or ``{"tile": 256}`` to force
        tiles); empty by default.
    worker : GeneratorWorker or None
        The running (or last) worker.
    output_layer : napari.layers.Image or None
        The output layer of the running (or last) run.
    outcome : RunOutcome or None
        How the last run ended (:class:`napari_dip.glue.driver.RunOutcome`).
    run_finished : Signal
        Emitted with the output layer (None if nothing was kept) when a run ends for any reason.
    """

    task: ClassVar[str] = "denoise"
    title: ClassVar[str] = "Denoising"
    #: The preset the widget opens with.
    default_preset: ClassVar[str] = "auto"
    #: Measure how far each kept estimate is from converged and flag it (off for fits that stop early
    #: by design, or that have no measurement to compare with).
    convergence_evidence: ClassVar[bool] = True
    #: Offer stack jobs (an output ``.zarr`` store, a dask scheduler) in the Advanced section.
    stack_jobs: ClassVar[bool] = True
    run_finished = Signal(object)
    #: Least seconds between two updates of the progress, status and layer while a fit runs.
    ui_interval: ClassVar[float] = 0.1
    #: Least seconds between two redraws of the output layer by previews.
    layer_interval: ClassVar[float] = 0.25
    #: Least seconds between two roll-back notifications (the others are counted in the status).
    notify_interval: ClassVar[float] = 5.0

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self.overrides: dict[str, Any] = {}
        self.worker = None
        self.output_layer = None
        self.outcome = None
        self.job = None
        self._run: dict[str, Any] | None = None
        self._destroyed = False
        self._n_planes = 1
        self._stack_only: list[Widget] = []
        preset = self.default_preset
        self._iterations_default = self._preset_iterations(preset, _device_kind("auto"))

        # -- common controls
        self.image = ComboBox(name="image", label="image", choices=self._image_choices, nullable=True,
                              tooltip="Image layer to restore (never modified; the result goes to a new layer)")
        self.iterations = SpinBox(name="iterations", label="max iterations", value=self._iterations_default,
                                  min=1, max=1_000_000, step=100,
                                  tooltip="Iterations per plane: the cap when stopping automatically, else the "
                                          "exact count")
        self.auto_stop = CheckBox(name="auto_stop", text="auto stop", value=True,
                                  tooltip="Stop each plane once its best iteration has passed (hold-out "
                                          "validation; the noise-level discrepancy for spatially correlated noise) "
                                          "and keep the estimate from that iteration; off: run exactly "
                                          "'iterations' iterations")
        self._stop_row = stop_row = Container(name="stop_row", label="iterations", layout="horizontal", labels=False,
                             widgets=[self.iterations, self.auto_stop])
        self.preset = ComboBox(name="preset", label="preset", choices=self._preset_choices(), value=preset,
                               tooltip="'auto': 'paper' on a GPU; on a CPU 'pretrained' (denoise, inpaint) or "
                                       "'fast' (super-resolve). 'pretrained': a light network started from "
                                       "shipped weights, sees the image with hidden pixels (minutes on a CPU); "
                                       "'fast': a light network from a random code; 'paper': the reference "
                                       "networks (best on a GPU, slow on a CPU)")
        self.plane_mode = ComboBox(name="plane_mode", label="planes", value="all",
                                   choices=[("all planes", "all"), ("current plane", "current"),
                                            ("range", "range")],
                                   tooltip="Stacks: fit every plane, only the plane the viewer shows, or a range; "
                                           "planes not fitted stay empty (the input shows through)")
        self.first_plane = SpinBox(name="first_plane", label="from", value=1, min=1, max=1, visible=False,
                                   tooltip="First plane of the range (numbered from 1)")
        self.last_plane = SpinBox(name="last_plane", label="to", value=1, min=1, max=1, visible=False,
                                  tooltip="Last plane of the range (numbered from 1)")
        plane_row = Container(name="plane_row", label="planes", layout="horizontal", labels=False,
                              widgets=[self.plane_mode, self.first_plane, self.last_plane])
        self.follow = CheckBox(name="follow", text="follow the plane being fitted", value=True,
                               tooltip="Move the viewer to each plane when its fit starts")
        self._stack_only += [plane_row, self.follow]
        for row in (stop_row, plane_row):
            row.margins = (0, 0, 0, 0)
        self._common = Container(name="controls", labels=True,
                                 widgets=[self.image, *self._task_controls(), stop_row, self.preset, plane_row,
                                          self.follow])
        self._common.margins = (0, 0, 0, 0)

        # -- advanced controls
        self.device = ComboBox(name="device", label="device", choices=available_devices(), value="auto",
                               tooltip="Where to fit: 'auto' picks a GPU if there is one")
        self.precision = ComboBox(name="precision", label="precision", choices=["auto", "fp32", "bf16"],
                                  value="auto",
                                  tooltip="'auto': fp32 (TF32 arithmetic on a GPU); 'bf16' on a CPU with AMX is "
                                          "1.2-2.3x faster per iteration at slightly lower quality")
        self.seed = SpinBox(name="seed", label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="Random seed: the same seed gives the same result on a CPU")
        self.preview_every = SpinBox(name="preview_every", label="preview every", value=25, min=0, max=100_000,
                                     tooltip="Update the output layer every this many iterations "
                                             "(0: only when a plane is done); at most 4 redraws a second")
        self.warm_start = CheckBox(name="warm_start", text="warm start", value=False,
                                   tooltip="Stacks: start each plane from the previous plane's network "
                                           "(faster convergence on smooth stacks)")
        self.warm_patience = SpinBox(
            name="warm_patience", label="patience", value=0, min=0, max=10_000, step=5, enabled=False,
            tooltip="With warm start and auto stop: a warm plane stops after this many iterations without "
                    "improvement, and runs at least twice as many (0: the preset's, as the first plane). On "
                    "32-plane confocal stacks 10 with neighbour planes 1 was 5.2x faster than plane by plane "
                    "at +1.0 dB; 5 lost 3.9 dB")
        self._warm_row = Container(name="warm_row", label="stacks", layout="horizontal", labels=False,
                                   widgets=[self.warm_start, Label(value="patience"), self.warm_patience])
        self._warm_row.margins = (0, 0, 0, 0)
        self._stack_only += [self._warm_row, self.warm_start, self.warm_patience]
        self.weights = FileEdit(name="weights", label="weights", mode="r", filter="*.pt", nullable=True,
                                tooltip="Starting weights from 'napari-dip pretrain' (a prior for your microscope); "
                                        "empty: the preset's (the shipped weights for 'pretrained')")
        self.weights.visible = "pretrained" in self._preset_choices()
        self._stack_runner = StackJobRunner(self) if self.stack_jobs else None
        if self._stack_runner is not None:  # Advanced: an output .zarr store and a dask scheduler
            self.scheduler, self.store = self._stack_runner.scheduler, self._stack_runner.store
        self.advanced = Container(name="advanced", labels=True,
                                  widgets=[self.device, self.precision, self.seed, self.preview_every,
                                           self._warm_row, self.weights, *self._advanced_task_controls(),
                                           *(self._stack_runner.controls() if self._stack_runner else [])])
        advanced_box, self.advanced_section = _collapsible("Advanced", self.advanced, expanded=False)

        # -- run, progress, results
        self.run_button = PushButton(name="run_button", text=f"Run {self.title.lower()}")
        self.cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False,
                                        tooltip="Stop after the iteration in progress")
        self.stop_after_plane_button = PushButton(name="stop_after_plane_button", text="Stop after plane",
                                                  enabled=False,
                                                  tooltip="Finish the plane in progress, then stop")
        self._stack_only.append(self.stop_after_plane_button)
        buttons = Container(name="buttons", layout="horizontal", labels=False,
                            widgets=[self.run_button, self.cancel_button, self.stop_after_plane_button])
        self.progress = ProgressBar(name="progress", label="iteration", value=0, min=0, max=1, visible=False)
        self.slices = ProgressBar(name="slices", label="planes", value=0, min=0, max=1, visible=False)
        bars = Container(name="bars", widgets=[self.progress, self.slices], labels=True)
        self.status = Label(name="status", value="", visible=False)
        self.status.native.setWordWrap(True)
        self.discard_button = PushButton(name="discard_button", text="Discard result", visible=False,
                                         tooltip="Remove the output layer (its estimate is not converged)")
        self.keep_partial_button = PushButton(name="keep_partial_button", text="Keep partial plane",
                                              visible=False,
                                              tooltip="Add the cancelled plane's estimate so far to the output layer, "
                                                      "marked as not converged")
        results = Container(name="results", layout="horizontal", labels=False,
                            widgets=[self.discard_button, self.keep_partial_button])
        self.plot = FitPlot(name="plot")
        plot_box, self.plot_section = _collapsible("Plot", self.plot, expanded=False)
        self.plot.is_open = self.plot_section.isExpanded  # a collapsed plot is not redrawn
        for box in (buttons, bars, results, self.plot):
            box.margins = (0, 0, 0, 0)
        for bar in (self.progress, self.slices):
            bar.native.setFormat("%v / %m")
            bar.native.setMaximumHeight(18)
        # everything in a scroll area that asks for its full height but can shrink: three widgets
        # docked together fit a 1080-pixel screen whatever is expanded
        self._body = Container(name="body", labels=False,
                               widgets=[self._common, buttons, bars, self.status, results, advanced_box, plot_box])
        self._body.native.layout().addStretch(1)  # rows stay together at the top when the dock is taller
        self._scroll = _ScrollArea(self._body.native)
        self.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(self._scroll)

        # -- signals
        self.run_button.changed.connect(self._on_run_clicked)
        self.cancel_button.changed.connect(self.cancel)
        self.stop_after_plane_button.changed.connect(self.stop_after_plane)
        self.discard_button.changed.connect(self.discard)
        self.keep_partial_button.changed.connect(self.keep_partial)
        self.auto_stop.changed.connect(self._on_auto_stop)
        self.warm_start.changed.connect(self._on_warm)
        self.auto_stop.changed.connect(self._on_warm)
        self.preset.changed.connect(self._on_preset)
        self.device.changed.connect(self._on_preset)
        self.image.changed.connect(self._on_image_changed)
        self.plane_mode.changed.connect(self._on_plane_mode)
        self.first_plane.changed.connect(self._on_range)
        self.last_plane.changed.connect(self._on_range)
        self.plot_section.toggled.connect(self._on_plot_toggled)
        layers = viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.moved, layers.changed):
            event.connect(self._refresh_choices)
        layers.removed.connect(self._on_layer_removed)
        if hasattr(viewer.events, "theme"):
            viewer.events.theme.connect(self._apply_theme)
        self.native_parent_changed.connect(self._on_parent_changed)
        self.native.destroyed.connect(self._on_destroyed)
        self._apply_theme()
        self._on_auto_stop(self.auto_stop.value)
        self._select_active_layer()
        self._on_image_changed(self.image.value)

    # -- extending ----------------------------------------------------------------------------
    def _preset_choices(self) -> list[str]:
        """The names the preset box offers (default: the core's presets for :attr:`task`)."""
        return list(presets_for(self.task))

    def _preset_iterations(self, preset: str, device: str, channels: int | None = None) -> int:
        """The iteration count (or cap) ``preset`` implies on ``device`` (``'cpu'``, ``'cuda'``, ...)
        for an image with ``channels`` channels (``'auto'`` depends on both)."""
        return get_settings(preset, self.task, device=device, channels=channels).iterations

    def _read_input(self) -> ImageInput:
        """The run's input, copied out of the chosen layer (raises ValueError with the reason)."""
        return read_image_layer(self.image.value)

    def _build_job(self, inp: ImageInput, options: RunOptions):
        """The job to run: anything with the run interface of a
        :class:`~napari_dip.core.restore.Restoration` (validated here, in the GUI thread)."""
        return build_restoration(self.task, inp, options, self._read_mask())

    def _output_kwargs(self, inp: ImageInput, job) -> dict[str, Any]:
        """``viewer.add_image`` keywords of the output layer (name and placement)."""
        return output_layer_kwargs(inp, self.task, job.factor)

    def _display_plane(self, s: int, image: np.ndarray) -> np.ndarray:
        """What the output layer shows for plane ``s``'s estimate ``image`` (``(H, W, C)``)."""
        return image

    def _display_output(self, outcome, job) -> np.ndarray:
        """The output layer's data at the end of a run (default: the estimates, ``outcome.data``)."""
        return outcome.data

    def _finish_result(self, layer, outcome, job, inp: ImageInput) -> str:
        """Called at the end of a run that kept ``layer``: add figures to its record, or other
        layers; returns a sentence appended to the status ('' for none)."""
        return ""

    def _follow_up(self, outcome) -> bool:
        """Called when a run finished: start another one and return True (``run_finished`` is then
        emitted at the end of that one), or return False."""
        return False

    def _task_controls(self) -> list[Widget]:
        """Controls of a task in the common section, after ``image`` (none for denoising)."""
        return []

    def _advanced_task_controls(self) -> list[Widget]:
        """Controls of a task at the end of the Advanced section (none for denoising)."""
        return []

    def add_control(self, widget: Widget, section: str = "advanced", stack_only: bool = False,
                    index: int | None = None) -> Widget:
        """Add ``widget`` to the ``'common'`` or ``'advanced'`` section (at ``index``, default the end).

        ``stack_only`` hides it while the chosen image is a single plane. Returns ``widget``.
        """
        box = {"common": self._common, "advanced": self.advanced}.get(section)
        if box is None:
            raise ValueError(f"section must be 'common' or 'advanced', got {section!r}")
        box.insert(len(box) if index is None else index, widget)
        if stack_only:
            self._stack_only.append(widget)
            widget.visible = self._n_planes > 1
        return widget

    # -- controls -----------------------------------------------------------------------------
    def _layers_of(self, kind: type) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return self._layers_of(napari.layers.Image)

    def _refresh_choices(self, _event: Any = None) -> None:
        if self._destroyed:
            return
        self._body.reset_choices()
        self.advanced.reset_choices()
        self._select_active_layer()

    def _layer_pickers(self) -> list[tuple[ComboBox, type]]:
        """The layer boxes and the layer type each offers."""
        return [(self.image, napari.layers.Image)]

    def _select_active_layer(self) -> None:
        """Fill empty layer boxes: the active layer if it fits, else the top-most one that does."""
        active = self._viewer.layers.selection.active
        for box, kind in self._layer_pickers():
            if box.value is not None:
                continue
            candidates = [layer for layer in self._viewer.layers if isinstance(layer, kind)]
            if isinstance(active, kind):
                box.value = active
            elif candidates:
                box.value = candidates[-1]

    def _on_warm(self, _value: Any = None) -> None:
        self.warm_patience.enabled = bool(self.warm_start.value) and bool(self.auto_stop.value)

    def _on_auto_stop(self, value: bool) -> None:
        self.iterations.label = self._stop_row.label = "max iterations" if value else "iterations"

    def _on_preset(self, _value: Any = None) -> None:
        """Follow the preset's iteration cap (``'auto'`` depends on the device and on the image's
        channel count) unless the user set one."""
        new_default = self._preset_iterations(str(self.preset.value), _device_kind(str(self.device.value)),
                                              self._layer_channels(self.image.value))
        if self.iterations.value == self._iterations_default:  # the user kept the default: follow it
            self.iterations.value = new_default
        self._iterations_default = new_default

    @staticmethod
    def _layer_layout(layer: Any) -> Any:
        """How the core lays out ``layer`` (planes, channels), or None for no layer, a multiscale
        layer or a shape the core rejects."""
        if layer is None or getattr(layer, "multiscale", False):
            return None
        try:
            return infer_layout(tuple(layer.data.shape), None, bool(getattr(layer, "rgb", False)))
        except (ValueError, TypeError):
            return None

    def _layer_planes(self, layer: Any) -> int:
        """How many planes the core fits for ``layer`` (1 for a 2D or RGB image)."""
        layout = self._layer_layout(layer)
        return 1 if layout is None else layout.n_slices

    def _layer_channels(self, layer: Any) -> int | None:
        """The channel count the core sees for ``layer`` (None when unknown)."""
        layout = self._layer_layout(layer)
        return None if layout is None else layout.channels

    def _on_image_changed(self, layer: Any = None) -> None:
        self._on_preset()
        n = self._layer_planes(layer)
        self._n_planes = n
        for spin in (self.first_plane, self.last_plane):
            spin.max = max(n, 1)
        if self.last_plane.value == 1 or self.last_plane.value > n:
            self.last_plane.value = n
        for widget in self._stack_only:
            widget.visible = n > 1
        self._on_plane_mode(self.plane_mode.value)
        if not self.running:
            self.slices.visible = False

    def _on_plane_mode(self, mode: str) -> None:
        show = mode == "range" and self._n_planes > 1
        self.first_plane.visible = self.last_plane.visible = show

    def _on_range(self, _value: Any = None) -> None:
        if self.first_plane.value > self.last_plane.value:
            self.last_plane.value = self.first_plane.value

    def _on_plot_toggled(self, expanded: bool) -> None:
        if expanded:  # draw what came while it was collapsed (once the canvas is shown)
            QTimer.singleShot(0, self.plot.redraw_if_stale)

    def _apply_theme(self, _event: Any = None) -> None:
        """Draw the plot in the viewer's theme colours."""
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(getattr(self._viewer, "theme", "dark"))
        except Exception:  # noqa: BLE001 - an unknown theme: keep the defaults
            return

        def hex_of(name: str, default: str) -> str:
            value = getattr(theme, name, None)
            return value.as_hex() if hasattr(value, "as_hex") else str(value or default)

        dark = getattr(theme, "type", "dark") == "dark"
        self.plot.set_colors({"background": hex_of("background", "#23242b"), "text": hex_of("text", "#f0f1f2"),
                              "grid": hex_of("secondary", "#565f6c"),
                              "loss": "#6cb6ff" if dark else "#1f5fbf", "signal": "#f5a623" if dark else "#c4600a",
                              "stop": "#7ed957" if dark else "#2e8b2e"})

    def options(self) -> RunOptions:
        """The controls' values as :class:`~napari_dip.glue.RunOptions`."""
        return RunOptions(iterations=int(self.iterations.value), auto_stop=bool(self.auto_stop.value),
                          preset=str(self.preset.value), device=str(self.device.value),
                          seed=int(self.seed.value), preview_every=int(self.preview_every.value),
                          warm_start=bool(self.warm_start.value),
                          warm_patience=int(self.warm_patience.value) if self.warm_start.value else 0,
                          precision=str(self.precision.value),
                          overrides={**({"weights": str(self.weights.value)} if self.weights.value else {}),
                                     **self.overrides},
                          **self._task_options())

    def _task_options(self) -> dict[str, Any]:
        return {}

    def _read_mask(self) -> np.ndarray | None:
        return None

    def selected_planes(self, n_slices: int | None = None) -> list[int] | None:
        """Stack indices the plane controls select (None: all planes).

        Raises
        ------
        ValueError
            For a range outside the stack.
        """
        n = self._n_planes if n_slices is None else n_slices
        mode = self.plane_mode.value
        if n <= 1 or mode == "all":
            return None
        if mode == "current":
            return [self._current_plane(n)]
        first, last = int(self.first_plane.value), int(self.last_plane.value)
        if not 1 <= first <= last <= n:
            raise ValueError(f"the plane range {first}-{last} is outside the stack's planes 1-{n}")
        return list(range(first - 1, last))

    def _stack_shape(self) -> tuple[int, ...]:
        layer = self.image.value
        return infer_layout(tuple(layer.data.shape), None, bool(layer.rgb)).stack_shape

    def _current_plane(self, n: int) -> int:
        """The stack index of the plane the viewer shows for the chosen image."""
        layer = self.image.value
        shape = self._stack_shape()
        coords = np.asarray(layer.world_to_data(self._viewer.dims.point), dtype=float)[:len(shape)]
        index = tuple(int(np.clip(round(c), 0, s - 1)) for c, s in zip(coords, shape))
        return int(np.ravel_multi_index(index, shape)) if shape else 0

    def _show_plane(self, s: int) -> None:
        """Move the viewer to stack index ``s`` of the run's input."""
        layer = self._run["inp_layer"] if self._run else None
        if layer is None or layer not in self._viewer.layers:
            return
        shape = self._run["stack_shape"]
        index = np.unravel_index(s, shape)
        coords = np.zeros(layer.ndim)
        coords[:len(shape)] = index
        world = np.asarray(layer.data_to_world(coords), dtype=float)
        offset = self._viewer.dims.ndim - layer.ndim
        for i in range(len(shape)):
            self._viewer.dims.set_point(offset + i, float(world[i]))

    # -- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a fit (or a stack job) is in progress."""
        return self._run is not None or (self._stack_runner is not None and self._stack_runner.running)

    def _on_run_clicked(self, _value: Any = None) -> None:
        self.run()

    def run(self):
        """Check the inputs, create the output layer and start the fit in a worker thread.

        Returns
        -------
        GeneratorWorker or None
            The started worker, or None if the inputs were rejected (the reason is shown as a
            napari error notification and in the status line) or a fit is already running.
        """
        if self.running:
            show_warning(f"{self.title} is already running; cancel it first")
            return None
        if self._stack_runner is not None and self._stack_runner.requested:
            return self._stack_runner.run()
        try:
            inp = self._read_input()
            options = self.options()
            job = self._build_job(inp, options)
            planes = self.selected_planes(job.n_slices)
        except (ValueError, TypeError, RuntimeError, MemoryError) as err:
            self._report_error(f"{self.title}: {err}")
            return None
        self._hide_result_actions()
        kwargs = self._output_kwargs(inp, job)
        # NaN is drawn transparent: the input shows through until a plane has its first preview
        layer = self._viewer.add_image(np.full(job.output.shape, np.nan, dtype=np.float32), **kwargs)
        self._start(job, inp, layer, options, planes)
        return self.worker

    def _start(self, job, inp: ImageInput, layer, options: RunOptions, planes: list[int] | None) -> None:
        self.job, self.output_layer, self.outcome = job, layer, None
        control = RunControl()
        n_run = job.n_slices if planes is None else len(planes)
        cap = int(job.settings.iterations if job.iterations == "auto" else job.iterations)
        self._run = {"inp": inp, "inp_layer": self.image.value, "layer": layer, "options": options,
                     "control": control, "cap": cap, "auto": job.iterations == "auto", "n_run": n_run,
                     "stack_shape": job.layout.stack_shape, "outcome": None, "error": None,
                     "selected": list(range(job.n_slices)) if planes is None else list(planes),
                     "layer_removed": False, "start": time.monotonic(), "fit": 0, "plane": -1,
                     "last_refresh": 0.0, "last_notice": -np.inf, "silenced": 0, "rollbacks": 0,
                     "records": []}
        self.progress.max, self.progress.value = cap, 0
        self.progress.visible = True
        self.slices.max, self.slices.value = n_run, 0
        self.slices.visible = job.n_slices > 1
        self.plot.reset()
        where = f" (planes {planes[0] + 1}-{planes[-1] + 1})" if planes and len(planes) > 1 else (
            f" (plane {planes[0] + 1})" if planes else "")
        self._set_status(f"{self.title} {inp.name!r}{where}: starting ...")
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.stop_after_plane_button.enabled = job.n_slices > 1 and n_run > 1
        if job.tile_side is not None:
            tiles = len(job.regions())
            h, w = job.layout.plane_shape
            show_info(f"{self.title} {inp.name!r}: a {h}x{w} plane is too large for the memory available at once, "
                      f"so each plane is fitted in {tiles} overlapping tiles of {job.tile_side}x{job.tile_side} "
                      f"pixels, blended without seams")
        total = cap if n_run == 1 else n_run
        self._activity = _ActivityProgress(f"{self.title} {inp.name!r}", total, self.cancel)
        if planes is None and job.n_slices > 1 and self.follow.value:
            self._show_plane(0)
        self.worker = start_worker(job, generator=drive, kwargs={"control": control, "planes": planes,
                                                                   "interval": self.ui_interval,
                                                                   "evidence": self.convergence_evidence},
                                   connect={"yielded": self._on_update, "returned": self._on_returned,
                                            "errored": self._on_errored, "finished": self._on_finished})

    def cancel(self, _value: Any = None) -> None:
        """Stop the fit after the current iteration; what is kept is stated when it ends."""
        if self._run is not None:
            self._run["control"].cancel()
            self._set_status(f"{self.title}: cancelling ...")
        elif self._stack_runner is not None and self._stack_runner.running:
            self._stack_runner.cancel()

    def stop_after_plane(self, _value: Any = None) -> None:
        """Finish the plane in progress, then stop (stacks)."""
        if self._run is not None:
            self._run["control"].stop_after_plane()
            self.stop_after_plane_button.enabled = False
            self._set_status(f"{self.title}: stopping after this plane ...")

    def _on_destroyed(self, *_args: Any) -> None:
        """The Qt widget is gone (viewer closed): stop the fit and touch no Qt widget again."""
        self._destroyed = True
        if self._run is not None:
            self._run["control"].cancel()
        if self._stack_runner is not None:
            self._stack_runner.cancel()
        if self.worker is not None:
            self.worker.quit()

    def _on_parent_changed(self, parent: Any) -> None:
        if parent is None and self.running:  # removed from its dock: stop the fit
            self.cancel()

    def close(self) -> None:
        """Stop any running fit, then close the widget."""
        self.cancel()
        super().close()

    def _on_layer_removed(self, event: Any) -> None:
        if self._stack_runner is not None and self._stack_runner.layer_removed(event.value):
            return
        if self._run is not None and event.value is self._run["layer"]:
            self._run["layer_removed"] = True
            self.cancel()
        elif self._run is None and event.value is self.output_layer:
            self.output_layer = None
            self._hide_result_actions()

    def _layer_alive(self) -> bool:
        run = self._run
        return run is not None and not run["layer_removed"] and run["layer"] in self._viewer.layers

    # -- worker signals (main thread) ---------------------------------------------------------
    def _on_update(self, u) -> None:
        """One throttled update from :func:`~napari_dip.glue.driver.drive`."""
        run = self._run
        if run is None or self._destroyed:
            return
        snap = u.snapshot
        if u.fit != run["fit"]:
            run["fit"] = u.fit
            title = ", ".join(([f"plane {u.plane + 1}"] if self.job.n_slices > 1 else [])
                              + ([f"tile {u.tile}/{u.tiles}"] if u.tiles > 1 else []))
            self.plot.reset(title)
            self.progress.max = snap.total
            if u.plane != run["plane"]:
                run["plane"] = u.plane
                if self.follow.value and self.job.n_slices > 1:
                    self._show_plane(u.plane)
        self.plot.extend(u.losses, u.signals, snap.best_iteration, force=snap.stopped or snap.iteration >= snap.total)
        run["records"].extend(u.records)
        changed = False
        if self._layer_alive():
            data = run["layer"].data
            for s, image in u.done:
                put_plane(self.job.layout, data, s, self._display_plane(s, image))
                changed = True
            if u.preview is not None and not self.job.done[u.plane]:
                put_plane(self.job.layout, data, u.plane, self._display_plane(u.plane, u.preview))
                changed = True
        if changed:
            self._refresh_layer(force=bool(u.done))
        for message in u.events:
            self._notify_event(message)
        self.progress.value = min(snap.iteration, self.progress.max)
        self.slices.value = u.planes_done
        text = progress_text(u, run["auto"])
        if run["silenced"]:
            text += f" ({run['rollbacks']} roll-backs so far)"
        self._set_status(text)
        n_run = run["n_run"]
        desc = f"{self.title} {run['inp'].name!r}" + (f": plane {u.plane_number}/{n_run}" if n_run > 1 else "")
        self._activity.show(snap.iteration if n_run == 1 else u.planes_done, snap.total if n_run == 1 else n_run,
                            desc)

    def _refresh_layer(self, force: bool = False) -> None:
        """Redraw the output layer now if due (or ``force``), else once the interval has passed."""
        run = self._run
        now = time.monotonic()
        if force or now - run["last_refresh"] >= self.layer_interval:
            run["last_refresh"] = now
            run["layer"].refresh()
        elif not run.get("refresh_pending"):
            run["refresh_pending"] = True
            delay = int(1000 * (self.layer_interval - (now - run["last_refresh"]))) + 1

            def later(run=run) -> None:
                run["refresh_pending"] = False
                if self._run is run and self._layer_alive():
                    run["last_refresh"] = time.monotonic()
                    run["layer"].refresh()

            QTimer.singleShot(delay, later)

    def _notify_event(self, message: str) -> None:
        """A roll-back: notify, at most one every ``notify_interval`` seconds (the rest are counted)."""
        run = self._run
        run["rollbacks"] += 1
        now = time.monotonic()
        if now - run["last_notice"] >= self.notify_interval:
            run["last_notice"] = now
            show_warning(f"{self.title}: {message}")
        else:
            run["silenced"] += 1

    def _on_finished(self) -> None:
        run, job = self._run, self.job
        if run is None:
            return
        self._run = None
        self._activity.close()
        if self._destroyed:  # the viewer was closed: nothing left to show the result in
            self.job, self.output_layer = None, None
            return
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.stop_after_plane_button.enabled = False
        layer = run["layer"]
        alive = not run["layer_removed"] and layer in self._viewer.layers
        outcome = run["outcome"]
        if outcome is None and run["error"] is None:  # worker.quit(): the finished planes, no evidence
            outcome = outcome_from_job(job, run["selected"], "cancelled", time.monotonic() - run["start"])
        self.outcome = outcome
        if outcome is None:  # the driver itself failed: say so, keep nothing unsure
            err = run["error"] or RuntimeError("the run stopped without a result")
            self._report_error(f"{self.title} failed: {err}")
            if alive:
                self._viewer.layers.remove(layer)
            layer = None
        else:
            self.slices.value = len(outcome.in_data)
            partial = next((r for r in outcome.records if not r.finished), None)
            if partial is not None:  # stopped mid-plane: show where (updates are throttled)
                self.progress.value = min(partial.fit_iteration, self.progress.max)
            keep = alive and bool(outcome.in_data)
            if alive and not keep:
                self._viewer.layers.remove(layer)
            if keep:
                layer.data = self._display_output(outcome, job)
                if outcome.not_converged:
                    layer.name = layer.name + NOT_CONVERGED
                layer.metadata["napari_dip"] = run_record(outcome, job.n_slices, self._provenance(run, job))
            else:
                layer = None
            text, severity = describe_outcome(outcome, self.title, job.n_slices, run["cap"],
                                              layer.name if layer is not None else None)
            note = self._finish_result(layer, outcome, job, run["inp"]) if layer is not None else ""
            if note:
                text = f"{text} {note}"
            if not alive and outcome.state != "failed":
                text = f"{self.title} cancelled: the output layer was removed."
                severity = "info"
            if severity == "error":
                self._report_error(text)
            else:
                self._set_status(text, warn=severity == "warning")
                (show_warning if severity == "warning" else show_info)(text)
            if layer is not None:
                self.discard_button.visible = bool(outcome.not_converged)
                self.keep_partial_button.visible = outcome.partial is not None and not outcome.partial_kept
                if outcome.partial is not None and not outcome.partial_kept:
                    self.keep_partial_button.text = f"Keep plane {outcome.partial[0] + 1} anyway"
        self.plot.draw(force=True)
        self.job = None  # frees the network and its memory
        self.output_layer = layer
        if outcome is not None and outcome.state == "finished" and self._follow_up(outcome):
            return  # another run started: run_finished comes at its end
        self.run_finished.emit(layer)

    def _provenance(self, run: dict[str, Any], job) -> dict[str, Any]:
        opts = run["options"]
        return {"task": self.task, "source": run["inp"].name, "factor": job.factor,
                "preset": job.resolved_preset,
                "neighbour_planes": int(getattr(job, "neighbour_planes", 0)),  # the number used ('auto' resolved)
                "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
                "tile": job.tile_side, "history": job.history()}

    # -- after a run --------------------------------------------------------------------------
    def _hide_result_actions(self) -> None:
        self.discard_button.visible = False
        self.keep_partial_button.visible = False

    def discard(self, _value: Any = None) -> None:
        """Remove the last run's output layer (offered when its estimate is not converged)."""
        layer = self.output_layer
        self._hide_result_actions()
        if layer is not None and layer in self._viewer.layers:
            self._viewer.layers.remove(layer)
            self._set_status(f"{self.title}: discarded {layer.name!r}.")
        self.output_layer = None

    def keep_partial(self, _value: Any = None) -> None:
        """Put the cancelled plane's estimate so far into the last run's output layer, flagged."""
        outcome, layer = self.outcome, self.output_layer
        self.keep_partial_button.visible = False
        if outcome is None or outcome.partial is None or layer is None or layer not in self._viewer.layers:
            return
        s, image = outcome.partial
        layout = infer_layout(tuple(layer.data.shape), None, bool(layer.rgb))
        put_plane(layout, layer.data, s, self._display_plane(s, image))
        outcome.partial_kept = True
        record = layer.metadata.get("napari_dip", {})
        record.update({"partial_kept": True, "planes_done": len(outcome.in_data),
                       "planes_in_layer": outcome.in_data,
                       "planes_not_fitted": [p for p in record.get("planes_not_fitted", []) if p != s],
                       "planes_not_converged": outcome.not_converged})
        if outcome.not_converged and not layer.name.endswith(NOT_CONVERGED):
            layer.name = layer.name + NOT_CONVERGED
        self.discard_button.visible = bool(outcome.not_converged)
        layer.refresh()
        self._set_status(f"{self.title}: added plane {s + 1}'s partial estimate to {layer.name!r}.", warn=True)

    # -- messages -----------------------------------------------------------------------------
    def _set_status(self, text: str, warn: bool = False) -> None:
        self.status.value = text
        self.status.visible = bool(text)
        self.status.native.setStyleSheet("color: #e3b617;" if warn else "")

    def _report_error(self, text: str) -> None:
        self.status.value = text
        self.status.visible = True
        self.status.native.setStyleSheet("color: #e06060;")
        show_error(text)
