"""The resumable output store: a zarr group on disk.

Layout of ``OUT.zarr``::

    OUT.zarr/
        zarr.json   group attributes: {"napari_dip": {format, fingerprint, job, runs, complete, ...}}
        data        float32 output, the input's axes (planes ``factor`` x larger), one chunk per
                    plane, NaN where no plane has been written yet
        done        bool, one entry (and one chunk) per plane: True once the plane's data is written
        run         uint16, one entry per plane: the run (1, 2, ...) that wrote it (0: not written)

Workers write a plane's ``data`` chunk, then ``run``, then ``done`` (see
:func:`~napari_dip.distributed.plane.write_plane`); each plane has its own chunks in all three
arrays, so concurrent workers never write the same file. Only the client writes the group's
attributes. A plane whose ``done`` flag is set is complete; anything else is redone on resumption.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "StoreMismatchError", "open_store", "read_done"]

FORMAT = 1
_KEY = "napari_dip"


class StoreMismatchError(ValueError):
    """The output store was made by a different job (other input, task, settings or seed)."""


def _describe(job: dict[str, Any]) -> str:
    keys = ("task", "shape", "dtype", "seed", "iterations", "preset", "factor")
    return ", ".join(f"{k}={job.get(k)!r}" for k in keys if k in job)


def _is_ours(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return _KEY in json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False


def open_store(path: str | Path, *, fingerprint: str, job: dict[str, Any], out_shape: tuple[int, ...],
               chunks: tuple[int, ...], n_planes: int, resume: bool = True,
               overwrite: bool = False) -> tuple[str, int, np.ndarray]:
    """Create the store, or reopen it to resume the same job.

    Parameters
    ----------
    path : path-like
        Ends in ``.zarr``.
    fingerprint : str
        Identifies the job (input content, mask, task, settings, seed); a store with another
        fingerprint is never resumed.
    job : dict
        A JSON-able summary of the job, kept in the attributes for people (and error messages).
    out_shape, chunks : tuple
        Shape and (one-plane) chunk shape of the output.
    n_planes : int
    resume : bool
        Reopen an existing store of the same job and keep its finished planes.
    overwrite : bool
        Delete an existing napari-dip store (of any job) and start again.

    Returns
    -------
    path : str
        The store's path (absolute).
    run : int
        This run's number (1 for a new store).
    done : numpy.ndarray
        ``(n_planes,)`` bool: planes already finished.

    Raises
    ------
    ValueError
        If the path does not end in ``.zarr``, or is a file or a folder that is not a napari-dip store.
    StoreMismatchError
        If the store belongs to a different job (and ``overwrite`` is False).
    FileExistsError
        If the store exists and neither ``resume`` nor ``overwrite`` is set.
    """
    import zarr

    p = Path(path).resolve()
    if p.suffix.lower() != ".zarr":
        raise ValueError(f"store {path}: the path must end in .zarr")
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"store {path} exists and is not a folder")
        if not _is_ours(p):
            if any(p.iterdir()):
                raise ValueError(f"store {path} exists and is not a napari-dip store; refusing to touch it")
            p.rmdir()
        elif overwrite:
            shutil.rmtree(p)
    if p.exists():
        group = zarr.open_group(str(p), mode="r+")
        meta = dict(group.attrs[_KEY])
        if meta.get("fingerprint") != fingerprint:
            raise StoreMismatchError(
                f"store {path} holds a different job ({_describe(meta.get('job', {}))}) than this one "
                f"({_describe(job)}): the input, mask, task, settings or seed differ. Use another store, or "
                "overwrite it to start again (overwrite=True; --overwrite on the command line)")
        if not resume:
            raise FileExistsError(f"store {path} exists: resume it (resume=True; drop --no-resume on the command "
                                  "line) or overwrite it (overwrite=True; --overwrite)")
        run = int(meta.get("runs", 0)) + 1
        meta.update(runs=run, complete=False)
        group.attrs[_KEY] = meta
        return str(p), run, read_done(str(p), n_planes)
    if not p.parent.exists():
        raise ValueError(f"store folder {p.parent} does not exist")
    from .. import __version__

    group = zarr.open_group(str(p), mode="w-")
    group.create_array("data", shape=out_shape, chunks=chunks, dtype="float32", fill_value=np.nan)
    group.create_array("done", shape=(n_planes,), chunks=(1,), dtype="bool", fill_value=False)
    group.create_array("run", shape=(n_planes,), chunks=(1,), dtype="uint16", fill_value=0)
    group.attrs[_KEY] = {"format": FORMAT, "fingerprint": fingerprint, "job": job, "runs": 1,
                         "complete": False, "napari_dip_version": __version__}
    return str(p), 1, np.zeros(n_planes, dtype=bool)


def read_done(path: str, n_planes: int) -> np.ndarray:
    """The ``done`` flags of a store, as ``(n_planes,)`` bool."""
    import zarr

    done = np.asarray(zarr.open_array(path, path="done", mode="r")[:], dtype=bool)
    if done.shape != (n_planes,):
        raise ValueError(f"store {path}: 'done' has shape {done.shape}, expected ({n_planes},)")
    return done


def mark_complete(path: str, complete: bool) -> None:
    """Record in the attributes whether every plane is done (the client only)."""
    import zarr

    group = zarr.open_group(path, mode="r+")
    meta = dict(group.attrs[_KEY])
    meta["complete"] = bool(complete)
    group.attrs[_KEY] = meta
