"""The resumable output store: an OME-Zarr (NGFF 0.5) image on disk, with the job's bookkeeping.

Layout of ``OUT.zarr``::

    OUT.zarr/
        zarr.json   group attributes:
                      "ome":        OME-Zarr 0.5 multiscale metadata: one dataset "0", its axes
                                    (names, types, units) and scale (pixel size, z step, frame
                                    interval), so viewers open OUT.zarr itself
                      "napari_dip": {format, fingerprint, job, runs, complete, planes, ...}
        0/          float32 output, the input's axes (planes ``factor`` x larger), one chunk per
                    plane, NaN where no plane has been written yet

The store holds a single array, so napari's built-in reader opens ``OUT.zarr`` as one image,
and OME-Zarr readers (napari-ome-zarr, ome-zarr-py, Fiji, ...) also find its physical scale.
``napari_dip.planes`` has one entry per plane: the run (1, 2, ...) that wrote it, 0 while it is
not written. Workers write only their plane's chunk of ``0``; only the client writes the
attributes, after a plane's task has finished (so a plane marked done has its data), replacing
``zarr.json`` atomically so that an interruption never leaves it half written. A plane whose
entry is 0 is redone on resumption.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DATASET", "FORMAT", "StoreMismatchError", "mark_complete", "mark_done", "ngff_metadata", "open_store",
           "read_done", "read_runs"]

FORMAT = 2
DATASET = "0"
NGFF_VERSION = "0.5"
_KEY = "napari_dip"

# UDUNITS-2 names that OME-Zarr lists for space and time axes
_SPACE_UNITS = {"angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot", "gigameter",
                "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile", "millimeter",
                "nanometer", "parsec", "petameter", "picometer", "terameter", "yard", "yoctometer", "yottameter",
                "zeptometer", "zettameter"}
_TIME_UNITS = {"attosecond", "centisecond", "day", "decisecond", "exasecond", "femtosecond", "gigasecond",
               "hectosecond", "hour", "kilosecond", "megasecond", "microsecond", "millisecond", "minute",
               "nanosecond", "petasecond", "picosecond", "second", "terasecond", "yoctosecond", "yottasecond",
               "zeptosecond", "zettasecond"}
_TYPES = {"T": "time", "Z": "space", "Y": "space", "X": "space", "C": "channel", "S": "channel"}


class StoreMismatchError(ValueError):
    """The output store was made by a different job (other input, task, settings or seed)."""


def _describe(job: dict[str, Any]) -> str:
    keys = ("task", "shape", "dtype", "seed", "iterations", "preset", "factor")
    return ", ".join(f"{k}={job.get(k)!r}" for k in keys if k in job)


def _attributes(path: Path) -> dict[str, Any] | None:
    """The group attributes in ``path/zarr.json``; None if it is missing or unreadable."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc.get("attributes", {}) if isinstance(doc, dict) else None


def _is_ours(path: Path) -> bool:
    return _KEY in (_attributes(path) or {})


