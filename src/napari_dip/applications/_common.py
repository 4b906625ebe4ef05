"""Helpers shared by the applications: one 2D image in napari layout <-> one ``(1, C, H, W)`` tensor,
and :class:`PlaneJob`, the run interface of a single-image fit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.fit import FitResult, Snapshot, drain
from ..core.layout import Intensity, Layout, check_image, get_plane, infer_layout, put_plane

__all__ = ["Plane", "PlaneJob", "prepare_plane", "fixed_iterations"]


@dataclass(frozen=True)
class Plane:
    """One 2D image (grayscale or RGB) ready for a fit.

    Attributes
    ----------
    array : ndarray
        The original array (never modified).
    layout : Layout
        Its layout (no stack axes).
    intensity : Intensity
        Map from the input's units to ``[0, 1]``.
    tensor : tensor
        ``(1, C, H, W)`` float32 in ``[0, 1]``.
    """

    array: np.ndarray
    layout: Layout
    intensity: Intensity
    tensor: torch.Tensor

    def export(self, x: torch.Tensor) -> np.ndarray:
        """``(1, C, H, W)`` tensor in ``[0, 1]`` -> float32 array in the input's units and layout."""
        return self.layout.from_stack(self.export_plane(x)[None])

    def export_plane(self, x: torch.Tensor) -> np.ndarray:
        """``(1, C, H, W)`` tensor in ``[0, 1]`` -> ``(H, W, C)`` float32 array in the input's units."""
        plane = x[0].detach().float().permute(1, 2, 0).cpu().numpy()
        return self.intensity.restore(plane).astype(np.float32)


def prepare_plane(image, name: str = "image", channel_axis: int | None = None,
                  intensity: Intensity | None = None) -> Plane:
    """Check a single 2D image (``(H, W)`` or ``(H, W, C)``) and normalise it to ``[0, 1]``.

    Parameters
    ----------
    image : array
        Grayscale ``(H, W)`` or ``(H, W, C)`` (RGB by default when C is 3 or 4), finite.
    name : str
        Used in error messages.
    channel_axis : int, optional
        Layout override, as in the core.
    intensity : Intensity, optional
        Use this map instead of fitting one to ``image`` (e.g. to share units between two images).

    Raises
    ------
    ValueError
        For stacks (more than one plane) and non-finite values.
    """
    arr = check_image(image, name=name)
    layout = infer_layout(arr.shape, channel_axis)
    if layout.n_slices != 1:
        raise ValueError(f"{name} must be a single 2D image ((H, W) or (H, W, C)), got shape {arr.shape}")
    stack = layout.to_stack(arr)
    if intensity is None:
        intensity = Intensity.from_stack(stack, per_channel=not layout.rgb and layout.channels > 1)
    plane = intensity.normalise(stack[0])
    tensor = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None]
    return Plane(arr, layout, intensity, tensor)


def fixed_iterations(iterations) -> int:
    """Validate a fixed iteration count (a positive integer; 'auto' is not accepted here)."""
    from ..core.fit import check_iterations

    n = check_iterations(iterations)
    if n is None:
        raise ValueError("this application needs a fixed number of iterations, not 'auto'")
    return n


class PlaneJob:
    """One fit of one 2D image, with the run interface of :class:`~napari_dip.core.restore.Restoration`.

    The widgets' driver (:func:`napari_dip.glue.driver.drive`) and scripts run a ``Restoration``
    through a few members: :meth:`steps` (a generator of snapshots), :attr:`current` (the fit in
    progress: a :class:`~napari_dip.core.fit.Fitter`, or an object with the same ``steps()``,
    ``result()``, ``has_estimate``, ``iteration``, ``best_iteration``, ``auto`` and ``best``),
    :attr:`done`, :attr:`fits`, :attr:`output`, :attr:`layout`, :meth:`regions`,
    :meth:`result` and :meth:`history`. A ``PlaneJob`` offers the same for applications whose fit
    is not a ``Restoration`` (a flash image as the network input, a pre-image's feature loss), so
    they run, preview, cancel and report exactly as the restorations do. Subclasses implement
    :meth:`_new_fit`; the loop itself stays the fit's own ``steps()`` generator.

    Parameters
    ----------
    layout : Layout
        Layout of the output (one plane: no stack axes).
    iterations : int
        Iterations of the fit (a fixed count).
    settings : Settings
        The fit's settings (their ``iterations`` is the cap the driver shows for automatic fits).
    preset : str
        The preset's name, recorded in :attr:`resolved_preset`.
    """

    factor = 1
    tile_side = None

    def __init__(self, layout: Layout, iterations: int | str, settings: Any, preset: str = "custom"):
        if layout.n_slices != 1:
            raise ValueError(f"a single image is needed, got an output of shape {layout.shape}")
        self.layout = layout
        self.iterations = iterations
        self.settings = settings
        self.preset = self.resolved_preset = preset
        self.output = np.full(layout.shape, np.nan, dtype=np.float32)
        self.done = np.zeros(1, dtype=bool)
        self.fits: list[FitResult | None] = [None]
        #: the fit in progress (None before and after it)
        self.current: Any = None
        #: the fit of the last run (in progress, finished or cancelled)
        self.last_fit: Any = None

    @property
    def n_slices(self) -> int:
        return 1

    def _new_fit(self) -> Any:
        """A new fit object (see the class docstring); called when :meth:`steps` starts."""
        raise NotImplementedError

    def regions(self) -> list[tuple[int, int, int, int]]:
        """One region: the whole image (no tiles)."""
        h, w = self.layout.plane_shape
        return [(0, h, 0, w)]

    def steps(self) -> Generator[Snapshot, None, np.ndarray]:
        """Run the fit, yielding its snapshots (images ``(H, W, C)``); returns :attr:`output`."""
        if self.done[0]:
            return self.output
        self.current = self.last_fit = self._new_fit()
        res: FitResult = yield from self.current.steps()
        put_plane(self.layout, self.output, 0, res.image)
        self.fits[0] = dataclasses.replace(res, image=None)
        self.done[0] = True
        self.current = None
        return self.output

    def result(self, cancelled: bool = False) -> np.ndarray:
        """The output so far (a copy): the finished image, or the fit in progress's best estimate,
        or NaN before the first iteration."""
        out = self.output.copy()
        fit = self.current
        if fit is not None and fit.has_estimate:
            put_plane(self.layout, out, 0, fit.result(cancelled).image)
        return out

    def run(self, callback: Callable[[Snapshot], Any] | None = None) -> np.ndarray:
        """Run the fit to its end (``callback`` gets every snapshot) and return :attr:`output`."""
        return drain(self.steps(), callback)

    def history(self) -> list[dict[str, Any] | None]:
        """The fit's curves and stop point (None before it ended), as ``Restoration.history()``."""
        return [None if f is None else f.history_json() for f in self.fits]

    def image(self) -> np.ndarray:
        """The output as an ``(H, W, C)`` array."""
        return get_plane(self.layout, self.output, 0)
