"""The shared widget: controls, run/cancel, live preview, progress and error reporting.

:class:`RestorationWidget` is a magicgui :class:`~magicgui.widgets.Container`; the three task
widgets in :mod:`napari_dip.widgets.tasks` add their own controls (mask, factor) to it. All
the work happens in :mod:`napari_dip.glue`; this module only wires controls and signals.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import napari
import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, ProgressBar, PushButton, SpinBox, Widget
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from ..core.devices import available_devices
from ..core.layout import get_plane, put_plane
from ..core.settings import PRESETS
from ..glue import (
    ImageInput,
    RunOptions,
    build_restoration,
    empty_output,
    finished_output,
    output_layer_kwargs,
    read_image_layer,
    start_worker,
)
from .plot import FitPlot

__all__ = ["RestorationWidget"]


def _default_preset() -> str:
    """``'paper'`` where a GPU is available, ``'fast'`` on CPU-only machines."""
    return "paper" if any(d not in ("auto", "cpu") for d in available_devices()) else "fast"


class RestorationWidget(Container):
    """Base of the task widgets (not a napari widget by itself).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are offered and where the output layer goes.

    Attributes
    ----------
    image, iterations, auto_stop, preset, device, precision, seed, preview_every, warm_start
        The controls (magicgui widgets; set ``.value`` to script them).
    run_button, cancel_button : PushButton
    progress, slices : ProgressBar
        Iterations of the plane being fitted, and planes done (stacks only).
    status : Label
        The last event (running, done, cancelled, or the error).
    plot : FitPlot
        Live loss and stop-signal curves.
    overrides : dict
        Extra core settings for scripts (e.g. ``{"lr": 0.005}``); empty by default.
    worker : GeneratorWorker or None
        The running (or last) worker.
    output_layer : napari.layers.Image or None
        The output layer of the running (or last) run.
    run_finished : Signal
        Emitted with the output layer (None if nothing was kept) when a run ends for any reason.
    """

    task: ClassVar[str] = "denoise"
    title: ClassVar[str] = "Denoising"
    run_finished = Signal(object)
    #: Seconds between two updates of the progress bars and status line while a fit runs.
    ui_interval: ClassVar[float] = 0.05

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self.overrides: dict[str, Any] = {}
        self.worker = None
        self.output_layer = None
        self.job = None
        self._run: dict[str, Any] | None = None
        self._destroyed = False
        preset = _default_preset()
        self._iterations_default = PRESETS[preset][self.task].iterations

        self.image = ComboBox(name="image", label="image", choices=self._image_choices, nullable=True,
                              tooltip="Image layer to restore (never modified; the result goes to a new layer)")
        self.iterations = SpinBox(name="iterations", label="max iterations", value=self._iterations_default,
                                  min=1, max=1_000_000, step=100,
                                  tooltip="Iterations per plane (the cap when stopping automatically)")
        self.auto_stop = CheckBox(name="auto_stop", label="auto stop", value=True,
                                  tooltip="Stop each plane once its best iteration has passed (hold-out "
                                          "validation; the noise-level discrepancy for spatially correlated noise) and keep the "
                                          "estimate from that iteration; off: run exactly 'iterations' iterations")
        self.preset = ComboBox(name="preset", label="preset", choices=list(PRESETS), value=preset,
                               tooltip="'paper': the reference networks (best, slow on a CPU); "
                                       "'fast': a light network for CPUs")
        self.device = ComboBox(name="device", label="device", choices=available_devices(), value="auto",
                               tooltip="Where to fit: 'auto' picks a GPU if there is one")
        self.precision = ComboBox(name="precision", label="precision", choices=["auto", "fp32", "bf16"],
                                  value="auto",
                                  tooltip="'auto': bf16 on a GPU, fp32 on a CPU; 'bf16' on a CPU with AMX is "
                                          "1.2-2.3x faster per iteration at slightly lower quality")
        self.seed = SpinBox(name="seed", label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="Random seed: the same seed gives the same result on a CPU")
        self.preview_every = SpinBox(name="preview_every", label="preview every", value=25, min=0, max=100_000,
                                     tooltip="Update the output layer every this many iterations "
                                             "(0: only when a plane is done)")
        self.warm_start = CheckBox(name="warm_start", label="warm start", value=False,
                                   tooltip="Stacks: start each plane from the previous plane's network "
                                           "(faster convergence on smooth stacks)")
        self.run_button = PushButton(name="run_button", text=f"Run {self.title.lower()}")
        self.cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        buttons = Container(name="buttons", widgets=[self.run_button, self.cancel_button], layout="horizontal",
                            labels=False)
        self.progress = ProgressBar(name="progress", label="iteration", value=0, min=0, max=1)
        self.slices = ProgressBar(name="slices", label="planes", value=0, min=0, max=1, visible=False)
        self.status = Label(name="status", value="")
        self.plot = FitPlot(name="plot")

        controls: list[Widget] = [self.image, *self._task_controls(), self.iterations, self.auto_stop,
                                  self.preset, self.device, self.precision, self.seed, self.preview_every,
                                  self.warm_start]
        bars = Container(name="bars", widgets=[self.progress, self.slices], labels=True)
        for box in (buttons, bars):
            box.margins = (0, 0, 0, 0)
        for bar in (self.progress, self.slices):
            bar.native.setFormat("%v / %m")
        self.status.native.setWordWrap(True)
        # the controls are attributes of this widget (w.image, w.iterations, ...), laid out in a
        # labelled box; buttons, progress, status and plot go below without labels
        self.extend([Container(name="controls", widgets=controls, labels=True), buttons, bars, self.status,
                     self.plot])

        self.run_button.changed.connect(self._on_run_clicked)
        self.cancel_button.changed.connect(self.cancel)
        self.auto_stop.changed.connect(self._on_auto_stop)
        self.preset.changed.connect(self._on_preset)
        layers = viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.moved, layers.changed):
            event.connect(self._refresh_choices)
        layers.removed.connect(self._on_layer_removed)
        self.native_parent_changed.connect(self._on_parent_changed)
        self.native.destroyed.connect(self._on_destroyed)
        self._select_active_layer()

    # -- controls -----------------------------------------------------------------------------
    def _task_controls(self) -> list[Widget]:
        """Extra controls of a task, placed after ``image`` (none for denoising)."""
        return []

    def _layers_of(self, kind: type) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return self._layers_of(napari.layers.Image)

    def _refresh_choices(self, _event: Any = None) -> None:
        if self._destroyed:
            return
        self.reset_choices()
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

    def _on_auto_stop(self, value: bool) -> None:
        self.iterations.label = "max iterations" if value else "iterations"

    def _on_preset(self, preset: str) -> None:
        new_default = PRESETS[preset][self.task].iterations
        if self.iterations.value == self._iterations_default:  # the user kept the default: follow it
            self.iterations.value = new_default
        self._iterations_default = new_default

    def options(self) -> RunOptions:
        """The controls' values as :class:`~napari_dip.glue.RunOptions`."""
        return RunOptions(iterations=int(self.iterations.value), auto_stop=bool(self.auto_stop.value),
                          preset=str(self.preset.value), device=str(self.device.value),
                          seed=int(self.seed.value), preview_every=int(self.preview_every.value),
                          warm_start=bool(self.warm_start.value), precision=str(self.precision.value),
                          overrides=dict(self.overrides),
                          **self._task_options())

    def _task_options(self) -> dict[str, Any]:
        return {}

    def _read_mask(self) -> np.ndarray | None:
        return None

    # -- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a fit is in progress."""
        return self._run is not None

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
        try:
            inp = read_image_layer(self.image.value)
            job = build_restoration(self.task, inp, self.options(), self._read_mask())
        except (ValueError, TypeError, RuntimeError, MemoryError) as err:
            self._report_error(f"{self.title}: {err}")
            return None
        layer = self._viewer.add_image(empty_output(job), **output_layer_kwargs(inp, self.task, job.factor))
        self._start(job, inp, layer)
        return self.worker

    def _start(self, job, inp: ImageInput, layer) -> None:
        self.job, self.output_layer = job, layer
        self._run = {"inp": inp, "layer": layer, "options": self.options(), "cancelled": False, "error": None, "output": None,
                     "slice": -1, "layer_removed": False, "start": time.monotonic(), "shown": 0.0}
        self.progress.max, self.progress.value = 1, 0
        self.slices.max, self.slices.value = job.n_slices, 0
        self.slices.visible = job.n_slices > 1
        self.plot.reset()
        self._set_status(f"{self.title} {inp.name!r}: starting ...")
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker = start_worker(job, connect={
            "yielded": self._on_snapshot, "returned": self._on_returned, "errored": self._on_errored,
            "aborted": self._on_aborted, "finished": self._on_finished})

    def cancel(self, _value: Any = None) -> None:
        """Stop the fit after the current iteration; the best estimate so far is kept."""
        if self._run is not None and self.worker is not None:
            self._run["cancelled"] = True
            self._set_status(f"{self.title}: cancelling ...")
            self.worker.quit()

    def _on_destroyed(self, *_args: Any) -> None:
        """The Qt widget is gone (viewer closed): stop the fit and touch no Qt widget again."""
        self._destroyed = True
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
        if self._run is not None and event.value is self._run["layer"]:
            self._run["layer_removed"] = True
            self.cancel()

    def _layer_alive(self) -> bool:
        run = self._run
        return run is not None and not run["layer_removed"] and run["layer"] in self._viewer.layers

    # -- worker signals (main thread) ---------------------------------------------------------
    def _on_snapshot(self, snap) -> None:
        run, job = self._run, self.job
        if run is None or self._destroyed:
            return
        if snap.slice_index != run["slice"]:
            self._copy_done_planes(run["slice"])
            run["slice"] = snap.slice_index
            self.plot.reset(f"plane {snap.slice_index + 1}/{snap.n_slices}" if snap.n_slices > 1 else "")
        self.plot.add(snap)
        preview = snap.ema if snap.ema is not None else snap.image
        if preview is not None and self._layer_alive():
            layer = run["layer"]
            put_plane(job.layout, layer.data, snap.slice_index, preview)
            layer.refresh()
        if snap.message:
            show_info(f"{self.title}: {snap.message}")
        now = time.monotonic()
        if not (preview is not None or snap.stopped or snap.iteration >= snap.total
                or now - run["shown"] >= self.ui_interval):
            return  # fast fits yield hundreds of snapshots a second: refresh the text at most 20 times
        run["shown"] = now
        self.progress.max = snap.total
        self.progress.value = snap.iteration
        self.slices.value = snap.slice_index
        elapsed = now - run["start"]
        plane = f"plane {snap.slice_index + 1}/{snap.n_slices}, " if snap.n_slices > 1 else ""
        self._set_status(f"{plane}iteration {snap.iteration}/{snap.total} ({elapsed:.0f} s)")

    def _copy_done_planes(self, s: int) -> None:
        """Put plane ``s``'s kept estimate (not the last preview) into the output layer."""
        job = self.job
        if s >= 0 and job.done[s] and self._layer_alive():
            layer = self._run["layer"]
            put_plane(job.layout, layer.data, s, get_plane(job.layout, job.output, s))
            layer.refresh()

    def _on_returned(self, output) -> None:
        if self._run is not None:
            self._run["output"] = output

    def _on_errored(self, err: BaseException) -> None:
        if self._run is not None:
            self._run["error"] = err

    def _on_aborted(self) -> None:
        if self._run is not None:
            self._run["cancelled"] = True

    def _on_finished(self) -> None:
        run, job = self._run, self.job
        if run is None:
            return
        self._run = None
        if self._destroyed:  # the viewer was closed: nothing left to show the result in
            self.job, self.output_layer = None, None
            return
        self.run_button.enabled, self.cancel_button.enabled = True, False
        if job.current is not None:  # stopped mid-plane: show where (updates are throttled)
            self.progress.value = min(job.current.iteration, self.progress.max)
        layer = run["layer"]
        alive = not run["layer_removed"] and layer in self._viewer.layers
        err, seconds = run["error"], time.monotonic() - run["start"]
        if err is None and not run["cancelled"] and run["output"] is not None:
            data, planes = run["output"], job.n_slices
            self.slices.value = job.n_slices
            self._set_status(f"{self.title} done in {seconds:.1f} s: layer {layer.name!r}")
        elif not alive:  # nowhere to put a partial result
            data, planes = None, 0
            if err is not None:
                self._report_error(f"{self.title} failed: {err}")
            else:
                self._set_status(f"{self.title} cancelled: the output layer was removed")
        else:
            try:
                data, planes = finished_output(job, cancelled=True)
            except Exception as lost:  # noqa: BLE001 - never leave the widget stuck in 'running'
                data = np.nan_to_num(job.output, nan=0.0, posinf=0.0, neginf=0.0)  # finished planes only
                planes = int(np.count_nonzero(job.done))
                err = RuntimeError(f"{err or 'cancelled'}; the partial result could not be recovered "
                                   f"({type(lost).__name__}: {lost})")
            if err is not None:
                self._report_error(f"{self.title} failed: {err}" + (
                    f" (kept {planes} of {job.n_slices} planes)" if planes and alive else ""))
            elif not alive:
                self._set_status(f"{self.title} cancelled: the output layer was removed")
            elif planes:
                msg = (f"{self.title} cancelled after {seconds:.1f} s: kept the best estimate so far"
                       + (f" ({planes} of {job.n_slices} planes; the others are 0)" if job.n_slices > 1 else ""))
                self._set_status(msg)
                show_info(msg)
            else:
                self._set_status(f"{self.title} cancelled before the first iteration: no output")
        if alive:
            if planes:
                layer.data = data
                layer.metadata["napari_dip"] = self._provenance(run, job, planes)
            else:
                self._viewer.layers.remove(layer)
                layer = None
        else:
            layer = None
        self.plot.draw(force=True)
        self.job = None  # frees the network and its memory
        self.output_layer = layer
        self.run_finished.emit(layer)

    def _provenance(self, run: dict[str, Any], job, planes: int) -> dict[str, Any]:
        opts = run["options"]
        return {"task": self.task, "source": run["inp"].name, "factor": job.factor,
                "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
                "planes_done": planes, "cancelled": bool(run["cancelled"]), "history": job.history()}

    # -- messages -----------------------------------------------------------------------------
    def _set_status(self, text: str) -> None:
        self.status.value = text
        self.status.native.setStyleSheet("")

    def _report_error(self, text: str) -> None:
        self.status.value = text
        self.status.native.setStyleSheet("color: #e06060;")
        show_error(text)
