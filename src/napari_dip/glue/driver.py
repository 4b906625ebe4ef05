"""Driving a restoration for a GUI: throttled updates, time estimates, per-plane records, honest ends.

:func:`drive` is the generator a napari worker runs in its thread. It steps the core's
:meth:`~napari_dip.core.restore.Restoration.steps` and, instead of handing every iteration's
snapshot to the GUI thread, yields an :class:`Update` at most every ``interval`` seconds (plus
one at each event: a new plane or tile, a finished plane, a roll-back), carrying everything the
GUI shows: the latest snapshot, the loss and stop-signal points since the last update, the latest
preview of the plane, the planes finished since the last update (their kept estimates, copied
here rather than in the GUI thread) and a :class:`TimeEstimate`.

It returns a :class:`RunOutcome`: the layer data (built in the worker thread), one
:class:`PlaneRecord` per fitted plane (how it ended: stopped by which rule at which iteration,
reached the cap, ran a fixed count, cancelled; and the engine's evidence of convergence from
:mod:`napari_dip.core.convergence`), and, after a cancel or failure mid-plane, that plane's
partial estimate kept apart.

The GUI asks for a cancel or a "stop after this plane" through a :class:`RunControl`; both are
seen after the current iteration. Planes outside a selection are skipped (:func:`select_planes`)
and stay NaN, which napari draws transparent: the input shows through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PlaneRecord", "RunControl", "RunOutcome", "TimeEstimate", "TimeEstimator", "Update", "drive",
           "format_duration", "outcome_from_job", "select_planes"]


def format_duration(seconds: float) -> str:
    """``'45 s'``, ``'12 min'``, ``'3 h 05 min'`` (rounded to what matters at that scale)."""
    if not np.isfinite(seconds):
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    hours, rest = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h {rest:02d} min"


class RunControl:
    """Requests from the GUI thread to the worker running :func:`drive` (thread-safe)."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._stop_after_plane = threading.Event()

    def cancel(self) -> None:
        """Stop after the iteration in progress."""
        self._cancel.set()

    def stop_after_plane(self) -> None:
        """Finish the plane in progress, then stop."""
        self._stop_after_plane.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def stopping_after_plane(self) -> bool:
        return self._stop_after_plane.is_set()


@dataclass(frozen=True)
class TimeEstimate:
    """Where a run stands in time (seconds).

    ``plane_left`` and ``run_left`` are the expected remaining times: with automatic stopping,
    before any fit has ended they assume the cap, afterwards the mean iteration count of the fits
    that ended. ``plane_max`` and ``run_max`` assume every fit runs to its cap. All are None until
    enough iterations were timed (see :class:`TimeEstimator`).
    """

    elapsed: float
    seconds_per_iteration: float | None = None
    plane_left: float | None = None
    plane_max: float | None = None
    run_left: float | None = None
    run_max: float | None = None
    #: whether the expected figures rest on fits that already ended (else they are the caps)
    from_finished_fits: bool = False

    @property
    def ready(self) -> bool:
        return self.seconds_per_iteration is not None


