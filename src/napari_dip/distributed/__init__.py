"""Distributed, resumable stack restoration on dask.distributed (optional: ``pip install napari-dip[distributed]``).

Each plane of a stack is an independent Deep Image Prior fit, so a stack job is a set of dask
tasks, one per plane, writing into an on-disk zarr store as they finish::

    from napari_dip.distributed import restore_stack

    out = restore_stack("denoise", "movie.tif", store="movie-denoised.zarr", preset="fast")
    out = restore_stack("denoise", "movie.tif", store="movie-denoised.zarr",
                        scheduler="tcp://head-node:8786")   # on a cluster's GPUs

Running the same job again resumes it (finished planes are not refitted); a store of another
job is refused. Without ``scheduler`` the planes run in this process, one after the other.

For a napari widget, iterate :meth:`StackJob.planes` in a worker thread: it yields a
:class:`PlaneDone` as each plane lands (``event.key`` indexes the output, ``event.plane`` reads
it, ``event.done``/``event.n_planes`` give the progress) and stops cleanly when closed or after
:meth:`StackJob.cancel`. See ``docs/scaling.md``.

This package imports dask; :mod:`napari_dip.core` never does.
"""

from __future__ import annotations

from .inputs import LazyTiff, open_input
from .job import PlaneDone, StackJob, restore_stack
from .plane import PlaneRestoration
from .store import StoreMismatchError

__all__ = ["LazyTiff", "PlaneDone", "PlaneRestoration", "StackJob", "StoreMismatchError", "open_input",
           "restore_stack"]
