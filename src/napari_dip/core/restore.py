"""Restoring whole arrays: the three tasks, applied plane by plane over any stack.

:class:`Restoration` takes an array in napari/numpy layout ``(..., Y, X[, C])``, normalises its
intensities once for the whole stack, and fits one DIP per 2D plane (with all its channels).
``steps()`` yields each iteration's :class:`~napari_dip.core.fit.Snapshot` (its images are planes
``(H, W, C)`` in the input's units, tagged with the slice index) and returns the output array;
``result()`` gives the output so far at any time, so a cancelled run keeps what it has.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from .devices import resolve_device
from .fit import DIPMemoryError, FitResult, Fitter, Snapshot, check_iterations, drain
from .fusion import FusionPlan, check_pixel_fusion, plan_fusion
from .layout import Intensity, check_image, check_mask, get_plane, infer_layout, put_plane
from .memory import available_bytes, estimate_fit_bytes, format_bytes, largest_fitting_side
from .noise import NoisePlan, check_noise_settings, plan_noise
from .operators import Downsampler, Identity, LinearOperator, Mask
from .settings import TASKS, get_settings, resolve_preset

__all__ = ["Restoration", "check_factor", "plan_tiles"]

_TILE_SIDES = (2048, 1536, 1024, 768, 512, 384, 256, 192, 128, 96, 64)


def check_factor(factor: Any) -> int:
    """Validate a super-resolution factor: an integer >= 2 (floats like 4.0 are accepted).

    Raises
    ------
    ValueError
        For anything else (1, 0, negatives, 2.5, strings, booleans).
    """
    if isinstance(factor, bool):
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}") from None
    if not f.is_integer() or f < 2:
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
    return int(f)


def plan_tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start/stop pairs of ``tile``-pixel tiles covering ``range(length)``, spread evenly so that
    neighbours overlap by at least ``overlap`` pixels."""
    if tile >= length:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (n - 1)) for i in range(n)]
    return [(a, a + tile) for a in starts]


def _relay(gen: Generator[Snapshot, None, Any], transform: Callable[[Snapshot], Snapshot]
           ) -> Generator[Snapshot, None, Any]:
    """Yield ``transform(snapshot)`` for each snapshot of ``gen``; return ``gen``'s value."""
    while True:
        try:
            snap = next(gen)
        except StopIteration as stop:
            return stop.value
        yield transform(snap)