class TimeEstimator:
    """Seconds per iteration (timed over recent iterations) and the time left, refined as fits end.

    Parameters
    ----------
    fits_per_plane : int
        Tiles per plane (1 untiled).
    planes : int
        Planes this run fits.
    auto : bool
        Automatic stopping (a fit may end before its cap).
    min_iterations, min_seconds : int, float
        The estimate is given once this many iterations were timed in the run, or this many
        seconds of iterations (and at least 2 iterations).
    """

    def __init__(self, fits_per_plane: int, planes: int, auto: bool, min_iterations: int = 10,
                 min_seconds: float = 2.0, window: int = 50):
        self.fits_per_plane = max(1, int(fits_per_plane))
        self.planes = max(1, int(planes))
        self.auto = bool(auto)
        self.min_iterations, self.min_seconds, self.window = int(min_iterations), float(min_seconds), int(window)
        self._intervals: list[float] = []
        self._last: float | None = None
        self._timed = 0
        self._timed_seconds = 0.0
        self.ended_fits: list[int] = []
        self._setups: list[float] = []
        self._fit_started: float | None = None

    def fit_started(self, now: float) -> None:
        """A new fit (plane or tile) is being set up from ``now``."""
        self._fit_started = now
        self._last = None

    def iteration(self, now: float, iteration: int) -> None:
        """Iteration ``iteration`` of the current fit ended at ``now``."""
        if self._last is not None:
            dt = now - self._last
            self._intervals.append(dt)
            if len(self._intervals) > self.window:
                del self._intervals[0]
            self._timed += 1
            self._timed_seconds += dt
        elif self._fit_started is not None and iteration == 1 and self._intervals:
            # setup plus the first iteration, less a typical iteration: the per-fit overhead
            self._setups.append(max(0.0, now - self._fit_started - float(np.median(self._intervals))))
        self._last = now

    def fit_ended(self, iterations: int) -> None:
        self.ended_fits.append(int(iterations))
        self._last = None

    @property
    def seconds_per_iteration(self) -> float | None:
        if self._timed < 2 or (self._timed < self.min_iterations and self._timed_seconds < self.min_seconds):
            return None
        return float(np.median(self._intervals))

    def estimate(self, elapsed: float, iteration: int, cap: int, fit_in_plane: int, planes_done: int
                 ) -> TimeEstimate:
        """The estimate at ``iteration`` of fit ``fit_in_plane`` (0-based tile) with ``planes_done``
        planes of this run finished."""
        spi = self.seconds_per_iteration
        if spi is None:
            return TimeEstimate(elapsed)
        setup = float(np.mean(self._setups)) if self._setups else 0.0
        cap = max(int(cap), 1)
        expected = float(np.mean(self.ended_fits)) if (self.auto and self.ended_fits) else float(cap)
        now_left = max(expected - iteration, 0.0) if self.auto else float(max(cap - iteration, 0))
        now_max = float(max(cap - iteration, 0))
        tiles_left = self.fits_per_plane - fit_in_plane - 1
        planes_left = max(self.planes - planes_done - 1, 0)
        per_fit, per_fit_max = expected * spi + setup, cap * spi + setup
        plane_left = now_left * spi + tiles_left * per_fit
        plane_max = now_max * spi + tiles_left * per_fit_max
        run_left = plane_left + planes_left * self.fits_per_plane * per_fit
        run_max = plane_max + planes_left * self.fits_per_plane * per_fit_max
        return TimeEstimate(elapsed, spi, plane_left, plane_max, run_left, run_max,
                            from_finished_fits=bool(self.auto and self.ended_fits))


@dataclass(frozen=True)
class PlaneRecord:
    """How the fit of one plane ended.

    Attributes
    ----------
    index : int
        The plane's index in the stack (0-based, leading axes flattened in C order).
    ending : {'rule', 'cap', 'fixed', 'cancelled', 'failed', 'copied', 'resumed'}
        Stopped by its automatic rule; reached the cap before the rule fired; ran the fixed count;
        cancelled or failed mid-fit; copied through (inpainting, nothing to fill in); or finished by
        an earlier run of a resumed stack job (:mod:`napari_dip.glue.stackjob`).
    iterations : int
        Iterations run (summed over tiles).
    best_iteration : int
        Iteration the kept estimate comes from (of the last tile when tiled).
    rule : str or None
        The automatic rule (``'holdout'``, ``'discrepancy'``, ``'wmv'``); None for fixed counts.
    evidence : dict or None
        :meth:`~napari_dip.core.convergence.Evidence.as_dict` of the estimate (the tile furthest
        from converged when tiled); None where not measured.
    converged : bool
        Whether the evidence says the estimate is converged (True without evidence, False for an
        incomplete tiled plane).
    tiles, tiles_done : int
        Tiles of the plane, and tiles finished.
    rollbacks : int
        Loss blow-ups recovered from.
    seconds : float
        Wall time of the plane.
    fit_iteration : int
        For a cancelled or failed plane: the iteration reached in the fit (tile) in progress.
    noise : dict or None
        The plane's noise model (:func:`noise_record`): the model fitted, the one asked for, and with
        the Poisson-Gaussian model the camera parameters and whether they were estimated or given;
        ``fusion`` (whether the noisy pixels were weighed back in, :mod:`napari_dip.core.fusion`), its
        ``fusion_weight`` (the mean weight of the noisy pixels) and a ``fusion_note`` where it was not.
    """

    index: int
    ending: str
    iterations: int
    best_iteration: int
    rule: str | None = None
    evidence: dict[str, Any] | None = None
    converged: bool = True
    tiles: int = 1
    tiles_done: int = 1
    rollbacks: int = 0
    seconds: float = 0.0
    fit_iteration: int = 0
    noise: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """The plane's fit ran to its end (not cancelled or failed)."""
        return self.ending in ("rule", "cap", "fixed", "copied", "resumed")

    def as_dict(self) -> dict[str, Any]:
        return {"plane": self.index, "ending": self.ending, "iterations": self.iterations,
                "best_iteration": self.best_iteration, "rule": self.rule, "converged": self.converged,
                "evidence": self.evidence, "tiles": self.tiles, "tiles_done": self.tiles_done,
                "rollbacks": self.rollbacks, "seconds": round(self.seconds, 3), "noise": self.noise}


