"""Turning the widgets' options into a core :class:`~napari_dip.core.restore.Restoration`, and
its outputs into layer data.

Building a restoration validates everything (shapes, mask, factor, device) in the caller's
thread, so mistakes surface at once as clear ``ValueError``/``TypeError``/``RuntimeError``s;
the fit itself runs later, in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .layers import ImageInput

__all__ = ["RunOptions", "build_restoration", "empty_output", "finished_output"]

#: ``overrides`` keys passed to :class:`~napari_dip.core.restore.Restoration` rather than its settings.
_RESTORATION_KEYS = ("tile", "tile_overlap", "max_memory")


@dataclass(frozen=True)
class RunOptions:
    """What the user chose in a widget.

    Attributes
    ----------
    iterations : int
        Iterations of a fixed fit, or the most an automatic fit may run.
    auto_stop : bool
        Stop each plane automatically (the preset's ``stop_rule``, by default ``'auto'``: hold-out
        validation, or the discrepancy principle for spatially correlated noise) and keep the estimate
        from the best iteration.
    preset : str
        ``'paper'`` (the reference networks) or ``'fast'`` (a light network for CPUs).
    device : str
        ``'auto'``, ``'cpu'``, ``'cuda'``, ...
    seed : int
        Random seed: the same seed and inputs give the same result on a CPU.
    preview_every : int
        Send the current estimate to the output layer every this many iterations (0: at the end
        of each plane only).
    warm_start : bool
        Start each plane of a stack from the previous plane's weights.
    warm_patience : int
        With ``warm_start`` and ``auto_stop``: a warm plane stops after this many iterations without
        a new minimum and runs at least twice as many (``warm_stop_patience`` and
        ``warm_min_iterations`` of :class:`~napari_dip.core.settings.Settings`); 0: the preset's
        patience and floor, as for the first plane.
    neighbour_planes : int or 'auto'
        Denoising a stack with a masked fit: the network also sees this many planes on each side
        of the plane it fits (:class:`~napari_dip.core.restore.Restoration`); 0: each plane alone;
        ``'auto'`` (default): 1 where that applies, else 0.
    precision : str
        ``'auto'`` (fp32; TF32 arithmetic on CUDA), ``'fp32'`` or ``'bf16'`` (faster on CPUs with
        AMX, slightly lower quality; see docs/performance.md).
    factor : int
        Super-resolution factor (ignored by other tasks).
    kernel : str
        Super-resolution downsampling kernel, ``'lanczos2'`` or ``'bicubic'``.
    noise_model : str, optional
        Denoising: ``'auto'``, ``'gaussian'`` or ``'poisson-gaussian'`` (see
        :class:`~napari_dip.core.settings.Settings`); None keeps the settings' default.
    pixel_fusion : 'auto', bool or None
        Denoising with a masked fit: weigh each pixel's own noisy value back into the estimate (see
        :class:`~napari_dip.core.settings.Settings`); None keeps the settings' default ('auto').
    overrides : dict, optional
        Any other :class:`~napari_dip.core.settings.Settings` field (``lr``, ``ema``, ...), and the
        :class:`~napari_dip.core.restore.Restoration` memory options ``tile``, ``tile_overlap`` and
        ``max_memory`` (e.g. ``{"tile": 256}`` forces tiles of 256 pixels), for scripts.
    """

    iterations: int = 3000
    auto_stop: bool = True
    preset: str = "auto"
    device: str = "auto"
    seed: int = 0
    preview_every: int = 25
    warm_start: bool = False
    warm_patience: int = 0
    neighbour_planes: int | str = "auto"
    precision: str = "auto"
    factor: int = 4
    kernel: str = "lanczos2"
    noise_model: str | None = None
    pixel_fusion: str | bool | None = None
    overrides: dict[str, Any] | None = None

    def setting_overrides(self) -> dict[str, Any]:
        """:class:`~napari_dip.core.settings.Settings` fields to override: ``overrides`` (a copy) plus
        ``noise_model`` and ``pixel_fusion`` where chosen and the warm planes' patience and floor where ``warm_patience``
        is set with ``warm_start`` (an ``overrides`` entry of the same name wins)."""
        chosen: dict[str, Any] = {} if self.noise_model is None else {"noise_model": str(self.noise_model)}
        if self.pixel_fusion is not None:
            chosen["pixel_fusion"] = self.pixel_fusion
        if int(self.warm_patience) < 0:
            raise ValueError(f"warm_patience must be 0 (the preset's) or positive, got {self.warm_patience}")
        if self.warm_start and self.warm_patience:
            chosen.update(warm_stop_patience=int(self.warm_patience), warm_min_iterations=2 * int(self.warm_patience))
        return {**chosen, **(self.overrides or {})}


def build_restoration(task: str, inp: ImageInput, options: RunOptions, mask: np.ndarray | None = None,
                      settings: Any = None):
    """A ready-to-run :class:`~napari_dip.core.restore.Restoration` for ``inp``.

    With ``auto_stop``, ``iterations`` caps the automatic fit; otherwise it is the exact count.
    ``settings`` (a :class:`~napari_dip.core.settings.Settings`) replaces the preset ``options.preset``
    names (e.g. the JPEG network of blind restoration, which is not a core preset); the job's
    ``resolved_preset`` then records ``options.preset``.

    Raises
    ------
    ValueError, TypeError, RuntimeError
        For anything the core rejects (bad shapes or dtypes, empty mask, bad factor, a device
        this machine lacks), with the core's message.
    """
    from ..core.devices import resolve_device
    from ..core.restore import Restoration
    from ..core.settings import get_settings

    resolve_device(options.device)  # fail here, not in the worker, for a missing GPU
    overrides = options.setting_overrides()
    kwargs: dict[str, Any] = {key: overrides.pop(key) for key in _RESTORATION_KEYS if key in overrides}
    if options.auto_stop:
        kwargs["max_iterations"] = int(options.iterations)
        iterations: int | str = "auto"
    else:
        iterations = int(options.iterations)
    preset = options.preset if settings is None else settings
    get_settings(preset, task, device=resolve_device(options.device), **overrides)  # fail here, not in the worker
    if task == "inpaint":
        kwargs["mask"] = mask
    if task == "super_resolve":
        kwargs["factor"] = options.factor
        kwargs["kernel"] = options.kernel
    job = Restoration(task, inp.data, iterations=iterations, preset=preset, device=options.device,
                      seed=int(options.seed), rgb=inp.rgb, preview_every=int(options.preview_every),
                      warm_start=bool(options.warm_start), neighbour_planes=options.neighbour_planes,
                      precision=str(options.precision), **kwargs,
                      **overrides)
    if settings is not None:
        job.resolved_preset = options.preset
    return job


def empty_output(job) -> np.ndarray:
    """Zeros of the output's shape (float32): the live output layer's data before any preview."""
    return np.zeros(job.output.shape, dtype=np.float32)


def finished_output(job, cancelled: bool) -> tuple[np.ndarray, int]:
    """The output to keep after a run, and how many planes it holds.

    Finished planes, and the best estimate of the plane in progress (when cancelled or failed);
    planes never reached are 0 (they are NaN in the core's output).
    """
    out = job.result(cancelled=cancelled)  # leaves out a plane in progress with no estimate yet
    planes = int(np.count_nonzero(job.done))
    if cancelled and job.current is not None and job.current.has_estimate:
        planes += 1
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), planes
