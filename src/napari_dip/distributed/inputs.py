"""Lazy inputs: TIFF files, zarr arrays and dask arrays, read one plane at a time.

Stacks larger than memory must never be loaded whole on the client. :func:`open_input` turns a
path or an array into something that can be read plane by plane:

* a numpy array (already in memory) stays as it is and is sliced on the client;
* a ``.tif``/``.tiff`` path becomes a dask array over :class:`LazyTiff`, which reads pages through
  tifffile's zarr store, opened anew in each process that reads (workers included), so the
  graph pickles as a path and nothing else;
* a ``.zarr`` path (an array, or an OME-Zarr image such as a napari-dip store: its first
  dataset) or a zarr array becomes a dask array over it;
* a dask array (e.g. a napari layer's ``data``) is used as it is;
* any other array-like with ``shape``, ``dtype`` and ``__getitem__`` is wrapped with
  ``dask.array.from_array``.

Dask arrays are rechunked to one chunk per plane (see :func:`plane_chunks`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..core.layout import Layout, infer_layout

__all__ = ["LazyTiff", "open_input", "plane_chunks", "path_of"]

TIFF_SUFFIXES = (".tif", ".tiff")


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order (as :func:`napari_dip.io.read_image` returns it)."""
    if arr.dtype.byteorder not in ("=", "|") and arr.dtype.byteorder != ("<" if np.little_endian else ">"):
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


class LazyTiff:
    """The first series of a TIFF file as a read-only, picklable, lazily opened array.

    Parameters
    ----------
    path : path-like
        A TIFF file. Its first image series is used, as ``tifffile.imread`` does.

    Notes
    -----
    Pages are read through ``tifffile.imread(path, aszarr=True)`` opened with zarr, so indexing
    one plane reads only that plane's pages. The open store is never pickled: a copy sent to a
    dask worker re-opens the file there (workers need the same path, e.g. a shared file system).
    """

    def __init__(self, path: str | os.PathLike):
        import tifffile

        self.path = str(Path(path).resolve())
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            self.shape: tuple[int, ...] = tuple(int(n) for n in series.shape)
            dtype = np.dtype(series.dtype)
        self.dtype = dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype
        self.ndim = len(self.shape)
        self._array: Any = None

    def _open(self) -> Any:
        if self._array is None:
            import tifffile
            import zarr

            node = zarr.open(tifffile.imread(self.path, aszarr=True), mode="r")
            if not hasattr(node, "shape"):  # a pyramid: level 0
                node = node["0"]
            self._array = node
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        return _native(np.asarray(self._open()[key]))

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape, "dtype": self.dtype, "ndim": self.ndim}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._array = None

    def __dask_tokenize__(self) -> tuple:
        st = os.stat(self.path)
        return ("napari-dip-lazytiff", self.path, st.st_size, st.st_mtime_ns)

    def __repr__(self) -> str:
        return f"LazyTiff({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def path_of(image: Any) -> Path | None:
    """The file system path of a path-like input (None for arrays)."""
    if isinstance(image, (str, os.PathLike)):
        return Path(image)
    return None


def open_input(image: Any, *, channel_axis: int | None = None, rgb: bool | None = None,
               name: str = "image") -> tuple[np.ndarray | da.Array, Layout]:
    """Open ``image`` for reading plane by plane, without loading it, and infer its layout.

    Parameters
    ----------
    image : path-like or array
        A ``.tif``/``.tiff`` or ``.zarr`` path, a numpy, zarr or dask array, or an array-like.
    channel_axis, rgb
        Layout overrides, as for :func:`napari_dip.core.layout.infer_layout`.
    name : str
        What to call it in error messages.

    Returns
    -------
    array : numpy.ndarray or dask.array.Array
        numpy arrays are returned unchanged (they are in memory already); everything else as a
        dask array with one chunk per plane (:func:`plane_chunks`).
    layout : Layout
        Where its stack, plane and channel axes are.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist.
    ValueError
        For a path of another format, a zarr group that is not an image, or a bad layout.
    TypeError
        For objects that are not arrays.
    """
    path = path_of(image)
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"{name} {path}: no such file or folder")
        suffix = path.suffix.lower()
        if suffix in TIFF_SUFFIXES:
            source: Any = LazyTiff(path)
        elif suffix == ".zarr" or path.is_dir():
            import zarr

            source = zarr.open(str(path), mode="r")
            if not hasattr(source, "shape"):
                source = _group_image(source, path, name)
        else:
            raise ValueError(f"{name} {path}: unsupported format {path.suffix!r} for lazy reading; "
                             "use a .tif/.tiff file or a .zarr store (or load it and pass an array)")
    elif isinstance(image, (np.ndarray, da.Array)):
        source = image
    elif all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        source = image
    else:
        source = np.asarray(image)
        if source.dtype == object:
            raise TypeError(f"{name} of type {type(image).__name__} is not an array")
    shape = tuple(int(n) for n in source.shape)
    if len(shape) < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (Y, X), got shape {shape}")
    layout = infer_layout(shape, channel_axis, rgb)
    if isinstance(source, np.ndarray):
        return source, layout
    chunks = plane_chunks(shape, layout.channel_axis)
    if isinstance(source, da.Array):
        return source.rechunk(chunks), layout
    meta = np.empty((0,) * len(shape), dtype=np.dtype(source.dtype))
    return da.from_array(source, chunks=chunks, asarray=False, lock=False, meta=meta), layout


def _group_image(group: Any, path: Path, name: str) -> Any:
    """The full-resolution array of a zarr group: an OME-Zarr image's first dataset (a napari-dip
    store is one), or a lone array."""
    from ..io import ngff_dataset_path

    dataset = ngff_dataset_path(dict(group.attrs))
    if dataset is not None and dataset in group:
        return group[dataset]
    arrays = sorted(group.array_keys())
    if len(arrays) == 1:
        return group[arrays[0]]
    raise ValueError(f"{name} {path} is a zarr group that is not an OME-Zarr image and holds "
                     f"{len(arrays)} arrays; give the path of the array itself")


def plane_chunks(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, ...]:
    """Chunk shape holding exactly one plane (with all its channels) of an array of ``shape``.

    Stack axes get chunks of 1; the two spatial axes and the channel axis are whole.
    """
    ndim = len(shape)
    spatial_start = ndim - 3 if channel_axis == ndim - 1 else ndim - 2
    return tuple(n if (axis == channel_axis or axis >= spatial_start) else 1 for axis, n in enumerate(shape))