#: ``history`` keys of a fit's noise model (:meth:`~napari_dip.core.noise.NoisePlan.history`) -> record keys.
_NOISE_KEYS = {"noise_model": "model", "noise_model_requested": "requested", "noise_source": "source",
               "noise_gain": "gain", "noise_read_variance": "read_variance", "noise_offset": "offset",
               "noise_note": "note", "pixel_fusion": "fusion", "pixel_fusion_source": "fusion_source",
               "pixel_fusion_weight": "fusion_weight", "pixel_fusion_note": "fusion_note"}


def noise_record(history: dict[str, Any] | None) -> dict[str, Any] | None:
    """The noise model of a fit's ``history`` as a record entry (None when the history has none).

    Per-channel camera parameters stay lists when the channels differ; a single value otherwise.
    """
    if not history or "noise_model" not in history:
        return None
    out: dict[str, Any] = {}
    for key, name in _NOISE_KEYS.items():
        if key not in history:
            continue
        value = history[key]
        if key in ("noise_gain", "noise_read_variance", "noise_offset"):
            values = [round(float(v), 6) for v in value]
            out[name] = values[0] if len(set(values)) == 1 else values
        else:
            out[name] = value[-1] if isinstance(value, list) else value
    return out


@dataclass(frozen=True)
class Update:
    """What the GUI shows of a running fit, sent at most every ``interval`` seconds plus at events.

    Attributes
    ----------
    snapshot : Snapshot
        The latest snapshot.
    plane, plane_number, planes : int
        The plane being fitted (stack index), its position in this run (1-based), and how many
        planes this run fits.
    tile, tiles : int
        The tile being fitted (1-based) and tiles per plane.
    fit : int
        Counter of fits (planes and tiles) in this run: the plot restarts when it changes.
    losses, signals : tuple of (iteration, value)
        New points of the current fit since the last update.
    preview : ndarray or None
        The latest preview of the plane (``(H, W, C)``, input units), if one came since the last update.
    done : tuple of (int, ndarray)
        Planes finished since the last update, with their kept estimates (copies).
    records : tuple of PlaneRecord
        Their records.
    events : tuple of str
        Things to tell the user once (roll-backs).
    time : TimeEstimate
    planes_done : int
        Planes of this run finished so far.
    """

    snapshot: Any
    plane: int
    plane_number: int
    planes: int
    tile: int
    tiles: int
    fit: int
    losses: tuple[tuple[int, float], ...] = ()
    signals: tuple[tuple[int, float], ...] = ()
    preview: np.ndarray | None = None
    done: tuple[tuple[int, np.ndarray], ...] = ()
    records: tuple[PlaneRecord, ...] = ()
    events: tuple[str, ...] = ()
    time: TimeEstimate = field(default_factory=lambda: TimeEstimate(0.0))
    planes_done: int = 0


