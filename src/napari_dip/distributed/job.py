"""Stack jobs on dask.distributed: one task per plane, results streamed into a resumable store.

:class:`StackJob` opens the input lazily, computes the global intensity map with a map over planes
reduced on the client (the same numbers :meth:`Intensity.from_stack` gives for the whole array),
fingerprints the job, opens or resumes the output store and then fits the unfinished planes:

* in-process, one after the other, when no scheduler is given (no cluster needed);
* as dask tasks on a cluster's workers for ``scheduler="tcp://..."`` or a ``distributed.Client``.

:meth:`StackJob.planes` yields a :class:`PlaneDone` for every plane as it lands (planes finished by
an earlier run first, flagged ``resumed``); :func:`restore_stack` drives it to the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fit import check_iterations
from ..core.layout import Intensity, Layout, plane_index
from ..core.noise import check_noise_settings
from ..core.restore import check_factor
from ..core.settings import TASKS, get_settings
from ..io import Calibration
from .inputs import open_input, path_of, plane_chunks
from .plane import PlaneOutcome, PlaneSpec, PlaneStats, plane_stats, process_plane
from .store import DATASET, mark_complete, mark_done, ngff_metadata, open_store, read_done

__all__ = ["PlaneDone", "StackJob", "restore_stack"]

_FIT_KEYS = ("iterations", "preset", "device", "seed", "precision", "kernel", "factor")


@dataclass(frozen=True)
class PlaneDone:
    """A plane of the output has landed (or was already there).

    Attributes
    ----------
    index : int
        Flat plane index (0 .. n_planes - 1, C order over the stack axes).
    key : tuple
        Index of the plane in the output array: ``output[key]`` is this plane (with channels).
    n_planes : int
        Planes in the job.
    done : int
        Planes finished so far, this one included.
    resumed : bool
        Finished by an earlier run of the same job (read from the store, not refitted).
    skipped : bool
        Inpainting: no pixel to fill in this plane, copied through unchanged.
    seconds : float
        Time the plane's task took (read + fit + write); 0 for resumed planes.
    worker : str or None
        The dask worker's address (``host:pid`` in-process); None for resumed planes.
    history : dict or None
        The fit's loss/stop-signal curves (as ``Restoration.history()``); None if not fitted now.
    """

    index: int
    key: tuple
    n_planes: int
    done: int
    resumed: bool = False
    skipped: bool = False
    seconds: float = 0.0
    worker: str | None = None
    history: dict[str, Any] | None = field(default=None, repr=False)
    _read: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def plane(self) -> np.ndarray:
        """The output plane (float32, the output's axes; read from the store when there is one)."""
        if self._read is None:
            raise RuntimeError("this plane's data is not available")
        return self._read()


def _connect(scheduler: Any) -> tuple[Any, bool]:
    """``(client or None, whether we own it)`` for ``scheduler``."""
    if scheduler is None:
        return None, False
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, False
    if isinstance(scheduler, str):
        return Client(scheduler), True
    raise TypeError(f"scheduler must be None, an address like 'tcp://host:8786' or a distributed.Client, "
                    f"got {type(scheduler).__name__}")


def _read_calibration(path: Path) -> Calibration | None:
    """A path input's calibration; None (not an error) when its metadata cannot be read."""
    from ..io import ImageReadError, read_calibration

    try:
        return read_calibration(path)
    except ImageReadError:
        return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)


