"""Stack jobs from a GUI: a :class:`~napari_dip.distributed.StackJob` run in a worker thread.

:func:`drive_stack` is the generator a napari worker runs. It connects to the scheduler (if any,
with a timeout and a plain message when it cannot), builds the job (the statistics pass, the
store: opened, or resumed when it holds the same job), and then yields a :class:`StackUpdate`
as each plane lands (planes finished by an earlier run first), plus a tick about once a second
so the GUI can show the time. It returns a :class:`StackOutcome`.

Cancelling (through a :class:`~napari_dip.glue.driver.RunControl`) stops the job cleanly:

* on a cluster, the client is closed at once, which makes the scheduler drop every plane task
  not finished (a task already running on a worker cannot be interrupted; it may still write its
  plane's chunk, but the plane is not recorded as done, so a resumed run fits it again);
* in this process, the plane in progress is finished (a fit cannot stop half-way inside the
  job) and recorded; no other plane starts.

Either way every plane recorded in the store stays there, and running the same job again with
the same store resumes with the others. Planes are numbered from 0 (stack indices) here.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .driver import PlaneRecord, RunControl, RunOutcome, format_duration, noise_record
from .layers import ImageInput
from .report import format_planes

__all__ = ["StackOutcome", "StackRequest", "StackUpdate", "connect_scheduler", "describe_stack_outcome",
           "drive_stack", "layer_calibration", "stack_progress_text"]

#: Seconds to wait for a scheduler to answer before saying it cannot be reached.
CONNECT_TIMEOUT = 15.0


@dataclass(frozen=True)
class StackRequest:
    """Everything a stack job needs, gathered in the GUI thread.

    Attributes
    ----------
    task : str
    data : array
        The input: a private numpy copy, or the layer's lazy (dask/zarr) array, read plane by plane.
    mask : ndarray or None
        Inpainting: a private copy of the mask.
    store : str or None
        The output ``.zarr`` store (resumable), or None to keep the output in memory.
    scheduler : str or None
        The dask scheduler's address, or None to fit in this process.
    rgb : bool
    calibration : Calibration or None
        The input's pixel size and axes (the store's OME-Zarr metadata).
    fit_kwargs : dict
        :class:`~napari_dip.distributed.StackJob` keywords (``iterations``, ``preset``, ``device``,
        ``seed``, ``precision``, ``factor``, ``kernel``, ...).
    connect_timeout : float
        Seconds to wait for the scheduler.
    """

    task: str
    data: Any
    mask: np.ndarray | None
    store: str | None
    scheduler: str | None
    rgb: bool
    calibration: Any
    fit_kwargs: dict[str, Any]
    connect_timeout: float = CONNECT_TIMEOUT


@dataclass(frozen=True)
class StackUpdate:
    """One event of a stack job for the GUI.

    Attributes
    ----------
    kind : {'ready', 'plane', 'tick', 'cancelling'}
        The job is built (``output`` is set); a plane landed (``event``); time passed; a cancel
        is being carried out (``message`` says what it waits for).
    elapsed : float
        Seconds since the run started.
    n_planes, landed, fitted : int
        Planes of the stack; planes landed so far (resumed ones included); planes fitted by this run.
    resumed : int
        Planes read back from the store (finished by an earlier run).
    event : PlaneDone or None
        The plane that landed (with ``'plane'``), or the last one that did (with ``'tick'``).
    output : array or None
        With ``'ready'``: the output array (the store's read-only zarr array, or the in-memory
        numpy array the job fills); the GUI shows it and refreshes it as planes land.
    workers : int
        Workers of the cluster (0 in this process).
    store : str or None
    run_number : int
        1 for a new store, +1 per resumption.
    seconds_left : float or None
        Expected time left from the rate planes landed at in this run (None before two planes).
    message : str
    """

    kind: str
    elapsed: float
    n_planes: int = 0
    landed: int = 0
    fitted: int = 0
    resumed: int = 0
    event: Any = None
    output: Any = None
    workers: int = 0
    store: str | None = None
    run_number: int = 1
    seconds_left: float | None = None
    message: str = ""


@dataclass
class StackOutcome(RunOutcome):
    """How a stack job ended: a :class:`~napari_dip.glue.driver.RunOutcome` (``data`` is the output
    array, ``records`` one per plane landed, ``resumed`` ones with ending ``'resumed'``) plus where
    it ran.

    Attributes
    ----------
    store, scheduler : str or None
    run_number : int
    workers : dict
        Plane index -> the worker that fitted it.
    in_store : list of int
        Planes recorded as done in the store when the run ended (may include planes that landed
        after a cancel, while the job was stopping).
    n_planes : int
    built : bool
        Whether the job was built (False: it failed before touching any store).
    """

    store: str | None = None
    scheduler: str | None = None
    run_number: int = 1
    workers: dict[int, str] = field(default_factory=dict)
    in_store: list[int] = field(default_factory=list)
    n_planes: int = 0
    built: bool = False

    @property
    def fitted(self) -> list[int]:
        """Planes that landed, in plane order (``records`` are in the order they landed, which on a
        cluster is not the planes' order)."""
        return sorted(r.index for r in self.records if r.finished)


class SchedulerUnreachable(ConnectionError):
    """The dask scheduler could not be reached (the message says why and what to check)."""


def connect_scheduler(address: str, timeout: float = CONNECT_TIMEOUT):
    """A ``distributed.Client`` of the scheduler at ``address`` (not the default client, so other dask
    work in napari does not move to the cluster).

    Raises
    ------
    SchedulerUnreachable
        If nothing answers at ``address`` within ``timeout`` seconds, or it is not an address.
    """
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SchedulerUnreachable(
            f"could not reach the dask scheduler at {address!r} within {timeout:.0f} s ({reason}). Check the address "
            "(e.g. tcp://head-node:8786) and that the scheduler is running; nothing was started or written") from None


def _current_in_this_thread(client) -> None:
    """Make ``client`` the current dask client of the calling thread only.

    ``StackJob`` waits for its planes with ``distributed.as_completed``, which looks up the
    current (or default) client. The client here is deliberately not the process's default (that
    would send every dask computation in napari, e.g. the slicing of lazy layers, to the cluster),
    and ``Client.as_current()`` would switch dask's global scheduler setting for all threads; so the
    thread-local current client is set directly, in the thread that iterates the planes.
    """
    from distributed.client import _current_client

    _current_client.set(client)


def layer_calibration(inp: ImageInput):
    """The :class:`~napari_dip.io.Calibration` of a layer: its axes (``Y``/``X`` last, ``T``/``Z``/``C``
    for leading axes labelled so, ``Q`` otherwise, ``S`` for RGB colours), and the scale and units of
    the ``X``, ``Y``, ``Z`` and ``T`` axes where the layer has a unit or a scale other than 1.
    None when the layer says nothing physical."""
    from ..io import Calibration, normalise_unit

    n = inp.ndim
    labels = [str(a).strip().lower() for a in (inp.placement.get("axis_labels") or ())]
    units = list(inp.placement.get("units") or ())
    named = {"t": "T", "time": "T", "z": "Z", "depth": "Z", "c": "C", "channel": "C"}
    letters = []
    for i in range(n):
        if i == n - 1:
            letters.append("X")
        elif i == n - 2:
            letters.append("Y")
        else:
            letter = named.get(labels[i] if i < len(labels) else "", "Q")
            letters.append("Q" if letter in letters else letter)
    spacing: dict[str, float] = {}
    unit_of: dict[str, str] = {}
    for i, letter in enumerate(letters):
        if letter not in "XYZT":
            continue
        unit = normalise_unit(str(units[i])) if i < len(units) and units[i] is not None else None
        scale = float(inp.scale[i])
        if unit is not None or scale != 1.0:
            spacing[letter] = scale
            if unit is not None:
                unit_of[letter] = unit
    if not spacing:
        return None
    return Calibration(axes="".join(letters) + ("S" if inp.rgb else ""), spacing=spacing, units=unit_of,
                       kind="napari")


def _record(event, auto: bool) -> PlaneRecord:
    """The :class:`PlaneRecord` of a landed plane (no convergence evidence: it is not measured on workers)."""
    if event.resumed:
        return PlaneRecord(event.index, "resumed", 0, 0, tiles=0, tiles_done=0)
    if event.skipped:
        return PlaneRecord(event.index, "copied", 0, 0, tiles=0, tiles_done=0, seconds=event.seconds)
    h = event.history or {}
    its, best = int(h.get("iterations", 0)), int(h.get("best_iteration", 0))
    ending = ("rule" if h.get("stopped_early") else "cap") if auto else "fixed"
    return PlaneRecord(event.index, ending, its, best, rollbacks=int(h.get("rollbacks", 0)), seconds=event.seconds,
                       noise=noise_record(h))


def drive_stack(request: StackRequest, control: RunControl | None = None, interval: float = 1.0,
                clock=time.monotonic) -> Generator[StackUpdate, None, StackOutcome]:
    """Run a stack job for a GUI (see the module docstring); never raises for the job's failures:
    they end as ``state='failed'`` with ``error`` set, keeping the planes recorded in the store."""
    control = control or RunControl()
    start = clock()
    auto = request.fit_kwargs.get("iterations", "auto") == "auto"
    client = job = None
    records: list[PlaneRecord] = []
    workers: dict[int, str] = {}
    state, error = "finished", None
    built = False
    pump: threading.Thread | None = None
    stop_pump = threading.Event()

    def outcome(data: Any = None) -> StackOutcome:
        n = job.n_planes if job is not None else 0
        in_store = [int(s) for s in np.flatnonzero(job.done)] if job is not None else []
        return StackOutcome(data=data, records=records, selected=list(range(n)), state=state, error=error,
                            seconds=clock() - start, store=getattr(job, "store", None), scheduler=request.scheduler,
                            run_number=getattr(job, "run_number", 1), workers=workers, in_store=in_store,
                            n_planes=n, built=built)

    try:
        from ..distributed import StackJob

        if request.scheduler:
            yield StackUpdate("tick", clock() - start, message=f"connecting to {request.scheduler} ...")
            client = connect_scheduler(request.scheduler, request.connect_timeout)
        yield StackUpdate("tick", clock() - start, message="reading the stack (intensities, checks, fingerprint) ...")
        job = StackJob(request.task, request.data, mask=request.mask, store=request.store, scheduler=client,
                       rgb=request.rgb, calibration=request.calibration, **request.fit_kwargs)
        built = True
    except Exception as err:  # noqa: BLE001 - a failure before any plane: reported, nothing kept
        if client is not None:
            client.close()
        state, error = "failed", err
        return outcome()
    n_workers = len(client.scheduler_info().get("workers", {})) if client is not None else 0
    resumed = int(job.done.sum())
    ready = clock()
    yield StackUpdate("ready", ready - start, n_planes=job.n_planes, resumed=resumed, output=job.output,
                      workers=n_workers, store=job.store, run_number=job.run_number)

    events: queue.Queue = queue.Queue()

    def run_planes() -> None:
        """Iterate the job's planes in a thread of its own, so that waiting for the next plane
        never stops the GUI's worker from seeing a cancel."""
        try:
            if client is not None:
                _current_in_this_thread(client)
            for event in job.planes():
                events.put(("plane", event))
                if stop_pump.is_set():
                    break
        except BaseException as err:  # noqa: BLE001 - handed to the driver
            events.put(("error", err))
        events.put(("end", None))

    pump = threading.Thread(target=run_planes, name="napari-dip stack job", daemon=True)
    pump.start()
    landed = fitted = 0
    cancelling = False
    last = None

    def left() -> float | None:
        """Expected seconds left, from the rate planes were fitted at in this run (after two)."""
        if fitted < 2:
            return None
        return max((clock() - ready) / fitted * (job.n_planes - landed), 0.0)

    try:
        while True:
            try:
                kind, item = events.get(timeout=interval)
            except queue.Empty:
                kind, item = "tick", None
            if kind == "end":
                break
            if kind == "error":
                if not cancelling:  # a failure caused by the cancel (the closed client) is the cancel
                    state, error = "failed", item
                break
            if kind == "plane":
                landed += 1
                fitted += 0 if item.resumed else 1
                records.append(_record(item, auto))
                if item.worker is not None and not item.resumed:
                    workers[item.index] = item.worker
                last = item
                yield StackUpdate("plane", clock() - start, job.n_planes, landed, fitted, resumed, item,
                                  workers=n_workers, store=job.store, run_number=job.run_number, seconds_left=left())
                continue
            if control.cancelled and not cancelling:
                cancelling = True
                state = "cancelled"
                stop_pump.set()
                job.cancel()
                if client is not None:
                    client.close()  # the scheduler drops every plane task not finished
                    message = "stopping: the cluster drops the planes not finished ..."
                else:
                    message = "stopping after the plane in progress (in this process a plane cannot stop half-way) ..."
                yield StackUpdate("cancelling", clock() - start, job.n_planes, landed, fitted, resumed,
                                  workers=n_workers, store=job.store, run_number=job.run_number, message=message)
                continue
            if kind == "tick":
                yield StackUpdate("tick", clock() - start, job.n_planes, landed, fitted, resumed, last,
                                  workers=n_workers, store=job.store, run_number=job.run_number,
                                  seconds_left=None if cancelling else left())
    finally:
        # napari's worker.quit() closes this generator at a yield: stop the job the same way
        stop_pump.set()
        job.cancel()
        if client is not None:
            client.close()
    if pump is not None:
        pump.join(timeout=30.0)
    if state == "finished" and landed < job.n_planes:  # the planes generator ended early
        state = "cancelled" if control.cancelled else "failed"
    return outcome(job.output)


def stack_progress_text(u: StackUpdate, title: str) -> str:
    """Two lines for the status while a stack job runs."""
    where = f"on {u.workers} worker{'s' if u.workers != 1 else ''}" if u.workers else "in this process"
    if u.kind == "ready" or (u.kind == "tick" and not u.n_planes):
        head = u.message or f"{title}: stack job ready, {where}"
        if u.kind == "ready":
            head = f"{title}: {u.n_planes} planes, {where}" + (
                f"; {u.resumed} already in the store (resumed)" if u.resumed else "")
    elif u.kind == "cancelling":
        head = f"{title}: {u.message}"
    elif u.event is not None:
        e = u.event
        what = "read from the store" if e.resumed else (f"fitted in {format_duration(e.seconds)}" +
                                                         (f" on {e.worker}" if e.worker else ""))
        head = f"{u.landed}/{u.n_planes} planes, {where}; last: plane {e.index + 1} ({what})"
    else:
        head = f"{u.landed}/{u.n_planes} planes, {where}" + (f"; {u.resumed} resumed" if u.resumed else "")
    if u.seconds_left is not None:
        tail = f"~{format_duration(u.seconds_left)} left at this run's rate; {format_duration(u.elapsed)} elapsed"
    else:
        tail = f"{format_duration(u.elapsed)} elapsed" + ("; waiting for planes to land ..." if u.n_planes else "")
    return f"{head}\n{tail}"


def describe_stack_outcome(outcome: StackOutcome, title: str, cap: int, layer_name: str | None = None
                           ) -> tuple[str, str]:
    """The end-of-run message of a stack job and its severity (``'info'``, ``'warning'``, ``'error'``)."""
    from .report import _endings

    took = format_duration(outcome.seconds)
    n = outcome.n_planes
    stored = outcome.in_store
    where = f"the store {outcome.store}" if outcome.store else "memory"
    resume = ("; run it again with the same store to resume with the other "
              f"{n - len(stored)}") if outcome.store and len(stored) < n else ""
    if not outcome.built:
        return f"{title} failed: {outcome.error}", "error"
    if outcome.state == "finished":
        head, severity = f"{title} stack job done in {took}: {n} of {n} planes in {where}", "info"
    elif outcome.state == "cancelled":
        head = (f"{title} stack job cancelled after {took}: {len(stored)} of {n} planes are in {where}"
                + (f" ({format_planes(stored)})" if stored else "") + resume)
        severity = "warning"
    else:
        head = (f"{title} stack job failed after {took}: {outcome.error}. {len(stored)} of {n} planes are in {where}"
                + (f" ({format_planes(stored)})" if stored else "") + resume)
        severity = "error"
    sentences = [head]
    sentences.extend(_endings([r for r in outcome.records if r.finished], cap, n > 1))
    if any(r.ending == "cap" for r in outcome.records) and severity == "info":
        severity = "warning"
    if layer_name:
        sentences.append(f"Layer {layer_name!r}")
    return ". ".join(sentences) + ".", severity