@dataclass
class RunOutcome:
    """The end of a run, built in the worker thread.

    Attributes
    ----------
    data : ndarray
        The output layer's data: finished planes, NaN for planes not fitted; the partial plane
        only if ``partial_kept``.
    records : list of PlaneRecord
        One per plane this run worked on (finished, and the partial one if any), in order.
    selected : list of int
        The planes this run was asked to fit.
    state : {'finished', 'stopped_after_plane', 'cancelled', 'failed'}
    partial : tuple (int, ndarray) or None
        After a cancel or failure mid-plane: that plane's index and estimate so far.
    partial_kept : bool
        Whether ``data`` includes the partial estimate: when the evidence says it converged, or when
        it is the only estimate of the run (nothing finished; then it is flagged, not hidden).
    error : BaseException or None
    seconds : float
    """

    data: np.ndarray
    records: list[PlaneRecord]
    selected: list[int]
    state: str
    partial: tuple[int, np.ndarray] | None = None
    partial_kept: bool = False
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def fitted(self) -> list[int]:
        """Planes whose fit ran to its end."""
        return [r.index for r in self.records if r.finished]

    @property
    def in_data(self) -> list[int]:
        """Planes with an estimate in ``data``."""
        planes = self.fitted
        if self.partial is not None and self.partial_kept:
            planes = sorted({*planes, self.partial[0]})
        return planes

    @property
    def not_converged(self) -> list[int]:
        """Planes in ``data`` whose estimate the evidence says is not converged."""
        keep = set(self.in_data)
        return [r.index for r in self.records if r.index in keep and not r.converged]


def select_planes(job, planes: Sequence[int] | None) -> list[int]:
    """Restrict ``job`` to ``planes`` (stack indices; None: all) and return them, sorted.

    The core fits the planes whose ``done`` flag is False, so the others are marked as done before
    the run starts; their output stays NaN. Call before the run.

    Raises
    ------
    ValueError
        For an empty selection or an index outside the stack.
    """
    n = job.n_slices
    if planes is None:
        return list(range(n))
    chosen = sorted({int(p) for p in planes})
    if not chosen:
        raise ValueError("no plane selected")
    bad = [p + 1 for p in chosen if not 0 <= p < n]
    if bad:
        raise ValueError(f"plane(s) {bad} outside the stack's {n} planes")
    keep = np.zeros(n, dtype=bool)
    keep[chosen] = True
    job.done[~keep] = True
    return chosen


class _Fit:
    """Book-keeping of the fit (plane or tile) in progress."""

    def __init__(self, fitter, plane: int, tile: int, started: float, measure: bool = True):
        self.fitter = fitter
        self.plane = plane
        self.tile = tile
        self.started = started
        self.measure = measure
        self.noise: float | None = None

    def evidence(self):
        from ..core.convergence import fit_evidence

        if not self.measure:
            return None
        ev = fit_evidence(self.fitter, self.noise)
        if ev is not None:
            self.noise = ev.noise
        return ev


def _worst(evidences: list) -> Any:
    return max(evidences, key=lambda e: e.unexplained) if evidences else None