class StackJob:
    """A Deep Image Prior restoration of a stack, distributed over planes and resumable.

    Construction validates everything, reads the input once (plane by plane, on the workers when
    there is a cluster) for the intensity map and the content fingerprint, and opens the store;
    :meth:`planes` then runs the fits.

    Parameters
    ----------
    task : {'denoise', 'inpaint', 'super_resolve'}
    image : path-like or array
        A ``.tif``/``.tiff`` or ``.zarr`` path, a numpy, zarr or dask array (a napari layer's
        ``data``). Read lazily, plane by plane; never loaded whole on the client.
    mask : path-like or array, optional
        Inpainting: nonzero = pixel to fill in; ``(Y, X)`` or the image's shape without channels.
    store : path-like, optional
        Output ``.zarr`` store, written plane by plane as planes finish; None keeps the output in
        memory (a numpy array) and nothing can be resumed.
    scheduler : str or distributed.Client, optional
        None: fit in this process, one plane after the other. A scheduler address
        (``'tcp://host:8786'``) or a ``Client``: one dask task per plane on the cluster's workers.
        Workers must be able to read path inputs and write the store at the same paths (a shared
        file system); each worker fits on its own ``device`` (``'auto'``: its GPU).
    resume : bool
        Resume an existing store of the same job, skipping its finished planes.
    overwrite : bool
        Delete an existing napari-dip store at ``store`` and start again.
    torch_threads : int or None
        ``torch.set_num_threads`` inside each task on a worker (default 1: one CPU thread per task,
        so that several tasks per machine do not oversubscribe it); None leaves torch alone.
    retries : int
        Extra attempts for a plane task that raises (a killed worker's task is always retried by
        the scheduler, up to ``distributed.scheduler.allowed-failures``).
    calibration : napari_dip.io.Calibration, optional
        The input's pixel size, z step, frame interval and axis order (e.g. from a napari layer's
        ``scale`` and ``units``). Default: read from a path input (ImageJ or OME-TIFF metadata,
        TIFF resolution tags, OME-Zarr attributes); none for arrays. The output's calibration
        (:attr:`calibration`: the pixel size divided by ``factor``) goes into the store's
        OME-Zarr metadata.
    **restoration_kwargs
        As for :class:`~napari_dip.core.restore.Restoration`: ``factor``, ``iterations``,
        ``preset``, ``device``, ``seed``, ``channel_axis``, ``rgb``, ``precision``, ``kernel`` and
        any :class:`~napari_dip.core.settings.Settings` field. ``preview_every`` is accepted and
        ignored (no snapshots travel back); ``warm_start=True`` is refused (it chains the planes), and
        so is ``neighbour_planes`` above 0 (each plane's fit would need its neighbours' data);
        ``'auto'`` (the default of :class:`Restoration`) means 0 here.

    Raises
    ------
    ValueError, TypeError
        As :class:`Restoration` would for the same arguments and data, plus store problems
        (:class:`~napari_dip.distributed.store.StoreMismatchError` for a store of another job).
    """

    def __init__(self, task: str, image: Any, *, mask: Any = None, store: str | os.PathLike | None = None,
                 scheduler: Any = None, resume: bool = True, overwrite: bool = False,
                 torch_threads: int | None = 1, retries: int = 0, factor: int | None = None,
                 channel_axis: int | None = None, rgb: bool | None = None, warm_start: bool = False,
                 preview_every: int = 0, calibration: Calibration | None = None, neighbour_planes: int | str = 0,
                 **fit_kwargs: Any):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
        if warm_start:
            raise ValueError("warm_start=True chains each plane's fit to the previous one, so the planes are "
                             "no longer independent; it is not available for distributed stack jobs")
        if neighbour_planes != "auto" and neighbour_planes:
            raise ValueError("neighbour_planes shows each plane's fit its neighbouring planes; distributed stack jobs "
                             "fit every plane on its own: use Restoration (or a .tif output) for it")
        self.task = task
        fit = dict(fit_kwargs)
        overrides = {k: v for k, v in fit.items() if k not in _FIT_KEYS}
        settings = get_settings(fit.get("preset", "paper"), task, **overrides)
        check_noise_settings(settings, task)  # before any plane is sent out
        check_iterations(fit.get("iterations", "auto"))
        if task == "super_resolve":
            if factor is None:
                raise ValueError("super-resolution needs a factor (an integer >= 2)")
            fit["factor"] = check_factor(factor)
            if fit.get("kernel", "lanczos2") not in ("lanczos2", "bicubic"):
                raise ValueError(f"unknown kernel {fit['kernel']!r}; use 'lanczos2' or 'bicubic'")
        elif factor is not None:
            raise ValueError(f"factor only applies to super-resolution, not {task!r}")
        if fit.get("precision", "auto") not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {fit['precision']!r}; use 'auto', 'fp32', 'bf16' or 'fp16'")
        if task == "inpaint" and mask is None:
            raise ValueError("inpainting needs a mask (nonzero = pixels to fill in)")
        if task != "inpaint" and mask is not None:
            raise ValueError(f"a mask only applies to inpainting, not {task!r}")
        self.fit_kwargs = fit
        self.settings = settings
        self.factor = int(fit.get("factor", 1))

        in_path = path_of(image)
        if store is not None and in_path is not None and Path(store).resolve() == in_path.resolve():
            raise ValueError(f"store {store} is the input {image}: refusing to overwrite an input")
        self.image, self.layout = open_input(image, channel_axis=channel_axis, rgb=rgb)
        dtype = np.dtype(self.image.dtype)
        if dtype.kind not in "uif":
            raise TypeError(f"image has unsupported dtype {dtype}; use an integer or real float array")
        if int(np.prod(self.layout.shape)) == 0:
            raise ValueError(f"image is empty (shape {self.layout.shape})")
        self.mask, self.plane_mask = self._open_mask(mask)
        if calibration is None and in_path is not None:
            calibration = _read_calibration(in_path)
        if calibration is not None:
            calibration = calibration.for_shape(self.layout.shape)
        #: The output's calibration: the input's, with the pixel size divided by ``factor`` (or None).
        self.calibration: Calibration | None = (calibration.scaled(self.factor) if calibration and self.factor > 1
                                                else calibration or None)

        self.client, self._owns_client = _connect(scheduler)
        self.torch_threads = torch_threads
        self.retries = int(retries)
        self._cancelled = False
        try:
            self.intensity, digests = self._statistics()
            h, w = self.layout.plane_shape
            ndim = len(self.layout.shape)
            ys = ndim - 3 if self.layout.channel_axis == ndim - 1 else ndim - 2
            out_shape = list(self.layout.shape)
            out_shape[ys], out_shape[ys + 1] = h * self.factor, w * self.factor
            self.out_layout = Layout(tuple(out_shape), self.layout.channel_axis, self.layout.rgb)
            self.summary = self._summary(dtype)
            self.fingerprint = self._fingerprint(digests)
            self.store: str | None = None
            self.run_number = 1
            if store is not None:
                self.store, self.run_number, done = open_store(
                    store, fingerprint=self.fingerprint, job=self.summary, out_shape=tuple(out_shape),
                    chunks=plane_chunks(tuple(out_shape), self.layout.channel_axis), n_planes=self.n_planes,
                    resume=resume, overwrite=overwrite, ome=self._ome(Path(store).stem))
                self.done = done
                self._output: Any = None
            else:
                self.done = np.zeros(self.n_planes, dtype=bool)
                self._output = np.full(out_shape, np.nan, dtype=np.float32)
        except BaseException:
            self.close()
            raise
        self.fitted = 0
        self.landed = 0

    # -- setup ----------------------------------------------------------------------------------
    @property
    def n_planes(self) -> int:
        return self.layout.n_slices

    def _open_mask(self, mask: Any) -> tuple[Any, bool]:
        """The mask as an ``(H, W)`` numpy array (``True``) or a per-plane source (``False``)."""
        if mask is None:
            return None, True
        full = (*self.layout.stack_shape, *self.layout.plane_shape)
        shape = tuple(int(n) for n in mask.shape) if hasattr(mask, "shape") and path_of(mask) is None else None
        if shape == self.layout.plane_shape:
            arr = np.asarray(mask)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"mask has unsupported dtype {arr.dtype}; use a boolean or integer label array")
            return arr, True
        src, _ = open_input(mask, channel_axis=None, rgb=False, name="mask")
        if tuple(src.shape) == self.layout.plane_shape:
            return np.asarray(src), True
        if tuple(src.shape) != full:
            raise ValueError(f"mask shape {tuple(src.shape)} fits neither one plane {self.layout.plane_shape} nor "
                             f"the whole stack {full} of the image with shape {self.layout.shape}")
        if np.dtype(src.dtype).kind not in "biuf":
            raise TypeError(f"mask has unsupported dtype {src.dtype}; use a boolean or integer label array")
        return src, False

    def _is_stack_axis(self, axis: int) -> bool:
        ndim = len(self.layout.shape)
        spatial_start = ndim - 3 if self.layout.channel_axis == ndim - 1 else ndim - 2
        return axis != self.layout.channel_axis and axis < spatial_start

    def _numpy_block(self, arr: np.ndarray, s: int, layout_shape: tuple[int, ...], stack_axes: list[int]) -> np.ndarray:
        idx: list[Any] = [slice(None)] * len(layout_shape)
        for axis, i in zip(stack_axes, np.unravel_index(s, self.layout.stack_shape) if stack_axes else ()):
            idx[axis] = slice(int(i), int(i) + 1)
        return arr[tuple(idx)]

    def _stack_axes(self) -> list[int]:
        return [a for a in range(len(self.layout.shape)) if self._is_stack_axis(a)]

    def image_block(self, s: int, lazy: bool = False) -> Any:
        """Plane ``s``'s input block (size 1 on the stack axes): numpy, or a dask Delayed if ``lazy``."""
        if isinstance(self.image, np.ndarray):
            return self._numpy_block(self.image, s, self.layout.shape, self._stack_axes())
        idx = tuple(int(i) for i in np.unravel_index(s, self.layout.stack_shape)) if self.layout.stack_shape else ()
        it = iter(idx)
        block = tuple(next(it) if self._is_stack_axis(a) else 0 for a in range(len(self.layout.shape)))
        part = self.image.blocks[block]
        return part.to_delayed().ravel()[0] if lazy else part.compute(scheduler="synchronous")

    def mask_block(self, s: int, lazy: bool = False) -> Any:
        """Plane ``s``'s mask block, the ``(H, W)`` mask, or None."""
        if self.mask is None or self.plane_mask:
            return self.mask
        n_stack = len(self.layout.stack_shape)
        if isinstance(self.mask, np.ndarray):
            return self._numpy_block(self.mask, s, self.mask.shape, list(range(n_stack)))
        block = (*(int(i) for i in np.unravel_index(s, self.layout.stack_shape)), 0, 0)
        part = self.mask.blocks[block]
        return part.to_delayed().ravel()[0] if lazy else part.compute(scheduler="synchronous")

    def _statistics(self) -> tuple[Intensity, list[str]]:
        """Map :func:`plane_stats` over the planes (on the cluster if any), reduce on the client."""
        import dask

        n = self.n_planes
        lazy = not isinstance(self.image, np.ndarray) or (self.mask is not None and not self.plane_mask
                                                          and not isinstance(self.mask, np.ndarray))
        if lazy:
            tasks = [dask.delayed(plane_stats, pure=True)(self.layout, self.task, s, self.image_block(s, lazy=True),
                                                          self.mask_block(s, lazy=True), self.plane_mask)
                     for s in range(n)]
            if self.client is not None:
                stats = self.client.gather(self.client.compute(tasks))
            else:
                stats = list(dask.compute(*tasks, scheduler="threads"))
        else:
            stats = [plane_stats(self.layout, self.task, s, self.image_block(s), self.mask_block(s), self.plane_mask)
                     for s in range(n)]
        self._check(stats)
        return self._reduce(stats), [st.digest for st in stats]

    def _check(self, stats: list[PlaneStats]) -> None:
        """The core's validity checks, in the core's order, from the per-plane facts."""
        nonfinite = sum(st.nonfinite for st in stats)
        if self.task != "inpaint":
            if nonfinite:
                raise ValueError(f"image contains {nonfinite} NaN or Inf values; replace them, or mark them as "
                                 "pixels to fill in with inpainting")
            return
        if any(st.mask_nan for st in stats) or (self.plane_mask and np.asarray(self.mask).dtype.kind == "f"
                                                 and np.isnan(self.mask).any()):
            raise ValueError("mask contains NaN values")
        if not any(st.fill_any for st in stats):
            raise ValueError("the mask is empty: there are no pixels to fill in")
        full = [st.index for st in stats if st.fill_all]
        if full:
            raise ValueError(f"the mask covers every pixel of slice {min(full)}: there is no known pixel to fit")
        if nonfinite:
            raise ValueError(f"image contains {nonfinite} NaN or Inf values outside the mask; "
                             "add them to the mask to fill them in")

    def _reduce(self, stats: list[PlaneStats]) -> Intensity:
        """Combine per-plane min/max exactly as :meth:`Intensity.from_stack` does on the whole stack."""
        c = self.layout.channels
        per_channel = not self.layout.rgb and c > 1
        low = np.array([min(st.low[i] for st in stats) for i in range(c)])
        high = np.array([max(st.high[i] for st in stats) for i in range(c)])
        count = np.array([sum(st.count[i] for st in stats) for i in range(c)])
        if per_channel:
            if (count == 0).any():
                raise ValueError("the image has no known finite values to fit")
        else:
            if count.sum() == 0:
                raise ValueError("the image has no known finite values to fit")
            low = np.full(c, low.min())
            high = np.full(c, high.max())
        low = low.astype(np.float64)
        scale = high.astype(np.float64) - low
        flat = scale <= 0
        return Intensity(np.where(flat, low - 0.5, low), np.where(flat, 1.0, scale))

    def _summary(self, dtype: np.dtype) -> dict[str, Any]:
        fit = {k: v for k, v in self.fit_kwargs.items() if k != "device"}
        return json.loads(json.dumps({
            "task": self.task, "shape": list(self.layout.shape), "dtype": dtype.str,
            "channel_axis": self.layout.channel_axis, "rgb": self.layout.rgb,
            "seed": int(fit.pop("seed", 0)), "iterations": fit.pop("iterations", "auto"),
            "preset": fit.pop("preset", "paper") if isinstance(fit.get("preset", "paper"), str) else "custom",
            "factor": self.factor, "options": fit,
            "settings": dataclasses.asdict(self.settings),
            "intensity": {"low": self.intensity.low.tolist(), "scale": self.intensity.scale.tolist()},
        }, sort_keys=True, default=_json_default))

    def _fingerprint(self, digests: Iterable[str]) -> str:
        h = hashlib.blake2b(digest_size=20)
        h.update(json.dumps(self.summary, sort_keys=True).encode())
        for d in digests:
            h.update(d.encode())
        if self.mask is not None and self.plane_mask:
            fill = np.asarray(self.mask) != 0
            h.update(b"plane-mask")
            h.update(np.packbits(fill).tobytes())
        return h.hexdigest()

    def axis_letters(self) -> str:
        """One tifffile letter per axis of the output: the calibration's axes when known, else
        ``Y``/``X`` for the plane, ``C`` (``S`` for RGB) for the channel axis and ``Q`` for stack axes."""
        ndim = len(self.layout.shape)
        if self.calibration is not None and len(self.calibration.axes) == ndim:
            return self.calibration.axes
        ys = ndim - 3 if self.layout.channel_axis == ndim - 1 else ndim - 2
        letters = ["Q"] * ndim
        letters[ys], letters[ys + 1] = "Y", "X"
        if self.layout.channel_axis is not None:
            letters[self.layout.channel_axis] = "S" if self.layout.rgb else "C"
        return "".join(letters)

    def _ome(self, name: str) -> dict[str, Any]:
        cal = self.calibration
        return ngff_metadata(self.axis_letters(), cal.spacing if cal else {}, cal.units if cal else {}, name=name)

    def _spec(self, on_cluster: bool) -> PlaneSpec:
        return PlaneSpec(task=self.task, layout=self.layout, out_layout=self.out_layout, intensity=self.intensity,
                         fit_kwargs=dict(self.fit_kwargs), store=self.store, run=self.run_number,
                         torch_threads=self.torch_threads if on_cluster else None)

    # -- running --------------------------------------------------------------------------------
    @property
    def output(self) -> Any:
        """The output: the store's image array (read-only zarr), or the in-memory numpy array."""
        if self.store is None:
            return self._output
        import zarr

        return zarr.open_array(self.store, path=DATASET, mode="r")

    def _reader(self, s: int) -> Callable[[], np.ndarray]:
        key = plane_index(self.out_layout, s)
        if self.store is None:
            out = self._output
            return lambda: out[key]
        store = self.store
        return lambda: np.asarray(__import__("zarr").open_array(store, path=DATASET, mode="r")[key])

    def _event(self, s: int, outcome: PlaneOutcome | None) -> PlaneDone:
        self.landed += 1
        common = dict(index=s, key=plane_index(self.out_layout, s), n_planes=self.n_planes,
                      done=self.landed, _read=self._reader(s))
        if outcome is None:
            return PlaneDone(resumed=True, **common)
        self.fitted += 0 if outcome.skipped else 1
        if outcome.plane is not None:
            self._output[common["key"]] = outcome.plane
        if self.store is not None:  # the task has written the plane's data: record it as done
            mark_done(self.store, [s], self.run_number)
        self.done[s] = True
        return PlaneDone(skipped=outcome.skipped, seconds=outcome.seconds, worker=outcome.worker,
                         history=outcome.history, **common)

    def cancel(self) -> None:
        """Ask :meth:`planes` to stop after the plane(s) now running (thread-safe)."""
        self._cancelled = True

    def planes(self) -> Generator[PlaneDone, None, None]:
        """Run the unfinished planes, yielding a :class:`PlaneDone` as each lands.

        Planes finished by an earlier run come first (``resumed=True``). Closing the generator,
        :meth:`cancel` or an exception cancels the planes not started; finished ones stay in the
        store, so running the same job again resumes.
        """
        self.landed = 0
        for s in np.flatnonzero(self.done):
            yield self._event(int(s), None)
        todo = [int(s) for s in np.flatnonzero(~self.done)]
        if self.client is None:
            spec = self._spec(on_cluster=False)
            for s in todo:
                if self._cancelled:
                    return
                yield self._event(s, process_plane(spec, s, self.image_block(s), self.mask_block(s)))
        else:
            yield from self._run_on_cluster(todo)
        if self.store is not None and self.done.all():
            mark_complete(self.store, read_done(self.store, self.n_planes).all())

    def _run_on_cluster(self, todo: list[int]) -> Generator[PlaneDone, None, None]:
        import dask
        from distributed import as_completed

        if not todo:
            return
        spec = self._spec(on_cluster=True)
        tasks = []
        for s in todo:  # numpy inputs are in memory here: each task carries its own plane only
            block = self.image_block(s, lazy=not isinstance(self.image, np.ndarray))
            with dask.annotate(priority=self.n_planes - s):  # planes in order, as far as workers allow
                tasks.append(dask.delayed(process_plane, pure=True)(
                    spec, s, block, self.mask_block(s, lazy=not isinstance(self.mask, np.ndarray)),
                    dask_key_name=f"napari-dip-plane-{self.fingerprint[:10]}-r{self.run_number}-{s}"))
        futures = self.client.compute(tasks, retries=self.retries)
        pending = set(futures)
        try:
            for future, outcome in as_completed(futures, with_results=True):
                pending.discard(future)
                yield self._event(outcome.index, outcome)
                if self._cancelled:
                    return
        finally:
            if pending:
                self.client.cancel(list(pending))

    def run(self, on_plane_done: Callable[[PlaneDone], Any] | None = None) -> Any:
        """Run every plane (``on_plane_done`` gets each :class:`PlaneDone`); return :attr:`output`."""
        for event in self.planes():
            if on_plane_done is not None:
                on_plane_done(event)
        return self.output

    def history(self, events: Iterable[PlaneDone]) -> list[dict[str, Any] | None]:
        """Per plane, the fit history of the given events (None for planes not fitted in them)."""
        out: list[dict[str, Any] | None] = [None] * self.n_planes
        for e in events:
            out[e.index] = e.history
        return out

    def close(self) -> None:
        """Close the client if this job opened it."""
        client, self.client = getattr(self, "client", None), None
        if client is not None and getattr(self, "_owns_client", False):
            client.close()

    def __enter__(self) -> StackJob:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def restore_stack(task: str, image_or_path: Any, *, store: str | os.PathLike | None = None, scheduler: Any = None,
                  resume: bool = True, overwrite: bool = False,
                  on_plane_done: Callable[[PlaneDone], Any] | None = None, **restoration_kwargs: Any) -> Any:
    """Restore a stack plane by plane, in-process or on a dask cluster, into a resumable store.

    Parameters
    ----------
    task : {'denoise', 'inpaint', 'super_resolve'}
    image_or_path : path-like or array
        ``.tif``/``.tiff`` or ``.zarr`` path, or a numpy, zarr or dask array; read lazily.
    store : path-like, optional
        Output ``.zarr`` store written as planes finish (resumable); None: in memory.
    scheduler : str or distributed.Client, optional
        None: in this process. ``'tcp://host:8786'`` or a ``Client``: planes are dask tasks on
        the cluster's workers.
    resume : bool
        Resume an existing store of the same job (its finished planes are not refitted).
    overwrite : bool
        Replace an existing napari-dip store instead.
    on_plane_done : callable, optional
        Called with a :class:`PlaneDone` for every plane as it lands (resumed planes first).
        Raising from it stops the job; finished planes stay in the store.
    **restoration_kwargs
        ``mask``, ``factor``, ``iterations``, ``preset``, ``device``, ``seed``, ``channel_axis``,
        ``rgb``, ``precision``, ``kernel``, ``torch_threads``, ``retries`` and any
        :class:`~napari_dip.core.settings.Settings` field (see :class:`StackJob`).

    Returns
    -------
    zarr.Array or numpy.ndarray
        The store's image array (read-only; the store itself is an OME-Zarr image) when ``store``
        is given, else a numpy array; float32 in the input's units, same axes as the input (planes
        ``factor`` x larger).
    """
    with StackJob(task, image_or_path, store=store, scheduler=scheduler, resume=resume, overwrite=overwrite,
                  **restoration_kwargs) as job:
        return job.run(on_plane_done)