def _first(images: list | None):
    """The first plane's preview of a batch (None stays None)."""
    return None if images is None else images[0]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1D blending weights: linear ramps over the overlap, except at the image border."""
    w = np.ones(length, np.float64)
    if overlap > 0:
        ramp = (np.arange(overlap) + 0.5) / overlap
        n = min(overlap, length)
        if not at_start:
            w[:n] = np.minimum(w[:n], ramp[:n])
        if not at_end:
            w[length - n:] = np.minimum(w[length - n:], ramp[:n][::-1])
    return w


class Restoration:
    """Denoise, inpaint or super-resolve an image or a stack, one DIP fit per plane.

    Parameters
    ----------
    task : {'denoise', 'inpaint', 'super_resolve'}
    image : array
        ``(..., Y, X)`` or ``(..., Y, X, C)``; integer or float. Never modified.
    mask : array, optional
        Inpainting only: nonzero = pixel to fill in. Shape ``(Y, X)`` (every plane) or the
        image's shape without its channel axis (plane by plane).
    factor : int, optional
        Super-resolution only: integer factor >= 2.
    iterations : int or 'auto'
    max_iterations : int, optional
        Cap of an automatic fit (default: the preset's ``iterations``).
    preset : {'auto', 'pretrained', 'fast', 'paper'} or Settings
        ``'auto'`` (default): ``'paper'`` on a GPU; on a CPU ``'pretrained'`` (denoising,
        inpainting) or ``'fast'`` (super-resolution); see
        :func:`~napari_dip.core.settings.resolve_preset`.
    device, seed, preview_every, precision
        As for :class:`~napari_dip.core.fit.Fitter`.
    channel_axis, rgb
        Layout overrides (see :func:`~napari_dip.core.layout.infer_layout`).
    kernel : {'lanczos2', 'bicubic'}
        Super-resolution downsampling kernel.
    warm_start : bool
        Start each plane from the previous plane's final weights.
    neighbour_planes : int or 'auto'
        Denoising a stack with a masked fit (the ``pretrained`` preset; ``auto`` on a CPU): the
        network also sees this many planes on each side of the one it fits, along the last stack
        axis (:meth:`neighbours`), in the same intensity scale. Their noise is independent of the
        plane's and their structure mostly is not, so each hidden pixel is predicted from its own
        neighbours in the plane and from the same place one plane up and down. 0: each plane alone.
        ``'auto'`` (default): 1 where it applies (denoising a stack of at least 2 planes with a masked
        fit, one plane at a time), else 0. Measured (docs/performance.md): on three z-stacks with
        synthetic shot noise +1.7, +1.8 and +0.1 dB (planes that differ), on the FMD frame series with
        the microscopes' real noise +0.3 to +1.2 dB, at the same time per iteration; not measured on
        time series with moving structures. The value used is :attr:`neighbour_planes`.
    tile : 'auto', None or int
        Planes whose estimated memory exceeds ``max_memory`` are fitted in overlapping square
        tiles blended without seams (``'auto'``: the largest tile side that fits), or refused with
        a :class:`~napari_dip.core.fit.DIPMemoryError` naming the size that would fit (None). An
        int forces tiles of that side (in input pixels).
    tile_overlap : int
        Overlap of neighbouring tiles in input pixels (blended with linear ramps).
    max_memory : int, optional
        Memory budget in bytes (default: 80 % of what the device has free now).
    batch_size : int
        Fit this many planes at once (independent skip networks run side by side as grouped
        convolutions; each plane gets exactly the code, weights, jitter and stopping of its own
        fit). Faster on GPUs, where one plane leaves most of the device idle. Not combined with
        tiling or warm starts (those fit one plane at a time).
    **overrides
        Any :class:`~napari_dip.core.settings.Settings` field (``lr``, ``reg_noise_std``, ``ema``,
        ``network``, ``network_kwargs``, ``stop_patience``, ...).
    """

    def __init__(self, task: str, image, *, mask=None, factor: int | None = None,
                 iterations: int | str = "auto", max_iterations: int | None = None, preset="auto",
                 device="auto", seed: int = 0,
                 channel_axis: int | None = None, rgb: bool | None = None, preview_every: int = 0,
                 precision: str = "auto", kernel: str = "lanczos2", warm_start: bool = False,
                 tile: str | int | None = "auto", tile_overlap: int = 32, max_memory: int | None = None,
                 batch_size: int = 1, neighbour_planes: int | str = "auto", **overrides):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
        self.task = task
        if max_iterations is not None:
            cap = check_iterations(max_iterations)
            if cap is None:
                raise ValueError("max_iterations must be a positive integer")
            overrides["iterations"] = cap
        self.device = resolve_device(device)
        #: the preset asked for, and what ``'auto'`` resolved to on this device
        self.preset = preset if isinstance(preset, str) else "custom"
        arr = check_image(image, allow_nonfinite=task == "inpaint")
        self.layout = infer_layout(arr.shape, channel_axis, rgb)
        channels = self.layout.channels
        self.resolved_preset = (resolve_preset(preset, task, self.device, channels) if isinstance(preset, str)
                                else "custom")
        self.settings = get_settings(preset, task, device=self.device, channels=channels, **overrides)
        check_noise_settings(self.settings, task)
        check_pixel_fusion(self.settings, task)
        self.image = arr
        h, w = self.layout.plane_shape
        self.factor = 1
        self.kernel = kernel
        self.fill: np.ndarray | None = None
        if task == "super_resolve":
            if factor is None:
                raise ValueError("super-resolution needs a factor (an integer >= 2)")
            self.factor = check_factor(factor)
        elif factor is not None:
            raise ValueError(f"factor only applies to super-resolution, not {task!r}")
        if task == "inpaint":
            if mask is None:
                raise ValueError("inpainting needs a mask (nonzero = pixels to fill in)")
            fill = self.layout.spatial_mask_to_stack(check_mask(mask))
            if not fill.any():
                raise ValueError("the mask is empty: there are no pixels to fill in")
            full = fill.reshape(fill.shape[0], -1).all(axis=1)
            if full.any():
                raise ValueError(f"the mask covers every pixel of slice {int(np.argmax(full))}: "
                                 "there is no known pixel to fit")
            self.fill = fill
        elif mask is not None:
            raise ValueError(f"a mask only applies to inpainting, not {task!r}")
        known = None if self.fill is None else ~self.fill
        stack = self.layout.to_stack(arr)
        if self.fill is not None:
            bad = ~np.isfinite(stack) & known[..., None]
            if bad.any():
                raise ValueError(f"image contains {int(bad.sum())} NaN or Inf values outside the mask; "
                                 "add them to the mask to fill them in")
        self.intensity = Intensity.from_stack(stack, per_channel=not self.layout.rgb and self.layout.channels > 1,
                                              known=known)
        check_iterations(iterations)
        self.iterations = iterations
        self.seed = int(seed)
        self.preview_every = int(preview_every)
        self.precision = precision
        self.warm_start = bool(warm_start)
        self.out_plane = (h * self.factor, w * self.factor)
        out_shape = list(arr.shape)
        ndim = arr.ndim
        ys = ndim - 3 if self.layout.channel_axis == ndim - 1 else ndim - 2
        out_shape[ys], out_shape[ys + 1] = self.out_plane
        self.output = np.full(out_shape, np.nan, dtype=np.float32)
        self.done = np.zeros(self.layout.n_slices, dtype=bool)
        self.fits: list[FitResult | None] = [None] * self.layout.n_slices
        #: each plane's noise model (:func:`~napari_dip.core.noise.plan_noise`), made when it is first fitted
        self.noise: list[NoisePlan | None] = [None] * self.layout.n_slices
        #: each plane's pixel fusion (:func:`~napari_dip.core.fusion.plan_fusion`), made when it is first fitted
        self.fusion: list[FusionPlan | None] = [None] * self.layout.n_slices
        self._fusion_weight: list[float | None] = [None] * self.layout.n_slices
        self.current: Fitter | None = None
        self.current_slice = -1
        self._tile: tuple | None = None
        self._batch_planes: list[int] | None = None
        self._state: dict | None = None
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.neighbour_planes = self._check_neighbours(neighbour_planes)
        self.tile_side = self._choose_tile(tile, int(tile_overlap), max_memory)
        self.tile_overlap = int(tile_overlap)

    @property
    def n_slices(self) -> int:
        return self.layout.n_slices

    def _check_neighbours(self, k: Any) -> int:
        """Validate ``neighbour_planes`` against the task, the settings and the stack (``'auto'``: 1
        where neighbours apply, else 0)."""
        depth = self.layout.stack_shape[-1] if self.layout.stack_shape else 1
        if isinstance(k, str) and k == "auto":
            applies = (self.task == "denoise" and self.settings.input_kind == "masked" and depth >= 2
                       and self.batch_size == 1)
            return 1 if applies else 0
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"neighbour_planes must be 'auto' or a whole number >= 0, got {k!r}")
        k = int(k)
        if k == 0:
            return 0
        if self.task != "denoise":
            raise ValueError(f"neighbour_planes applies to denoising only, not {self.task!r} (a plane's neighbours "
                             "would show the network pixels it has to fill in or the noise it has to remove)")
        if self.settings.input_kind != "masked":
            raise ValueError("neighbour_planes needs a masked fit (preset 'pretrained', or 'auto' on a CPU): "
                             "a fit from a random code has no input to show the neighbours in")
        if depth < 2:
            raise ValueError(f"neighbour_planes={k} needs a stack of at least 2 planes along its last stack axis, "
                             f"the image has {depth}")
        if self.batch_size > 1:
            raise ValueError(f"neighbour_planes={k} fits one plane at a time with its neighbours: not with "
                             f"batch_size={self.batch_size} (use batch_size=1, or neighbour_planes=0 to batch)")
        return k

    def neighbours(self, s: int) -> list[int]:
        """Slice indices of plane ``s``'s neighbours: for each distance ``d`` up to ``neighbour_planes``,
        the planes ``d`` below and above along the last stack axis.

        Past an end of the stack the plane at the same distance on the other side is used (plane 0's
        neighbours at distance 1 are plane 1 twice), and where both sides end the farthest plane
        there is; never plane ``s`` itself (showing the network the plane's own noise would let it
        learn the identity).
        """
        k = self.neighbour_planes
        if k == 0:
            return []
        depth = self.layout.stack_shape[-1]
        z, base = s % depth, s - s % depth
        out = []
        for d in range(1, k + 1):
            for j in (z - d, z + d):
                if not 0 <= j < depth:
                    j = 2 * z - j  # the other side
                if not 0 <= j < depth:
                    j = 0 if z >= depth - 1 - z else depth - 1  # the farthest plane
                out.append(base + j)
        return out

    # -- memory and tiles ---------------------------------------------------------------------
    def _choose_tile(self, tile, overlap: int, max_memory: int | None) -> int | None:
        """Tile side in input pixels, or None to fit whole planes."""
        h, w = self.layout.plane_shape
        c = self.layout.channels
        if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
            if tile < 8 or overlap < 0 or overlap >= tile:
                raise ValueError(f"tile must be >= 8 pixels and larger than tile_overlap ({overlap}), got {tile}")
            return int(tile) if tile < max(h, w) else None
        if tile not in ("auto", None):
            raise ValueError(f"tile must be 'auto', None or a number of pixels, got {tile!r}")
        budget = int(max_memory) if max_memory is not None else int(0.8 * available_bytes(self.device))
        need = estimate_fit_bytes(self.settings, c, h * self.factor, w * self.factor)
        if need <= budget:
            return None
        fits = largest_fitting_side(self.settings, c, budget) // self.factor
        where = f"a {h * self.factor}x{w * self.factor} output needs about {format_bytes(need)} with these " \
                f"settings on {self.device}, {format_bytes(budget)} is available"
        if tile is None or fits < 64:
            hint = (f"the largest square that fits is about {fits}x{fits} input pixels" if fits >= 8 else
                    "not even a small tile fits")
            raise DIPMemoryError(f"{where}: {hint}. Use tiling (tile='auto'), the 'fast' preset, a crop, or "
                                 "another device")
        return max(t for t in _TILE_SIDES if t <= fits) if fits >= _TILE_SIDES[-1] else fits

    def regions(self) -> list[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` input-pixel regions fitted for each plane (one unless tiled)."""
        h, w = self.layout.plane_shape
        if self.tile_side is None:
            return [(0, h, 0, w)]
        return [(y0, y1, x0, x1) for y0, y1 in plan_tiles(h, self.tile_side, self.tile_overlap)
                for x0, x1 in plan_tiles(w, self.tile_side, self.tile_overlap)]

    # -- one plane ----------------------------------------------------------------------------
    def noise_plan(self, s: int) -> NoisePlan:
        """The noise model of plane ``s`` (measured on the whole plane once, also when tiled)."""
        if self.noise[s] is None:
            self.noise[s] = plan_noise(get_plane(self.layout, self.image, s), self.settings, self.task,
                                       rgb=self.layout.rgb)
        return self.noise[s]

    def fusion_plan(self, s: int) -> FusionPlan:
        """Plane ``s``'s pixel fusion (decided on the whole plane once, also when tiled)."""
        if self.fusion[s] is None:
            noise = self.noise_plan(s)
            self.fusion[s] = plan_fusion(get_plane(self.layout, self.image, s), self.settings, self.task,
                                         noise=noise, rgb=self.layout.rgb)
        return self.fusion[s]

    def _fused(self, s: int, image: np.ndarray | None, final: bool = False) -> np.ndarray | None:
        """Plane ``s``'s estimate ``(H, W, C)`` fused with its noisy pixels where its plan says so."""
        plan = None if image is None else self.fusion_plan(s)
        if plan is None or not plan.on:
            return image
        fused = plan.apply(get_plane(self.layout, self.image, s), image)
        if final:
            self._fusion_weight[s] = fused.mean_weight
        return fused.image

    def _with_noise(self, s: int, res: FitResult, **changes: Any) -> FitResult:
        """``res`` without its image, its history holding plane ``s``'s noise model and pixel fusion."""
        history = dict(res.history)
        if self.noise[s] is not None:
            history.update(self.noise[s].history())
        if self.fusion[s] is not None:
            history.update(self.fusion[s].history(self._fusion_weight[s]))
        return dataclasses.replace(res, image=None, history=history, **changes)

    def _problem(self, s: int, region: tuple[int, int, int, int] | None = None
                 ) -> tuple[torch.Tensor, LinearOperator, Callable[[torch.Tensor], np.ndarray]]:
        """Target tensor, operator and export function of plane ``s`` (or a region of it).

        With the Poisson-Gaussian noise model the target is the variance-stabilised plane mapped to
        ``[0, 1]``, and the export inverts that (exact unbiased inverse) back to the input's units.
        """
        h, w = self.layout.plane_shape
        y0, y1, x0, x1 = region or (0, h, 0, w)
        original = get_plane(self.layout, self.image, s)[y0:y1, x0:x1]  # (h, w, C), input units
        intensity = self._intensity(s)
        plane = intensity.normalise(original)
        known = None
        if self.fill is not None:
            known = ~self.fill[s][y0:y1, x0:x1, None]
            if not known.any():
                raise ValueError(f"tile rows {y0}-{y1}, columns {x0}-{x1} of plane {s} has no known pixel; "
                                 "use a larger tile (tile=...) or a smaller hole")
            plane = np.where(known, plane, 0.0).astype(np.float32)
            original = original.astype(np.float32)
        target = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None]
        if self.task == "denoise":
            op: LinearOperator = Identity()
        elif self.task == "inpaint":
            op = Mask(torch.from_numpy(np.ascontiguousarray(known[..., 0]))[None, None])
        else:
            op = Downsampler(self.factor, self.kernel)

        def export(x: torch.Tensor) -> np.ndarray:
            out = intensity.restore(x[0].detach().float().permute(1, 2, 0).cpu().numpy())
            if known is not None:  # keep the known pixels exactly as they were measured
                out = np.where(known, original, out)
            return out

        return target, op, export

    def _intensity(self, s: int):
        """The intensity map of plane ``s``'s target: its noise model's under the Poisson-Gaussian
        model (the stabilised domain), else the stack's shared one."""
        noise = self.noise_plan(s)
        return noise if noise.stabilised else self.intensity

    def _context(self, s: int, region: tuple[int, int, int, int] | None = None) -> torch.Tensor | None:
        """Plane ``s``'s neighbouring planes (or that region of them) in its target's intensity scale."""
        picks = self.neighbours(s)
        if not picks:
            return None
        h, w = self.layout.plane_shape
        y0, y1, x0, x1 = region or (0, h, 0, w)
        intensity = self._intensity(s)
        planes = [intensity.normalise(get_plane(self.layout, self.image, j)[y0:y1, x0:x1]) for j in picks]
        stacked = np.concatenate([p.transpose(2, 0, 1) for p in planes], axis=0).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(stacked))[None]

    def _copy_through(self, s: int) -> bool:
        """Copy an inpainting plane with no pixel to fill straight to the output; True if done so."""
        if self.fill is None or self.fill[s].any():
            return False
        put_plane(self.layout, self.output, s, get_plane(self.layout, self.image, s).astype(np.float32))
        self.done[s] = True
        return True

    # -- the run ------------------------------------------------------------------------------
    def _batched(self) -> bool:
        return (self.batch_size > 1 and self.tile_side is None and not self.warm_start
                and self.settings.network == "skip")

    def _batch_steps(self, planes: list[int]) -> Generator[Snapshot, None, None]:
        """Fit ``planes`` together as one grouped fit."""
        problems = [self._problem(s) for s in planes]
        c = self.layout.channels
        target = torch.cat([p[0] for p in problems], dim=1)
        if self.task == "inpaint":
            known = torch.cat([p[1].known.expand(1, c, *p[1].known.shape[-2:]) for p in problems], dim=1)
            op: LinearOperator = Mask(known)
        else:
            op = problems[0][1]
        exports = [p[2] for p in problems]

        def export(x: torch.Tensor) -> list[np.ndarray]:
            return [e(x[:, i * c:(i + 1) * c]) for i, e in enumerate(exports)]

        self.current = Fitter(target, op, self.settings, iterations=self.iterations, device=self.device,
                              seed=self.seed, preview_every=self.preview_every, export=export,
                              precision=self.precision, groups=len(planes),
                              noise_levels=[self.noise_plan(s).level for s in planes])
        self.current_slice = planes[0]
        self._batch_planes = planes
        label = f"planes {planes[0] + 1}-{planes[-1] + 1} together"
        res: FitResult = yield from _relay(self.current.steps(), lambda snap: dataclasses.replace(
            snap, image=_first(snap.image), ema=self._fused(planes[0], _first(snap.ema)),
            message=snap.message or label, slice_index=planes[0], n_slices=self.n_slices))
        for g, (s, image) in enumerate(zip(planes, res.image)):
            put_plane(self.layout, self.output, s, self._fused(s, image, final=True))
            best = self.current.group_best[g] if self.current.auto and self.current.group_best[g] else res.iterations
            self.fits[s] = self._with_noise(s, res, best_iteration=best)
            self.done[s] = True
        self.current = None
        self._batch_planes = None

    def steps(self) -> Generator[Snapshot, None, np.ndarray]:
        """Fit every plane in turn, yielding snapshots; returns the output array."""
        if self._batched():
            todo = [s for s in range(self.n_slices) if not self.done[s] and not self._copy_through(s)]
            for i in range(0, len(todo), self.batch_size):
                yield from self._batch_steps(todo[i:i + self.batch_size])
            return self.output
        for s in range(self.n_slices):
            if self.done[s]:
                continue
            self.current_slice = s
            if self._copy_through(s):
                continue
            regions = self.regions()
            oh, ow = self.out_plane
            acc = np.zeros((oh, ow, self.layout.channels), np.float64) if len(regions) > 1 else None
            wsum = np.zeros((oh, ow, 1), np.float64) if acc is not None else None
            iterations = 0
            for k, region in enumerate(regions):
                target, op, export = self._problem(s, region if acc is not None else None)
                warm = self.warm_start and self._state is not None
                settings = self.settings
                if warm:  # the warm planes' own patience and floor, where set
                    changes = {"stop_patience": settings.warm_stop_patience,
                               "min_iterations": settings.warm_min_iterations}
                    settings = settings.replace(**{k: v for k, v in changes.items() if v is not None})
                self.current = Fitter(target, op, settings, iterations=self.iterations, device=self.device,
                                      seed=self.seed, preview_every=self.preview_every, export=export,
                                      precision=self.precision,
                                      init_state=self._state if warm else None,
                                      noise_levels=[self.noise_plan(s).level],
                                      context=self._context(s, region if acc is not None else None))
                tiled = acc is not None
                self._tile = (region, acc, wsum) if tiled else None
                label = f"tile {k + 1}/{len(regions)}"

                def tag(snap: Snapshot, s=s, tiled=tiled, label=label) -> Snapshot:
                    if tiled:  # previews show the whole plane: finished tiles plus this one (unfused)
                        snap = dataclasses.replace(snap, image=self._blend_or_none(snap.image),
                                                   ema=self._blend_or_none(snap.ema), message=snap.message or label)
                    else:  # the estimate as it would be kept now
                        snap = dataclasses.replace(snap, ema=self._fused(s, snap.ema))
                    return dataclasses.replace(snap, slice_index=s, n_slices=self.n_slices)

                res = yield from _relay(self.current.steps(), tag)
                iterations += res.iterations
                if tiled:
                    self._add_tile(acc, wsum, region, res.image)
            if acc is not None:
                res = dataclasses.replace(res, image=(acc / wsum).astype(np.float32), iterations=iterations)
            self._tile = None
            put_plane(self.layout, self.output, s, self._fused(s, res.image, final=True))
            self.fits[s] = self._with_noise(s, res)
            self.done[s] = True
            if self.warm_start:
                self._state = self.current.state
            self.current = None
        return self.output

    def _tile_weight(self, region: tuple[int, int, int, int]) -> np.ndarray:
        """Blending weights ``(h*f, w*f, 1)`` of a tile (ramps inside the image, flat at its border)."""
        y0, y1, x0, x1 = region
        h, w = self.layout.plane_shape
        f, o = self.factor, self.tile_overlap * self.factor
        wy = _ramp((y1 - y0) * f, o, y0 == 0, y1 == h)
        wx = _ramp((x1 - x0) * f, o, x0 == 0, x1 == w)
        return (wy[:, None] * wx[None, :])[..., None]

    def _blend_or_none(self, tile_image: np.ndarray | None) -> np.ndarray | None:
        return None if tile_image is None else self._blend_preview(tile_image)

    def _add_tile(self, acc: np.ndarray, wsum: np.ndarray, region: tuple[int, int, int, int],
                  image: np.ndarray) -> None:
        """Accumulate a tile's output into the weighted sum of a plane (in place)."""
        y0, y1, x0, x1 = region
        f = self.factor
        wt = self._tile_weight(region)
        acc[y0 * f:y1 * f, x0 * f:x1 * f] += wt * image
        wsum[y0 * f:y1 * f, x0 * f:x1 * f] += wt

    def _blend_preview(self, tile_image: np.ndarray) -> np.ndarray:
        """The plane so far: finished tiles blended, the tile being fitted blended in on top."""
        region, acc, wsum = self._tile
        acc2, wsum2 = acc.copy(), wsum.copy()
        self._add_tile(acc2, wsum2, region, tile_image)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (acc2 / wsum2).astype(np.float32)  # NaN where no tile has reached yet

    def result(self, cancelled: bool = False) -> np.ndarray:
        """The output so far: finished planes, the best estimate of the plane being fitted
        (if any iteration ran), NaN for planes not reached. Returns a copy."""
        out = self.output.copy()
        fitter = self.current
        if fitter is not None and fitter.has_estimate and self._batch_planes is not None:
            for s, image in zip(self._batch_planes, fitter.result(cancelled).image):
                put_plane(self.layout, out, s, self._fused(s, image))
        elif fitter is not None and fitter.has_estimate:
            image = fitter.result(cancelled).image
            if self._tile is not None:  # tiled: blend with the finished tiles (unfused: parts may be NaN)
                image = self._blend_preview(image)
            else:
                image = self._fused(self.current_slice, image)
            put_plane(self.layout, out, self.current_slice, image)
        return out

    def run(self, callback: Callable[[Snapshot], Any] | None = None) -> np.ndarray:
        """Fit all planes (``callback`` gets every snapshot) and return the output."""
        return drain(self.steps(), callback)

    def history(self) -> list[dict[str, Any] | None]:
        """Per plane: the loss/stop-signal curves and stop point (None for planes not fitted)."""
        return [None if f is None else f.history_json() for f in self.fits]
