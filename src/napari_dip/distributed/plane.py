"""One plane of a stack job: its statistics pass and its fit, as functions run by dask workers.

Everything here is picklable and import-light: a worker receives a :class:`PlaneSpec` (the layout,
the global intensity map and the fit settings), the plane's input block and mask block, and
nothing else. A plane's result depends only on (plane data, intensity map, settings, seed), so
the fit done here is bit-identical to the same plane inside an in-process
:class:`~napari_dip.core.restore.Restoration` of the whole stack on the same kind of device with
the same torch version and, on a CPU, the same number of torch threads (the tasks use one).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.layout import Intensity, Layout, check_mask, get_plane, plane_index
from ..core.restore import Restoration

__all__ = ["PlaneOutcome", "PlaneRestoration", "PlaneSpec", "PlaneStats", "out_view", "plane_stats", "process_plane"]


class PlaneRestoration(Restoration):
    """A :class:`Restoration` of a single plane that uses a given (global) intensity map.

    Parameters
    ----------
    task : {'denoise', 'inpaint', 'super_resolve'}
    plane : numpy.ndarray
        One plane ``(H, W, C)`` in the input's units.
    intensity : Intensity
        The intensity map of the whole stack (replaces the plane's own).
    layout : Layout
        The layout of the whole stack (for its channel axis and RGB flag).
    fill : numpy.ndarray, optional
        Inpainting only: ``(H, W)`` bool, True where pixels are to be filled in.
    **kwargs
        The remaining :class:`Restoration` keywords (``iterations``, ``preset``, ``seed``, ...).

    Notes
    -----
    This stands in for a small public core method (``Restoration.from_intensity``) proposed to
    the core's maintainer; it only sets ``intensity`` after the normal constructor.
    """

    def __init__(self, task: str, plane: np.ndarray, intensity: Intensity, layout: Layout, *,
                 fill: np.ndarray | None = None, **kwargs: Any):
        if layout.channel_axis is None:
            image, axes = plane[..., 0], {"channel_axis": None, "rgb": False}
        else:
            image, axes = plane, {"channel_axis": -1, "rgb": layout.rgb}
        super().__init__(task, image, mask=fill, **axes, **kwargs)
        self.intensity = intensity

    def fit_plane(self) -> tuple[np.ndarray, dict[str, Any] | None]:
        """Fit the plane; returns the result ``(H', W', C)`` (float32) and its fit history."""
        out = self.run()
        return get_plane(self.layout, out, 0), self.history()[0]


@dataclass(frozen=True)
class PlaneSpec:
    """What every plane task of a job needs, apart from its data.

    Attributes
    ----------
    task : str
    layout, out_layout : Layout
        Layout of the input and of the output (the output's planes are ``factor`` times larger).
    intensity : Intensity
        The global intensity map.
    fit_kwargs : dict
        :class:`Restoration` keywords for one plane (no mask, no layout keywords).
    store : str or None
        Path of the output zarr store; None to return the plane to the client instead.
    run : int
        Run number of the store (1 for a new store, +1 per resumption).
    torch_threads : int or None
        ``torch.set_num_threads`` on dask workers (None: leave torch alone).
    """

    task: str
    layout: Layout
    out_layout: Layout
    intensity: Intensity
    fit_kwargs: dict[str, Any]
    store: str | None = None
    run: int = 1
    torch_threads: int | None = None


@dataclass
class PlaneOutcome:
    """What a plane task sends back to the client (small unless ``plane`` is set)."""

    index: int
    seconds: float
    skipped: bool
    worker: str
    history: dict[str, Any] | None = None
    plane: np.ndarray | None = field(default=None, repr=False)


def block_plane(layout: Layout, block: np.ndarray) -> np.ndarray:
    """An input block holding one plane (size 1 on the stack axes) as ``(H, W, C)``."""
    block = np.asarray(block)
    one = Layout(tuple(block.shape), layout.channel_axis, layout.rgb)
    return get_plane(one, block, 0)


def fill_plane(layout: Layout, block: Any) -> np.ndarray:
    """A mask block (one plane, or the ``(H, W)`` mask) as an ``(H, W)`` bool array."""
    return check_mask(np.asarray(block)).reshape(layout.plane_shape)


def out_view(out_layout: Layout, plane: np.ndarray) -> np.ndarray:
    """An ``(H, W, C)`` plane arranged as ``output[plane_index(out_layout, s)]`` is."""
    if out_layout.channel_axis is None:
        return plane[..., 0]
    if out_layout.channel_axis < len(out_layout.shape) - 2:
        return np.moveaxis(plane, -1, 0)
    return plane


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _on_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def write_plane(store: str, out_layout: Layout, s: int, view: np.ndarray) -> None:
    """Write plane ``s``'s chunk of the store's image (the client records it as done afterwards).

    Idempotent: writing the same plane twice writes the same bytes.
    """
    import zarr

    from .store import DATASET

    data = zarr.open_array(store, path=DATASET, mode="r+")
    data[plane_index(out_layout, s)] = view


def process_plane(spec: PlaneSpec, s: int, block: Any, mask_block: Any = None) -> PlaneOutcome:
    """Fit plane ``s`` (a dask task): read its block, fit, write it to the store or return it.

    Parameters
    ----------
    spec : PlaneSpec
    s : int
        Flat plane index.
    block : array
        The input block holding plane ``s`` (size 1 on the stack axes).
    mask_block : array, optional
        Inpainting: the mask block of plane ``s`` (or the ``(H, W)`` mask for every plane).
    """
    start = time.perf_counter()
    if spec.torch_threads and _on_worker():
        import torch

        torch.set_num_threads(int(spec.torch_threads))
    plane = block_plane(spec.layout, block)
    fill = fill_plane(spec.layout, mask_block) if spec.task == "inpaint" else None
    history = None
    skipped = fill is not None and not fill.any()
    if skipped:  # as the core does: nothing to fill, copied through
        result = plane.astype(np.float32)
    else:
        job = PlaneRestoration(spec.task, plane, spec.intensity, spec.layout, fill=fill, **spec.fit_kwargs)
        result, history = job.fit_plane()
    view = np.ascontiguousarray(out_view(spec.out_layout, result))
    if spec.store is not None:
        write_plane(spec.store, spec.out_layout, s, view)
        view = None
    return PlaneOutcome(index=s, seconds=time.perf_counter() - start, skipped=skipped, worker=_worker_name(),
                        history=history, plane=view)


@dataclass
class PlaneStats:
    """Per-plane facts gathered in the statistics pass (a map over planes, reduced on the client).

    ``low``/``high``/``count`` are per channel, over the finite (and, inpainting, known) values.
    """

    index: int
    digest: str
    low: list[float]
    high: list[float]
    count: list[int]
    nonfinite: int
    fill_any: bool = False
    fill_all: bool = False
    mask_nan: bool = False


def plane_stats(layout: Layout, task: str, s: int, block: Any, mask_block: Any = None,
                plane_mask: bool = False) -> PlaneStats:
    """Content hash, per-channel min/max/count and validity checks of plane ``s``.

    Mirrors :meth:`napari_dip.core.layout.Intensity.from_stack` and the checks of
    :class:`~napari_dip.core.restore.Restoration` on one plane; ``nonfinite`` counts NaN/Inf
    values (outside the mask when inpainting). ``plane_mask``: the mask is the ``(H, W)`` mask of
    every plane (hashed once on the client, not here).
    """
    plane = np.ascontiguousarray(block_plane(layout, block))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{plane.dtype.str}{plane.shape}".encode())
    h.update(plane.tobytes())
    finite = np.isfinite(plane) if plane.dtype.kind == "f" else np.ones(plane.shape, dtype=bool)
    valid = finite
    fill_any = fill_all = mask_nan = False
    if task == "inpaint":
        raw = np.asarray(mask_block)
        if raw.dtype.kind == "f" and np.isnan(raw).any():
            mask_nan = True
            fill = np.zeros(layout.plane_shape, dtype=bool)
        else:
            fill = (raw != 0).reshape(layout.plane_shape)
        if not plane_mask:
            h.update(b"mask")
            h.update(np.packbits(fill).tobytes())
        fill_any, fill_all = bool(fill.any()), bool(fill.all())
        valid = finite & ~fill[..., None]
        nonfinite = int((~finite & ~fill[..., None]).sum())
    else:
        nonfinite = int((~finite).sum())
    low, high, count = [], [], []
    for c in range(plane.shape[-1]):
        vals = plane[..., c][valid[..., c]]
        count.append(int(vals.size))
        low.append(float(vals.min()) if vals.size else float("inf"))
        high.append(float(vals.max()) if vals.size else float("-inf"))
    return PlaneStats(index=s, digest=h.hexdigest(), low=low, high=high, count=count, nonfinite=nonfinite,
                      fill_any=fill_any, fill_all=fill_all, mask_nan=mask_nan)
