"""Stack jobs from the command line: ``napari-dip denoise IN -o OUT.zarr [--scheduler tcp://...] [--no-resume]``.

:func:`run_cli` is called by :mod:`napari_dip.cli.restore` for the restoration commands when the
output ends in ``.zarr`` or ``--scheduler`` is given. A ``.zarr`` output is a resumable OME-Zarr
store (napari and other OME-Zarr viewers open it, with the input's pixel size): running the same
command again after a crash or Ctrl-C continues where it stopped (``--no-resume`` refuses an
existing store instead; ``--overwrite`` starts it again). Other outputs (``.tif``) are assembled in
memory and written at the end, as without a scheduler.

This module imports :mod:`napari_dip.distributed` (dask, distributed, zarr) only when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    EXIT_INTERRUPTED,
    CLIError,
    check_output,
    check_output_log,
    describe_output,
    read_input,
    write_output,
)

__all__ = ["run_cli", "wants_distributed"]

_LAZY_SUFFIXES = (".tif", ".tiff", ".zarr")


def wants_distributed(args: argparse.Namespace) -> bool:
    """Whether a restoration command should go through :func:`run_cli`."""
    return Path(args.output).suffix.lower() == ".zarr" or getattr(args, "scheduler", None) is not None


def _source(path: Path) -> Any:
    """Lazy-readable paths stay paths; other formats (PNG, JPEG: single planes) are read here."""
    if path.suffix.lower() in _LAZY_SUFFIXES:
        return path
    return read_input(path)


def run_cli(args: argparse.Namespace, task: str, kwargs: dict[str, Any]) -> int:
    """Run a restoration command as a distributed, resumable stack job.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``denoise``/``inpaint``/``super-resolve`` arguments (``input``, ``output``,
        ``mask``, ``log``, ``overwrite``, ``quiet``; optional ``scheduler`` and ``resume``).
    task : {'denoise', 'inpaint', 'super_resolve'}
    kwargs : dict
        Restoration keywords from the arguments (``iterations``, ``preset``, ``device``, ``seed``,
        ``channel_axis``, ``factor``, ``kernel``), without the mask: it is read here, lazily.

    Returns
    -------
    int
        0, or 130 after Ctrl-C (finished planes stay in a ``.zarr`` store: run again to resume).

    Raises
    ------
    napari_dip.cli.CLIError
        For user errors (bad arguments or data, a store of a different job, ...), and when dask,
        distributed or zarr are not installed.
    """
    try:
        from ..distributed.job import StackJob
    except ImportError as err:
        raise CLIError(f"--scheduler and .zarr outputs need dask, distributed and zarr "
                       f"(pip install 'napari-dip[distributed]'): {err}") from None

    output: Path = args.output
    inputs = [args.input] + ([args.mask] if task == "inpaint" else [])
    to_store = output.suffix.lower() == ".zarr"
    if to_store:
        for src in inputs:
            if output.resolve() == src.resolve():
                raise CLIError(f"output {output} is the input {src}: refusing to overwrite an input")
        if not output.parent.exists():
            raise CLIError(f"output folder {output.parent} does not exist")
    else:
        check_output(output, inputs, args.overwrite)
    if getattr(args, "log", None) is not None:
        check_output_log(args.log, inputs + [output], args.overwrite)
    for src in inputs:
        if not src.exists():
            raise CLIError(f"{src}: no such file")
    options = dict(kwargs)
    if task == "inpaint":
        options["mask"] = _source(args.mask)
    scheduler = getattr(args, "scheduler", None)
    quiet = bool(getattr(args, "quiet", False))
    start = time.perf_counter()
    try:
        job = StackJob(task, _source(args.input), store=output if to_store else None, scheduler=scheduler,
                       resume=bool(getattr(args, "resume", True)), overwrite=bool(args.overwrite), **options)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        raise CLIError(str(err)) from None
    status = 0
    events = []
    try:
        if not quiet:
            where = f"on {scheduler}" if scheduler else "in this process"
            sys.stderr.write(f"{job.n_planes} plane(s) {where}; output {output}\n")
        for event in job.planes():
            events.append(event)
            if not quiet:
                what = "already done" if event.resumed else ("copied (nothing to fill)" if event.skipped
                                                            else f"fitted in {event.seconds:.1f} s")
                sys.stderr.write(f"plane {event.done}/{event.n_planes} (index {event.index}) {what}\n")
                sys.stderr.flush()
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        hint = "run the same command again to resume" if to_store else "unfitted planes are NaN"
        sys.stderr.write(f"\ninterrupted after {len(events)} of {job.n_planes} plane(s): {hint}\n")
    finally:
        job.close()
    seconds = time.perf_counter() - start
    result = job.output
    if not to_store:
        write_output(output, np.asarray(result), job.calibration)
    if getattr(args, "log", None) is not None:
        log = {"command": args.command, "input": str(args.input), "output": str(output),
               "preset": args.preset, "device": str(args.device), "seed": args.seed,
               "iterations": args.iterations, "seconds": round(seconds, 3), "interrupted": status != 0,
               "scheduler": scheduler, "run": job.run_number, "fitted": job.fitted,
               "slices": job.history(events)}
        args.log.write_text(json.dumps(log, indent=1))
    if not quiet:
        print(f"wrote {describe_output(output, result, job.calibration)}: {job.fitted} plane(s) fitted, "
              f"{sum(e.resumed for e in events)} resumed, in {seconds:.1f} s")
    return status
