"""Words for a run: its progress line, its end state, and the record kept in the output layer.

Pure functions of :mod:`napari_dip.glue.driver`'s updates and outcomes, so the widgets, scripts
and tests share one wording. Planes are numbered from 1 in messages and from 0 (stack indices) in
the metadata record.
"""

from __future__ import annotations

from typing import Any

from .driver import PlaneRecord, RunOutcome, TimeEstimate, Update, format_duration

__all__ = ["RULE_NAMES", "describe_outcome", "format_planes", "progress_text", "run_record"]

#: How messages name the automatic stopping rules.
RULE_NAMES = {"holdout": "the hold-out rule", "discrepancy": "the noise-level (discrepancy) rule",
              "wmv": "the ES-WMV rule"}


def format_planes(indices: list[int]) -> str:
    """1-based plane numbers with runs joined: ``[0, 1, 2, 5]`` -> ``'1-3, 6'``."""
    numbers = sorted({i + 1 for i in indices})
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ", ".join(parts)


def _time_text(t: TimeEstimate, stack: bool, auto: bool) -> str:
    elapsed = f"{format_duration(t.elapsed)} elapsed"
    if not t.ready:
        return f"{elapsed}; timing the first iterations ..."
    if stack:
        if t.from_finished_fits or not auto:
            left = (f"this plane ~{format_duration(t.plane_left)}, the run ~{format_duration(t.run_left)} left"
                    + (f" (at most {format_duration(t.run_max)})" if auto else ""))
        else:
            left = (f"this plane at most {format_duration(t.plane_max)}, the run at most "
                    f"{format_duration(t.run_max)} (at the cap; auto stop usually ends sooner)")
    elif t.from_finished_fits or not auto:
        left = f"~{format_duration(t.run_left)} left" + (f" (at most {format_duration(t.run_max)})" if auto else "")
    else:
        left = f"at most {format_duration(t.run_max)} left (at the cap; auto stop usually ends sooner)"
    return f"{left}; {elapsed}"


def progress_text(u: Update, auto: bool) -> str:
    """Two lines for the status while a fit runs: where it is, and the time left."""
    snap = u.snapshot
    parts = []
    if u.plane + 1 != u.plane_number:  # some planes selected: the plane's own number, then the count
        parts.append(f"plane {u.plane + 1} ({u.plane_number} of {u.planes})")
    elif u.planes > 1:
        parts.append(f"plane {u.plane_number}/{u.planes}")
    if u.tiles > 1:
        parts.append(f"tile {u.tile}/{u.tiles}")
    parts.append(f"iteration {snap.iteration}/{snap.total}")
    if u.time.seconds_per_iteration is not None:
        spi = u.time.seconds_per_iteration
        parts.append(f"{spi:.2f} s/it" if spi >= 0.01 else f"{1 / spi:.0f} it/s")
    return ", ".join(parts) + "\n" + _time_text(u.time, u.planes > 1, auto)


def _missed(rec: PlaneRecord) -> str:
    """``'misses 51 %'`` of the image's structure, from the record's evidence ('' without)."""
    ev = rec.evidence
    if not ev:
        return ""
    return f"misses {min(100.0, 100 * ev['unexplained']):.0f} %"


def _rules(records: list[PlaneRecord]) -> str:
    names = sorted({r.rule for r in records if r.rule})
    return " / ".join(RULE_NAMES.get(x, x) for x in names) or "the stopping rule"


def _planes(n: int) -> str:
    return f"{n} plane" + ("" if n == 1 else "s")


def _span(records: list[PlaneRecord]) -> str:
    its = [r.iterations for r in records]
    return f"iteration {its[0]}" if min(its) == max(its) else f"iterations {min(its)}-{max(its)}"


