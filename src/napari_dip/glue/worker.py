"""Running a restoration in a napari thread worker.

:func:`start_worker` runs a generator in a napari ``GeneratorWorker``: the widgets use
:func:`napari_dip.glue.driver.drive` (throttled updates and an outcome); :func:`iterate_steps`, the
default, yields the core's snapshots one per iteration, so ``worker.quit()`` stops the fit at the
next iteration (napari's generator workers check for an abort request at every yield), and it
returns the output array.

superqt's generator workers *return* ``RuntimeError``s instead of emitting ``errored`` (they
take them for a deleted worker); :func:`iterate_steps` re-raises them as :class:`RunError` so
that every failure reaches the ``errored`` signal.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

__all__ = ["RunError", "iterate_steps", "start_worker"]


class RunError(Exception):
    """A failure inside the fit (wraps the original exception, kept as ``__cause__``)."""


def iterate_steps(job) -> Generator[Any, None, np.ndarray]:
    """Yield ``job.steps()``'s snapshots and return its output.

    ``MemoryError`` (e.g. :class:`~napari_dip.core.fit.DIPMemoryError`) passes through; other
    ``RuntimeError``s become :class:`RunError` with the same message.
    """
    steps = job.steps()
    try:
        while True:
            try:
                snap = next(steps)
            except StopIteration as stop:
                return stop.value
            yield snap
    except RuntimeError as err:
        raise RunError(str(err)) from err
    finally:
        steps.close()


def start_worker(job, *, connect: dict[str, Callable | list[Callable]] | None = None, start: bool = True,
                 generator: Callable[..., Generator] | None = None, kwargs: dict[str, Any] | None = None):
    """A napari ``GeneratorWorker`` running ``generator(job, **kwargs)`` (default :func:`iterate_steps`).

    Parameters
    ----------
    job : Restoration
    connect : dict, optional
        Signal name -> callback(s), connected before the thread starts. Errors are not re-raised
        in the main thread: connect ``errored`` to report them.
    start : bool
        Start the thread now.
    generator : callable, optional
        The generator function, e.g. :func:`napari_dip.glue.driver.drive` (throttled updates and an
        outcome) instead of one snapshot per iteration.
    kwargs : dict, optional
        Its keyword arguments after ``job``.
    """
    from napari.qt.threading import create_worker

    worker = create_worker(generator or iterate_steps, job, _start_thread=False, _ignore_errors=True,
                           **(kwargs or {}))
    for name, callbacks in (connect or {}).items():
        for cb in callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]:
            getattr(worker, name).connect(cb)
    if start:
        worker.start()
    return worker
