"""Stack jobs from the restoration widgets: an output ``.zarr`` store and a dask scheduler.

:class:`StackJobRunner` belongs to a :class:`~napari_dip.widgets.base.RestorationWidget`. It adds
two controls to the widget's Advanced section; when either is set, **Run** starts a
:class:`~napari_dip.distributed.StackJob` (through :func:`napari_dip.glue.stackjob.drive_stack` in a
worker thread) instead of an in-process fit: every plane not yet in the store is fitted (on the
cluster's workers when a scheduler is given), and planes appear in the output layer as they land.
The widget's own buttons, bars, status and notifications are used; only what differs from a fit
(planes instead of iterations, a store, resumption) is handled here.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import FileEdit, LineEdit, Widget
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer

from ..glue import RunControl, output_layer_kwargs, read_image_layer, run_record, start_worker
from ..glue.stackjob import (
    CONNECT_TIMEOUT,
    StackRequest,
    describe_stack_outcome,
    drive_stack,
    layer_calibration,
    stack_progress_text,
)
from ._common import _ActivityProgress, _device_kind, _RunSlots

__all__ = ["StackJobRunner"]

_INSTALL = "stack jobs need dask, distributed and zarr: pip install 'napari-dip[distributed]'"


class StackJobRunner(_RunSlots):
    """The stack-job controls of a widget, and the run they start.

    Attributes
    ----------
    scheduler : LineEdit
        The dask scheduler's address (``tcp://host:8786``); empty: fit in this process.
    store : FileEdit
        The output ``.zarr`` store; empty: keep the output in memory (not resumable).
    connect_timeout : float
        Seconds to wait for the scheduler before saying it cannot be reached.
    outcome : StackOutcome or None
        How the last stack job ended.
    """

    #: Least seconds between two redraws of the output layer as planes land.
    layer_interval = 0.25

    def __init__(self, widget: Any):  # the RestorationWidget that owns this runner (base imports this module)
        self.widget = widget
        self.connect_timeout = CONNECT_TIMEOUT
        self.outcome = None
        self._run: dict[str, Any] | None = None
        available = all(importlib.util.find_spec(m) is not None for m in ("dask", "distributed", "zarr"))
        self.scheduler = LineEdit(name="scheduler", label="scheduler", value="",
                                  tooltip="Fit the planes on a dask cluster: its scheduler's address, e.g. "
                                          "tcp://head-node:8786. Workers must see the output store (and any "
                                          "file the image came from) at the same path. Empty: this machine"
                                  if available else _INSTALL)
        self.scheduler.native.setPlaceholderText("empty: this machine")
        self.store = FileEdit(name="store", label="output .zarr", mode="w", filter="*.zarr", nullable=True,
                              tooltip="Write the planes into this OME-Zarr store as they finish; running again with "
                                      "the same store resumes where it stopped. Set this or a scheduler to run a "
                                      "stack job (every plane, no live preview)" if available else _INSTALL)
        for control in (self.scheduler, self.store):
            control.enabled = available

    def controls(self) -> list[Widget]:
        """The controls for the widget's Advanced section."""
        return [self.scheduler, self.store]

    @property
    def requested(self) -> bool:
        """Whether the controls ask for a stack job."""
        return bool(str(self.scheduler.value).strip()) or self.store.value is not None

    @property
    def running(self) -> bool:
        return self._run is not None

    # -- starting --------------------------------------------------------------------------------
    def request(self) -> StackRequest:
        """The job the widget's controls describe (raises ValueError with the reason)."""
        from ..core.settings import get_settings, resolve_preset

        w = self.widget
        if importlib.util.find_spec("distributed") is None:
            raise ValueError(_INSTALL)
        inp = read_image_layer(w.image.value, copy=False)
        data = np.array(inp.data, copy=True) if isinstance(inp.data, np.ndarray) else inp.data
        options = w.options()
        if w._layer_planes(w.image.value) > 1 and w.plane_mode.value != "all":
            raise ValueError("a stack job fits every plane not yet in its store: choose 'all planes', or clear "
                             "the scheduler and the output store (Advanced) to fit some planes here")
        if options.warm_start:
            raise ValueError("warm start chains each plane to the previous one, and a stack job fits planes "
                             "independently: turn warm start off")
        if options.neighbour_planes not in (0, "auto"):
            raise ValueError("neighbour planes show each plane's fit its neighbours, and a stack job fits planes "
                             "independently: set neighbour planes to auto or 0")
        store = None
        if self.store.value is not None and str(self.store.value).strip():
            path = Path(str(self.store.value)).expanduser()
            if path.suffix.lower() != ".zarr":
                raise ValueError(f"the output store {str(path)!r} must be a folder ending in .zarr")
            store = str(path)
        scheduler = str(self.scheduler.value).strip() or None
        # the preset is resolved here ('auto' on the chosen device, or this machine's for device 'auto') and
        # sent as settings, so the store's fingerprint names exactly the network the workers fit
        kind = _device_kind(options.device)
        channels = int(np.shape(inp.data)[-1]) if inp.rgb else 1  # 'auto' and the preset's settings depend on it
        name = resolve_preset(options.preset, w.task, kind, channels)
        overrides = options.setting_overrides()
        fit: dict[str, Any] = {"device": options.device, "seed": int(options.seed), "precision": options.precision}
        if options.auto_stop:
            fit["iterations"] = "auto"
            overrides["iterations"] = int(options.iterations)
        else:
            fit["iterations"] = int(options.iterations)
        fit["preset"] = get_settings(name, w.task, device=kind, channels=channels, **overrides)
        if w.task == "super_resolve":
            fit.update(factor=int(options.factor), kernel=str(options.kernel))
        self._pending = {"inp": inp, "options": options, "preset": name, "resolved_on": kind}
        return StackRequest(task=w.task, data=data, mask=w._read_mask(), store=store, scheduler=scheduler,
                            rgb=inp.rgb, calibration=layer_calibration(inp), fit_kwargs=fit,
                            connect_timeout=float(self.connect_timeout))

    def run(self):
        """Start the stack job in a worker thread; returns the worker, or None if the inputs were refused."""
        w = self.widget
        try:
            request = self.request()
        except (ValueError, TypeError, RuntimeError, MemoryError) as err:
            w._report_error(f"{w.title}: {err}")
            return None
        w._hide_result_actions()
        pending = self._pending
        control = RunControl()
        self.outcome = w.outcome = None
        w.output_layer = None
        self._run = {**pending, "request": request, "control": control, "layer": None, "layer_removed": False,
                     "start": time.monotonic(), "last_refresh": 0.0, "refresh_pending": False, "n_planes": 0,
                     "outcome": None, "error": None, "cap": int(pending["options"].iterations)}
        w.progress.visible = False
        w.slices.max, w.slices.value = 1, 0
        w.slices.visible = True
        w.plot.reset()
        where = f"on {request.scheduler}" if request.scheduler else "in this process"
        w._set_status(f"{w.title} {pending['inp'].name!r}: starting a stack job {where} ...")
        w.run_button.enabled, w.cancel_button.enabled = False, True
        w.stop_after_plane_button.enabled = False
        self._run["activity"] = _ActivityProgress(f"{w.title} {pending['inp'].name!r} (stack job)", 1, self.cancel)
        worker = start_worker(request, generator=drive_stack, kwargs={"control": control},
                              connect={"yielded": self._on_update, "returned": self._on_returned,
                                       "errored": self._on_errored, "finished": self._on_finished})
        self._run["worker"] = w.worker = worker
        return worker

    def cancel(self) -> None:
        """Stop the job: on a cluster at once, in this process after the plane in progress."""
        if self._run is not None and not self._run["control"].cancelled:
            self._run["control"].cancel()
            self.widget._set_status(f"{self.widget.title}: cancelling the stack job ...")

    def layer_removed(self, layer: Any) -> bool:
        """The user removed ``layer``: cancel the job if it was its output. Returns whether it was."""
        run = self._run
        if run is not None and layer is not None and layer is run["layer"]:
            run["layer_removed"] = True
            self.cancel()
            return True
        return False

    # -- worker signals (GUI thread) -------------------------------------------------------------
    def _on_update(self, u) -> None:
        run, w = self._run, self.widget
        if run is None or w._destroyed:
            return
        if u.kind == "ready":
            run["n_planes"] = u.n_planes
            kwargs = output_layer_kwargs(run["inp"], w.task, run["options"].factor if w.task == "super_resolve" else 1)
            run["layer"] = w._viewer.add_image(u.output, **kwargs)
            w.output_layer = run["layer"]
            w.slices.max = max(u.n_planes, 1)
            if u.resumed:
                show_info(f"{w.title}: resuming the stack job in {u.store}: {u.resumed} of {u.n_planes} planes are "
                          "already there")
        elif u.kind == "plane":
            self._refresh(force=u.landed == u.n_planes)
        w.slices.value = min(u.landed, w.slices.max)
        w._set_status(stack_progress_text(u, w.title))
        if u.n_planes:
            run["activity"].show(u.landed, u.n_planes, f"{w.title} {run['inp'].name!r}: {u.landed}/{u.n_planes} planes")

    def _refresh(self, force: bool = False) -> None:
        """Redraw the output layer (the planes are in its array already), at most every ``layer_interval``."""
        run = self._run
        layer = run["layer"]
        if layer is None or run["layer_removed"]:
            return
        now = time.monotonic()
        if force or now - run["last_refresh"] >= self.layer_interval:
            run["last_refresh"] = now
            layer.refresh()
        elif not run["refresh_pending"]:
            run["refresh_pending"] = True

            def later(run=run) -> None:
                run["refresh_pending"] = False
                if self._run is run and run["layer"] is not None and not run["layer_removed"]:
                    run["last_refresh"] = time.monotonic()
                    run["layer"].refresh()

            QTimer.singleShot(int(1000 * self.layer_interval) + 1, later)

    def _on_finished(self) -> None:
        run, w = self._run, self.widget
        if run is None:
            return
        self._run = None
        run["activity"].close()
        if w._destroyed:
            return
        w.run_button.enabled, w.cancel_button.enabled = True, False
        outcome = run["outcome"]
        layer = run["layer"]
        alive = layer is not None and not run["layer_removed"] and layer in w._viewer.layers
        self.outcome = w.outcome = outcome
        if outcome is None:  # the worker was quit (napari's own stop), or the driver itself failed
            err = run["error"]
            store = run["request"].store
            w._report_error(f"{w.title} stack job stopped" + (f": {err}" if err is not None else "")
                            + (f". The planes recorded in {store} stay there; running again resumes" if store else ""))
            w.output_layer = layer if alive else None
            w.run_finished.emit(w.output_layer)
            return
        if alive and not outcome.in_store and not outcome.records:
            w._viewer.layers.remove(layer)  # nothing landed: an empty layer would only mislead
            alive, layer = False, None
        if alive:
            layer.data = outcome.data
            layer.refresh()
            layer.metadata["napari_dip"] = self._record(run, outcome)
        else:
            layer = None
        text, severity = describe_stack_outcome(outcome, w.title, run["cap"], layer.name if layer is not None else None)
        if run["layer_removed"] and outcome.built:
            text = f"{w.title} stack job cancelled: the output layer was removed. " + text
        if severity == "error":
            w._report_error(text)
        else:
            w._set_status(text, warn=severity == "warning")
            (show_warning if severity == "warning" else show_info)(text)
        w.slices.value = min(len(outcome.in_store) if outcome.store else len(outcome.records), w.slices.max)
        w.output_layer = layer
        w.run_finished.emit(layer)

    def _record(self, run: dict[str, Any], outcome) -> dict[str, Any]:
        w = self.widget
        opts = run["options"]
        request: StackRequest = run["request"]
        cal = request.calibration
        base = {"task": w.task, "source": run["inp"].name, "factor": opts.factor if w.task == "super_resolve" else 1,
                "preset": run["preset"], "preset_resolved_on": run["resolved_on"],
                "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
                "tile": None, "history": None,
                "stack_job": {"store": outcome.store, "scheduler": outcome.scheduler, "run": outcome.run_number,
                              "planes_in_store": outcome.in_store,
                              "planes_resumed": [r.index for r in outcome.records if r.ending == "resumed"],
                              "workers": {int(k): v for k, v in outcome.workers.items()},
                              "calibration": None if cal is None else {"axes": cal.axes, "spacing": dict(cal.spacing),
                                                                       "units": dict(cal.units)}}}
        return run_record(outcome, outcome.n_planes, base)