def _update(path: str | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` to the ``napari_dip`` attributes and replace ``zarr.json`` atomically."""
    p = Path(path)
    meta_file = p / "zarr.json"
    doc = json.loads(meta_file.read_text(encoding="utf-8"))
    meta = doc.setdefault("attributes", {}).setdefault(_KEY, {})
    change(meta)
    tmp = p.parent / f".{p.name}.zarr.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, meta_file)
    return meta


def ngff_metadata(letters: str, scale: dict[str, float], units: dict[str, str], name: str = "") -> dict[str, Any]:
    """OME-Zarr 0.5 ``ome`` attributes for a one-level image whose axes are ``letters``.

    Parameters
    ----------
    letters : str
        One tifffile axis letter per array axis (``'TZYX'``, ``'YXS'``, ``'QYX'``...): ``T`` is a
        time axis, ``Z``/``Y``/``X`` space, ``C``/``S`` channels; other letters become axes of no
        type, named by their letter (numbered when repeated).
    scale, units : dict
        Physical size of one step (and its UDUNITS-2 unit) of the ``'X'``, ``'Y'``, ``'Z'`` and
        ``'T'`` axes; other axes get 1 and no unit. Units OME-Zarr does not list are left out.
    name : str
        The image's name.

    Notes
    -----
    OME-Zarr asks for axes ordered time, channel, space; an input whose axes are in another order
    (RGB colours last, or ImageJ's ``ZCYX``) is described as it is stored. napari's readers and
    ome-zarr-py accept that; stricter validators may not.
    """
    axes: list[dict[str, Any]] = []
    factors: list[float] = []
    seen: dict[str, int] = {}
    for letter in letters:
        base = "c" if letter == "S" else letter.lower()
        seen[base] = seen.get(base, 0) + 1
        axis: dict[str, Any] = {"name": base if seen[base] == 1 else f"{base}{seen[base] - 1}"}
        if letter in _TYPES:
            axis["type"] = _TYPES[letter]
        unit = units.get(letter)
        allowed = _TIME_UNITS if letter == "T" else _SPACE_UNITS if letter in "XYZ" else set()
        if unit in allowed:
            axis["unit"] = unit
        axes.append(axis)
        factors.append(float(scale.get(letter, 1.0)) if letter in "XYZT" else 1.0)
    multiscale: dict[str, Any] = {"axes": axes, "datasets": [
        {"path": DATASET, "coordinateTransformations": [{"type": "scale", "scale": factors}]}]}
    if name:
        multiscale["name"] = name
    return {"version": NGFF_VERSION, "multiscales": [multiscale]}


def open_store(path: str | Path, *, fingerprint: str, job: dict[str, Any], out_shape: tuple[int, ...],
               chunks: tuple[int, ...], n_planes: int, resume: bool = True, overwrite: bool = False,
               ome: dict[str, Any] | None = None) -> tuple[str, int, np.ndarray]:
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
    ome : dict, optional
        OME-Zarr metadata of the output (:func:`ngff_metadata`); default: axes ``...YX`` with
        scale 1. Written when the store is created.

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
        If the path does not end in ``.zarr``, or is a file or a folder that is not a napari-dip
        store, or a store written by an older napari-dip (another store format).
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
        meta = dict((_attributes(p) or {})[_KEY])
        if meta.get("format") != FORMAT:
            raise ValueError(f"store {path} was written by another version of napari-dip (store format "
                             f"{meta.get('format')!r}, this one reads {FORMAT}); overwrite it to start again "
                             "(overwrite=True; --overwrite on the command line) or use another path")
        if meta.get("fingerprint") != fingerprint:
            raise StoreMismatchError(
                f"store {path} holds a different job ({_describe(meta.get('job', {}))}) than this one "
                f"({_describe(job)}): the input, mask, task, settings or seed differ. Use another store, or "
                "overwrite it to start again (overwrite=True; --overwrite on the command line)")
        if not resume:
            raise FileExistsError(f"store {path} exists: resume it (resume=True; drop --no-resume on the command "
                                  "line) or overwrite it (overwrite=True; --overwrite)")

        def next_run(m: dict[str, Any]) -> None:
            m.update(runs=int(m.get("runs", 0)) + 1, complete=False)

        run = int(_update(p, next_run)["runs"])
        return str(p), run, read_done(str(p), n_planes)
    if not p.parent.exists():
        raise ValueError(f"store folder {p.parent} does not exist")
    from .. import __version__

    if ome is None:
        ome = ngff_metadata("Q" * (len(out_shape) - 2) + "YX", {}, {})
    names = [axis["name"] for axis in ome["multiscales"][0]["axes"]]
    group = zarr.open_group(str(p), mode="w-", zarr_format=3)
    group.create_array(DATASET, shape=out_shape, chunks=chunks, dtype="float32", fill_value=np.nan,
                       dimension_names=names if len(names) == len(out_shape) else None)
    group.attrs.update({"ome": ome, _KEY: {"format": FORMAT, "fingerprint": fingerprint, "job": job, "runs": 1,
                                           "complete": False, "napari_dip_version": __version__,
                                           "planes": [0] * n_planes}})
    return str(p), 1, np.zeros(n_planes, dtype=bool)


def read_runs(path: str, n_planes: int) -> np.ndarray:
    """Per plane, the run that wrote it (0: not written yet), as ``(n_planes,)`` int."""
    meta = (_attributes(Path(path)) or {}).get(_KEY, {})
    runs = np.asarray(meta.get("planes", []), dtype=np.int64)
    if runs.shape != (n_planes,):
        raise ValueError(f"store {path}: its plane records have shape {runs.shape}, expected ({n_planes},)")
    return runs


def read_done(path: str, n_planes: int) -> np.ndarray:
    """The planes of a store that are written, as ``(n_planes,)`` bool."""
    return read_runs(path, n_planes) > 0


def mark_done(path: str, planes: Iterable[int], run: int) -> None:
    """Record ``planes`` as written by ``run`` (the client only, after their data is written)."""
    indices = [int(s) for s in planes]

    def record(meta: dict[str, Any]) -> None:
        for s in indices:
            meta["planes"][s] = int(run)

    _update(path, record)


def mark_complete(path: str, complete: bool) -> None:
    """Record in the attributes whether every plane is done (the client only)."""

    def record(meta: dict[str, Any]) -> None:
        meta["complete"] = bool(complete)

    _update(path, record)
