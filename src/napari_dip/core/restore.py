"""Restoring whole arrays: the three tasks, applied plane by plane over any stack.

:class:`Restoration` takes an array in napari/numpy layout ``(..., Y, X[, C])``, normalises its
intensities once for the whole stack, and fits one DIP per 2D plane (with all its channels).
``steps()`` yields each iteration's :class:`~napari_dip.core.fit.Snapshot` (its images are planes
``(H, W, C)`` in the input's units, tagged with the slice index) and returns the output array;
``result()`` gives the output so far at any time, so a cancelled run keeps what it has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from .fit import FitResult, Fitter, Snapshot, drain
from .layout import Intensity, check_image, check_mask, get_plane, infer_layout, put_plane
from .operators import Downsampler, Identity, LinearOperator, Mask
from .settings import TASKS, get_settings

__all__ = ["Restoration", "check_factor"]


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
    preset : {'paper', 'fast'} or Settings
    device, seed, preview_every, precision
        As for :class:`~napari_dip.core.fit.Fitter`.
    channel_axis, rgb
        Layout overrides (see :func:`~napari_dip.core.layout.infer_layout`).
    kernel : {'lanczos2', 'bicubic'}
        Super-resolution downsampling kernel.
    warm_start : bool
        Start each plane from the previous plane's final weights.
    **overrides
        Any :class:`~napari_dip.core.settings.Settings` field (``lr``, ``reg_noise_std``, ``ema``,
        ``network``, ``network_kwargs``, ``stop_patience``, ...).
    """

    def __init__(self, task: str, image, *, mask=None, factor: int | None = None,
                 iterations: int | str = "auto", preset="paper", device="auto", seed: int = 0,
                 channel_axis: int | None = None, rgb: bool | None = None, preview_every: int = 0,
                 precision: str = "auto", kernel: str = "lanczos2", warm_start: bool = False,
                 **overrides):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
        self.task = task
        self.settings = get_settings(preset, task, **overrides)
        arr = check_image(image, allow_nonfinite=task == "inpaint")
        self.layout = infer_layout(arr.shape, channel_axis, rgb)
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
        self.iterations = iterations
        self.device = device
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
        self.current: Fitter | None = None
        self.current_slice = -1
        self._state: dict | None = None

    @property
    def n_slices(self) -> int:
        return self.layout.n_slices

    # -- one plane ----------------------------------------------------------------------------
    def _problem(self, s: int) -> tuple[torch.Tensor, LinearOperator, Callable[[torch.Tensor], np.ndarray]]:
        """Target tensor, operator and export function of plane ``s``."""
        original = get_plane(self.layout, self.image, s)  # (H, W, C), input units
        plane = self.intensity.normalise(original)
        known = None
        if self.fill is not None:
            known = ~self.fill[s][..., None]
            plane = np.where(known, plane, 0.0).astype(np.float32)
            original = original.astype(np.float32)
        target = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None]
        if self.task == "denoise":
            op: LinearOperator = Identity()
        elif self.task == "inpaint":
            op = Mask(torch.from_numpy(known[..., 0])[None, None])
        else:
            op = Downsampler(self.factor, self.kernel)
        intensity = self.intensity

        def export(x: torch.Tensor) -> np.ndarray:
            out = intensity.restore(x[0].detach().float().permute(1, 2, 0).cpu().numpy())
            if known is not None:  # keep the known pixels exactly as they were measured
                out = np.where(known, original, out)
            return out

        return target, op, export

    def _skip_plane(self, s: int) -> bool:
        """Inpainting planes with no pixel to fill are copied through unchanged."""
        return self.fill is not None and not self.fill[s].any()

    # -- the run ------------------------------------------------------------------------------
    def steps(self) -> Generator[Snapshot, None, np.ndarray]:
        """Fit every plane in turn, yielding snapshots; returns the output array."""
        for s in range(self.n_slices):
            if self.done[s]:
                continue
            self.current_slice = s
            if self._skip_plane(s):
                put_plane(self.layout, self.output, s, get_plane(self.layout, self.image, s).astype(np.float32))
                self.done[s] = True
                continue
            target, op, export = self._problem(s)
            self.current = Fitter(target, op, self.settings, iterations=self.iterations, device=self.device,
                                  seed=self.seed, preview_every=self.preview_every, export=export,
                                  precision=self.precision,
                                  init_state=self._state if self.warm_start else None)
            gen = self.current.steps()
            while True:
                try:
                    snap = next(gen)
                except StopIteration as stop:
                    res: FitResult = stop.value
                    break
                yield dataclasses.replace(snap, slice_index=s, n_slices=self.n_slices)
            put_plane(self.layout, self.output, s, res.image)
            self.fits[s] = dataclasses.replace(res, image=None)
            self.done[s] = True
            if self.warm_start:
                self._state = self.current.state
            self.current = None
        return self.output

    def result(self, cancelled: bool = False) -> np.ndarray:
        """The output so far: finished planes, the best estimate of the plane being fitted
        (if any iteration ran), NaN for planes not reached. Returns a copy."""
        out = self.output.copy()
        fitter = self.current
        if fitter is not None and fitter.iteration > 0:
            put_plane(self.layout, out, self.current_slice, fitter.result(cancelled).image)
        return out

    def run(self, callback: Callable[[Snapshot], Any] | None = None) -> np.ndarray:
        """Fit all planes (``callback`` gets every snapshot) and return the output."""
        return drain(self.steps(), callback)

    def history(self) -> list[dict[str, Any] | None]:
        """Per plane: the loss/stop-signal curves and stop point (None for planes not fitted)."""
        return [None if f is None else f.history_json() for f in self.fits]