def drive(job, control: RunControl | None = None, planes: Sequence[int] | None = None,
          interval: float = 0.1, clock=time.monotonic, evidence: bool = True) -> Generator[Update, None, RunOutcome]:
    """Run ``job`` (a :class:`~napari_dip.core.restore.Restoration`), yielding :class:`Update`\\ s and
    returning a :class:`RunOutcome`.

    Parameters
    ----------
    job : Restoration
        Not started yet; if ``planes`` is given, restricted with :func:`select_planes` first.
    control : RunControl, optional
        Cancel and stop-after-plane requests (checked after every iteration).
    planes : sequence of int, optional
        Stack indices to fit (default: all).
    interval : float
        Least seconds between two updates without an event.
    clock : callable
        Monotonic seconds (injectable for tests).
    evidence : bool
        Measure how far each kept estimate is from converged
        (:func:`~napari_dip.core.convergence.fit_evidence`). Off for fits that are meant to stop
        early (the coarse fit of an enhancement) or have no measurement to compare the estimate
        with (a pre-image): their records carry no evidence and are never flagged.

    Notes
    -----
    Errors inside the fit do not escape: the outcome has ``state='failed'`` and ``error`` set, and
    keeps what was finished. Closing the generator early (napari's ``worker.quit()``) skips the
    outcome.
    """
    from ..core.layout import get_plane, put_plane

    control = control or RunControl()
    selected = select_planes(job, planes)
    tiles = len(job.regions())
    total_planes = len(selected)
    position = {p: i + 1 for i, p in enumerate(selected)}
    start = clock()
    estimator = TimeEstimator(tiles, total_planes, job.iterations == "auto")
    records: list[PlaneRecord] = []
    steps = job.steps()
    fit: _Fit | None = None
    fit_count = 0
    plane_evidence: list = []
    plane_iterations = 0
    plane_rollbacks = 0
    plane_started = start
    losses: list[tuple[int, float]] = []
    signals: list[tuple[int, float]] = []
    done: list[tuple[int, np.ndarray]] = []
    new_records: list[PlaneRecord] = []
    events: list[str] = []
    preview = None
    last_yield = -np.inf
    snap = None
    state, error = "finished", None
    seen_done = set(np.flatnonzero(job.done).tolist())

    def collect_done() -> None:
        """Planes the core finished (or copied through) since the last look: copy their estimates."""
        nonlocal plane_iterations, plane_rollbacks, plane_evidence
        for s in np.flatnonzero(job.done).tolist():
            if s in seen_done:
                continue
            seen_done.add(s)
            fitted = job.fits[s]
            image = get_plane(job.layout, job.output, s).copy()
            done.append((s, image))
            if fitted is None:  # copied through: inpainting with nothing to fill in
                rec = PlaneRecord(s, "copied", 0, 0, tiles=0, tiles_done=0)
            else:
                ev = _worst(plane_evidence)
                auto = job.iterations == "auto"
                ending = ("rule" if fitted.stopped_early else "cap") if auto else "fixed"
                rec = PlaneRecord(s, ending, int(fitted.iterations), int(fitted.best_iteration),
                                  rule=_rule_of(fit), evidence=None if ev is None else ev.as_dict(),
                                  converged=True if ev is None else ev.converged, tiles=tiles, tiles_done=tiles,
                                  rollbacks=plane_rollbacks, seconds=clock() - plane_started,
                                  noise=noise_record(fitted.history))
            records.append(rec)
            new_records.append(rec)
            plane_evidence, plane_iterations, plane_rollbacks = [], 0, 0

    pending_end = False  # the last snapshot ended a plane: the core stores it at the next step
    last_time = start
    try:
        while True:
            if control.cancelled and not pending_end:
                state = "cancelled"
                break
            try:
                snap = next(steps)
            except StopIteration:
                collect_done()
                break
            now = clock()
            current = job.current
            new_fit = fit is None or current is not fit.fitter
            if new_fit:
                collect_done()  # the previous plane may have ended
                new_plane = fit is None or fit.plane != snap.slice_index
                if fit is not None and new_plane and (control.cancelled or control.stopping_after_plane):
                    # the plane in progress was finished and stored; stop before the next one
                    state = "cancelled" if control.cancelled else "stopped_after_plane"
                    break
                tile = 1 if new_plane else fit.tile + 1
                if new_plane:
                    plane_started = last_time
                fit = _Fit(current, snap.slice_index, tile, now, evidence)
                fit_count += 1
                estimator.fit_started(last_time)
                losses, signals, preview = [], [], None
            estimator.iteration(now, snap.iteration)
            last_time = now
            if snap.loss is not None:
                losses.append((snap.iteration, float(snap.loss)))
            if snap.stop_signal is not None:
                signals.append((snap.iteration, float(snap.stop_signal)))
            image = snap.ema if snap.ema is not None else snap.image
            if image is not None:
                preview = image
            if snap.rolled_back:
                plane_rollbacks += 1
                events.append(f"plane {snap.slice_index + 1}: {snap.message}" if job.n_slices > 1
                              else str(snap.message))
            last = snap.stopped or snap.iteration >= snap.total
            pending_end = last and fit.tile == tiles
            if last:  # the fit (tile or plane) ends: measure it before the core moves on
                ev = fit.evidence()
                if ev is not None:
                    plane_evidence.append(ev)
                plane_iterations += snap.iteration
                estimator.fit_ended(snap.iteration)
            event = new_fit or last or snap.rolled_back or bool(done)
            if event or now - last_yield >= interval:
                finished = sum(r.finished for r in records)
                est = estimator.estimate(now - start, snap.iteration, snap.total, fit.tile - 1, finished)
                yield Update(snap, snap.slice_index, position.get(snap.slice_index, 0), total_planes, fit.tile,
                             tiles, fit_count, tuple(losses), tuple(signals), preview, tuple(done),
                             tuple(new_records), tuple(events), est, finished)
                last_yield = clock()
                losses, signals, preview, done, new_records, events = [], [], None, [], [], []
    except Exception as err:  # noqa: BLE001 - reported through the outcome, with what was kept
        state, error = "failed", err
    finally:
        steps.close()

    # -- the outcome (still in the worker thread) ------------------------------------------------
    partial = None
    partial_kept = False
    if state == "finished":
        data = job.output
    else:
        current = job.current
        has = current is not None and current.has_estimate and fit is not None and fit.fitter is current \
            and not job.done[fit.plane]
        partial = _partial(job, fit, state, tiles, plane_evidence, plane_iterations, plane_rollbacks,
                           clock() - plane_started) if has and state in ("cancelled", "failed") else None
        if partial is not None:
            data, rec, image = partial
            records.append(rec)
            partial = (rec.index, image)
            nothing_else = not any(r.finished and r.ending != "copied" for r in records)
            partial_kept = bool(rec.converged or nothing_else)
            if partial_kept:
                put_plane(job.layout, data, rec.index, image)
        if partial is None:
            data = job.output.copy()
    return RunOutcome(data=data, records=records, selected=selected, state=state, partial=partial,
                      partial_kept=partial_kept, error=error, seconds=clock() - start)