def _endings(records: list[PlaneRecord], cap: int, stack: bool) -> list[str]:
    """Sentences on how the finished planes ended."""
    fitted = [r for r in records if r.finished and r.ending != "copied"]
    by_rule = [r for r in fitted if r.ending == "rule"]
    capped = [r for r in fitted if r.ending == "cap"]
    fixed = [r for r in fitted if r.ending == "fixed"]
    copied = [r for r in records if r.ending == "copied"]
    resumed = [r for r in records if r.ending == "resumed"]
    out = []
    if by_rule and stack:
        out.append(f"{_planes(len(by_rule))} stopped by {_rules(by_rule)} ({_span(by_rule)})")
    elif by_rule:
        r = by_rule[0]
        out.append(f"Stopped by {_rules(by_rule)} at iteration {r.iterations}; estimate from iteration "
                   f"{r.best_iteration}")
    if capped:
        where = f"{_planes(len(capped))} ({format_planes([r.index for r in capped])}) r" if stack else "R"
        out.append(f"{where}eached the cap of {cap} iterations before {_rules(capped)} fired: consider raising "
                   "'max iterations'")
    if fixed:
        out.append(f"{_planes(len(fixed))} ran the fixed {cap} iterations" if stack else
                   f"Ran the fixed {cap} iterations")
    if copied:
        out.append(f"{_planes(len(copied))} had nothing to fill in (copied through)")
    if resumed:
        out.append(f"{_planes(len(resumed))} ({format_planes([r.index for r in resumed])}) finished by an earlier "
                   "run, read from the store")
    return out


def _noise_sentence(records: list[PlaneRecord], stack: bool) -> str | None:
    """What the noise model did when it is not the plain Gaussian one, and the pixel fusion (None if nothing)."""
    noted = [r for r in records if r.noise]
    pg = [r for r in noted if r.noise.get("model") == "poisson-gaussian"]
    fell_back = [r for r in noted if r.noise.get("note") and r.noise.get("model") != "poisson-gaussian"]
    out = []
    if pg:
        gains = [g for r in pg for g in _values(r.noise.get("gain"))]
        reads = [v for r in pg for v in _values(r.noise.get("read_variance"))]
        how = "estimated" if all(r.noise.get("source") == "estimated" for r in pg) else \
            "given" if all(r.noise.get("source") == "given" for r in pg) else "estimated or given"
        where = f" on {_planes(len(pg))}" if stack else ""
        out.append(f"Fitted with the Poisson-Gaussian noise model{where} ({how} gain {_range(gains)}, "
                   f"read-noise variance {_range(reads)})")
    if fell_back:
        where = f" on {_planes(len(fell_back))}" if stack else ""
        out.append(f"Gaussian noise model{where}: {fell_back[0].noise['note']}")
    fused = [r for r in noted if r.noise.get("fusion")]
    skipped = [r for r in noted if r.noise.get("fusion_note")]
    if fused:
        weights = [float(r.noise["fusion_weight"]) for r in fused if r.noise.get("fusion_weight") is not None]
        where = f" on {_planes(len(fused))}" if stack else ""
        mean = f" at a mean weight of {100 * sum(weights) / len(weights):.1f} %" if weights else ""
        out.append(f"Each pixel's own noisy value weighed back in (pixel fusion){where}{mean}")
    elif skipped:
        out.append(f"Pixel fusion off: {skipped[0].noise['fusion_note'].removeprefix('not fused: ')}")
    return ". ".join(out) or None


def _values(value: Any) -> list[float]:
    """A record's camera parameter (a number, per-channel list, or absent) as a list."""
    if value is None:
        return []
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]


