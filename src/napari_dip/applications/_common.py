"""Helpers shared by the applications: one 2D image in napari layout <-> one ``(1, C, H, W)`` tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.layout import Intensity, Layout, check_image, infer_layout

__all__ = ["Plane", "prepare_plane", "fixed_iterations"]


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
        plane = x[0].detach().float().permute(1, 2, 0).cpu().numpy()
        return self.layout.from_stack(self.intensity.restore(plane)[None]).astype(np.float32)


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