def outcome_from_job(job, selected: Sequence[int], state: str = "cancelled", seconds: float = 0.0) -> RunOutcome:
    """The outcome of a run whose :func:`drive` generator was closed before it could return one
    (e.g. by napari's ``worker.quit()``): the finished planes only, without convergence evidence."""
    auto = job.iterations == "auto"
    records = []
    for s in selected:
        if not job.done[s]:
            continue
        fitted = job.fits[s]
        if fitted is None:
            records.append(PlaneRecord(s, "copied", 0, 0, tiles=0, tiles_done=0))
        else:
            ending = ("rule" if fitted.stopped_early else "cap") if auto else "fixed"
            records.append(PlaneRecord(s, ending, int(fitted.iterations), int(fitted.best_iteration),
                                       noise=noise_record(fitted.history)))
    return RunOutcome(data=job.output.copy(), records=records, selected=list(selected), state=state,
                      seconds=seconds)


def _partial(job, fit: _Fit, state: str, tiles: int, plane_evidence: list, plane_iterations: int,
             rollbacks: int, seconds: float):
    """``(data, record, image)`` for the plane in progress at a cancel or failure: ``data`` is a copy of
    the output with that plane NaN, ``image`` the plane's estimate so far; None if it cannot be had."""
    from ..core.layout import get_plane, put_plane

    current = fit.fitter
    try:
        data = job.result(cancelled=True)  # a copy: finished planes and the partial one
        image = get_plane(job.layout, data, fit.plane).copy()
        ev = fit.evidence()
    except Exception:  # noqa: BLE001 - e.g. the device failed: keep the finished planes only
        return None
    put_plane(job.layout, data, fit.plane, np.full_like(image, np.nan))
    worst = _worst([*plane_evidence, *([] if ev is None else [ev])])
    complete = fit.tile == tiles  # every tile reached (the last one partly)
    converged = complete and (worst is None or worst.converged) and bool(np.isfinite(image).all())
    best = current.best_iteration if current.auto and current.best is not None else current.iteration
    rec = PlaneRecord(fit.plane, "cancelled" if state == "cancelled" else "failed",
                      plane_iterations + current.iteration, int(best), rule=_rule_of(fit),
                      evidence=None if worst is None else worst.as_dict(), converged=bool(converged), tiles=tiles,
                      tiles_done=fit.tile - 1, rollbacks=rollbacks, seconds=seconds,
                      fit_iteration=int(current.iteration), noise=_plan_record(job, fit.plane))
    return data, rec, image


def _plan_record(job, s: int) -> dict[str, Any] | None:
    """:func:`noise_record` of plane ``s``'s noise plan (a plane in progress has no fit result yet)."""
    plans = getattr(job, "noise", None)
    plan = plans[s] if plans is not None and s < len(plans) else None
    return None if plan is None else noise_record(plan.history())


def _rule_of(fit: _Fit | None) -> str | None:
    if fit is None or not fit.fitter.auto:
        return None
    rules = getattr(fit.fitter, "stop_rules", None) or []
    return rules[0] if rules else None