def _number(v: float) -> str:
    """Three significant digits, or the whole number from 1000 up (3256, not 3.26e+03)."""
    v += 0.0  # no '-0'
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _range(values: list[float]) -> str:
    if not values:
        return "?"
    lo, hi = _number(min(values)), _number(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def describe_outcome(outcome: RunOutcome, title: str, n_slices: int, cap: int, layer_name: str | None = None
                     ) -> tuple[str, str]:
    """The end-of-run message and its severity (``'info'``, ``'warning'`` or ``'error'``).

    Parameters
    ----------
    outcome : RunOutcome
    title : str
        The task's name (``'Denoising'``).
    n_slices : int
        Planes in the stack.
    cap : int
        Iterations per fit (the count, or the cap with automatic stopping).
    layer_name : str, optional
        The output layer's name, if it is kept.
    """
    stack = n_slices > 1
    took = format_duration(outcome.seconds)
    kept = outcome.in_data
    finished = [r for r in outcome.records if r.finished]
    partial = next((r for r in outcome.records if not r.finished), None)
    severity = {"finished": "info", "stopped_after_plane": "info", "cancelled": "warning"}.get(outcome.state, "error")
    if outcome.state == "finished":
        head = f"{title} done in {took}"
    elif outcome.state == "stopped_after_plane":
        head = (f"{title} stopped after plane {finished[-1].index + 1} as asked ({took})" if finished
                else f"{title} stopped as asked ({took})")
    elif outcome.state == "cancelled":
        if partial is not None:
            tile = f" of tile {partial.tiles_done + 1}/{partial.tiles}" if partial.tiles > 1 else ""
            where = f" of plane {partial.index + 1}" if stack else ""
            head = f"{title} cancelled at iteration {partial.fit_iteration}{tile}{where} ({took})"
        elif finished:
            head = f"{title} cancelled after plane {finished[-1].index + 1} ({took})"
        else:
            head = f"{title} cancelled before the first iteration"
    else:
        where = ""
        if partial is not None:
            where = f" at iteration {partial.fit_iteration}" + (f" of plane {partial.index + 1}" if stack else "")
        head = f"{title} failed{where}: {outcome.error}"
    sentences = [head]
    if stack and kept:
        rest = "; the others are empty" if len(kept) < n_slices else ""
        sentences.append(f"Kept {len(kept)} of {n_slices} planes ({format_planes(kept)}){rest}")
    sentences.extend(_endings(finished, cap, stack))
    noise = _noise_sentence(finished, stack)
    if noise:
        sentences.append(noise)
    flagged = [r for r in outcome.records if not r.converged and r.index in kept]
    if partial is not None and partial.index not in kept:
        sentences.append(f"Plane {partial.index + 1} was not converged ({_missed(partial) or 'tiles missing'}) "
                         f"and is left out")
    elif partial is not None and partial.converged:
        what = f"Plane {partial.index + 1}'s estimate" if stack else "The estimate"
        sentences.append(f"{what} from iteration {partial.best_iteration} is kept: close to converged "
                         f"({_missed(partial) or 'no evidence against it'} of the image's structure)")
    if flagged:
        if severity == "info":
            severity = "warning"
        worst = max(flagged, key=_miss)
        if not stack:
            what = f"the estimate {_missed(worst) or 'misses tiles'}"
        elif len(flagged) == 1:
            what = f"plane {flagged[0].index + 1} {_missed(worst) or 'misses tiles'}"
        else:
            what = f"planes {format_planes([r.index for r in flagged])} miss up to {_miss_pct(worst)}"
        sentences.append(f"NOT converged: {what} of the image's structure; marked '(not converged)'")
    if any(r.ending == "cap" for r in finished) and severity == "info":
        severity = "warning"
    if not kept and outcome.state != "failed":
        sentences.append("Nothing to keep: the output layer was removed")
    elif layer_name and kept:
        sentences.append(f"Layer {layer_name!r}")
    return ". ".join(sentences) + ".", severity


def _miss_pct(rec: PlaneRecord) -> str:
    return f"{min(100.0, 100 * _miss(rec)):.0f} %"


def _miss(rec: PlaneRecord) -> float:
    return rec.evidence["unexplained"] if rec.evidence else 1.0


def run_record(outcome: RunOutcome, n_slices: int, base: dict[str, Any]) -> dict[str, Any]:
    """The ``metadata['napari_dip']`` record: ``base`` (task, source, options, ...) plus what was fitted."""
    kept = outcome.in_data
    partial = next((r for r in outcome.records if not r.finished), None)
    return {
        **base,
        "state": outcome.state,
        "cancelled": outcome.state in ("cancelled", "stopped_after_plane"),
        "error": None if outcome.error is None else f"{type(outcome.error).__name__}: {outcome.error}",
        "seconds": round(outcome.seconds, 3),
        "planes_done": len(kept),
        "planes_selected": list(outcome.selected),
        "planes_fitted": outcome.fitted,
        "planes_in_layer": kept,
        "planes_not_fitted": [s for s in range(n_slices) if s not in set(kept)],
        "planes_not_converged": outcome.not_converged,
        "partial_plane": None if partial is None else partial.index,
        "partial_kept": bool(outcome.partial_kept),
        "planes": [r.as_dict() for r in outcome.records],
    }
