"""Array layout and intensity handling, done once at the boundary.

napari and numpy hold images as ``(..., Y, X)`` or ``(..., Y, X, C)``; the core fits one
``(1, C, H, W)`` tensor at a time. :func:`infer_layout` decides which axes are the stack, the
plane and the channels; :class:`Layout` reshapes to and from a flat ``(S, H, W, C)`` stack.
:class:`Intensity` maps the input's own units to ``[0, 1]`` and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Layout", "Intensity", "infer_layout", "check_image", "check_mask", "get_plane", "put_plane"]

_SUPPORTED_KINDS = "uif"  # unsigned, signed, float


def check_image(image, *, allow_nonfinite: bool = False, name: str = "image") -> np.ndarray:
    """Return ``image`` as a numpy array after checking its dtype, size and values.

    Raises
    ------
    TypeError
        For dtypes other than integer or real floating point (bool, complex, object, strings).
    ValueError
        For arrays with fewer than 2 dimensions, empty arrays, or NaN/Inf values (unless allowed).
    """
    arr = np.asarray(image)
    if arr.dtype.kind not in _SUPPORTED_KINDS:
        raise TypeError(f"{name} has unsupported dtype {arr.dtype}; use an integer or real float array")
    if arr.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (Y, X), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind == "f" and not allow_nonfinite and not np.isfinite(arr).all():
        n = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {n} NaN or Inf values; replace them, or mark them as "
                         "pixels to fill in with inpainting")
    return arr


@dataclass(frozen=True)
class Layout:
    """Where the stack, plane and channel axes of an array are.

    Attributes
    ----------
    shape : tuple
        Shape of the original array.
    channel_axis : int or None
        Non-negative index of the channel axis in the original array, or None.
    rgb : bool
        Whether the channel axis is RGB(A) (colours are normalised jointly).
    """

    shape: tuple[int, ...]
    channel_axis: int | None
    rgb: bool

    @property
    def channels(self) -> int:
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def _no_channel_shape(self) -> tuple[int, ...]:
        if self.channel_axis is None:
            return self.shape
        return tuple(s for i, s in enumerate(self.shape) if i != self.channel_axis)

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one plane."""
        h, w = self._no_channel_shape[-2:]
        return h, w

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Shape of the leading (non-spatial, non-channel) axes: one fit per index."""
        return self._no_channel_shape[:-2]

    @property
    def n_slices(self) -> int:
        return int(np.prod(self.stack_shape, dtype=np.int64))

    def to_stack(self, arr: np.ndarray) -> np.ndarray:
        """``(original layout) -> (S, H, W, C)`` (a view where possible)."""
        if self.channel_axis is None:
            arr = arr[..., None]
        else:
            arr = np.moveaxis(arr, self.channel_axis, -1)
        return arr.reshape((self.n_slices, *self.plane_shape, self.channels))

    def from_stack(self, arr: np.ndarray) -> np.ndarray:
        """``(S, H', W', C) -> original layout`` with the plane size ``H' x W'`` of ``arr``."""
        h, w = arr.shape[1:3]
        arr = arr.reshape((*self.stack_shape, h, w, self.channels))
        if self.channel_axis is None:
            return arr[..., 0]
        return np.moveaxis(arr, -1, self.channel_axis)

    def spatial_mask_to_stack(self, mask: np.ndarray) -> np.ndarray:
        """Broadcast a mask of shape ``(H, W)`` or the full stack shape to ``(S, H, W)``.

        Raises
        ------
        ValueError
            If the mask has any other shape.
        """
        full = (*self.stack_shape, *self.plane_shape)
        if mask.shape == self.plane_shape:
            return np.broadcast_to(mask, (self.n_slices, *self.plane_shape))
        if mask.shape == full:
            return mask.reshape((self.n_slices, *self.plane_shape))
        raise ValueError(f"mask shape {mask.shape} fits neither one plane {self.plane_shape} nor the "
                         f"whole stack {full} of the image with shape {self.shape}")


def infer_layout(shape: tuple[int, ...], channel_axis: int | None = None, rgb: bool | None = None) -> Layout:
    """Decide the layout of an array of ``shape``.

    An ``(H, W, 3)`` or ``(H, W, 4)`` array (or a stack of them, last axis of size 3 or 4 with
    ``ndim >= 3``) is RGB(A), as napari guesses, unless ``rgb=False`` or ``channel_axis`` says
    otherwise. With neither given, a last axis of size 1 is a single channel (``(H, W, 1)`` is one
    grayscale image, not H images one pixel wide). ``channel_axis`` may be negative.

    Raises
    ------
    ValueError
        If ``channel_axis`` is out of range, leaves fewer than 2 spatial axes, or ``rgb=True``
        does not fit the last axis.
    """
    ndim = len(shape)
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel_axis {channel_axis} is out of range for an array with {ndim} dimensions")
        if ndim < 3:
            raise ValueError(f"channel_axis needs an array with at least 3 dimensions, got shape {shape}")
        channel_axis %= ndim
        if channel_axis >= ndim - 2 and channel_axis != ndim - 1:
            raise ValueError(f"channel_axis {channel_axis} would split the Y, X plane of shape {shape}; "
                             "use a leading axis or the last one")
        return Layout(tuple(shape), channel_axis, bool(rgb) and channel_axis == ndim - 1)
    if rgb is None and ndim >= 3 and shape[-1] == 1:
        return Layout(tuple(shape), ndim - 1, False)
    if rgb is None:
        rgb = ndim >= 3 and shape[-1] in (3, 4)
    if rgb:
        if ndim < 3 or shape[-1] not in (3, 4):
            raise ValueError(f"rgb=True needs a last axis of size 3 or 4, got shape {shape}")
        return Layout(tuple(shape), ndim - 1, True)
    return Layout(tuple(shape), None, False)


@dataclass(frozen=True)
class Intensity:
    """Affine map from the input's units to ``[0, 1]``: ``x01 = (x - low) / scale``.

    ``low`` and ``scale`` have one entry per channel (equal entries when normalised jointly).
    """

    low: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_stack(cls, stack: np.ndarray, per_channel: bool, known: np.ndarray | None = None) -> Intensity:
        """Fit the map to the finite (and known) values of a ``(S, H, W, C)`` stack.

        A constant image maps to 0.5, so the sigmoid output can reach it.
        """
        c = stack.shape[-1]
        valid = np.isfinite(stack)
        if known is not None:
            valid &= known[..., None]
        lows, highs = [], []
        groups = [np.s_[..., i] for i in range(c)] if per_channel else [np.s_[...]]
        for g in groups:
            vals = stack[g][valid[g]]
            if vals.size == 0:
                raise ValueError("the image has no known finite values to fit")
            lows.append(float(vals.min()))
            highs.append(float(vals.max()))
        low = np.array(lows if per_channel else lows * c, dtype=np.float64)
        high = np.array(highs if per_channel else highs * c, dtype=np.float64)
        scale = high - low
        flat = scale <= 0
        low = np.where(flat, low - 0.5, low)
        scale = np.where(flat, 1.0, scale)
        return cls(low, scale)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Input units -> ``[0, 1]`` (float32), channels last."""
        return ((x.astype(np.float64) - self.low) / self.scale).astype(np.float32)

    def restore(self, x01: np.ndarray) -> np.ndarray:
        """``[0, 1]`` -> input units (float32), channels last."""
        return (x01.astype(np.float64) * self.scale + self.low).astype(np.float32)


def check_mask(mask, name: str = "mask") -> np.ndarray:
    """Return a boolean array, True where pixels are to be filled in (nonzero entries).

    Raises
    ------
    TypeError
        For non-numeric masks.
    ValueError
        For masks with NaN values.
    """
    m = np.asarray(mask)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{name} has unsupported dtype {m.dtype}; use a boolean or integer label array")
    if m.dtype.kind == "f" and np.isnan(m).any():
        raise ValueError(f"{name} contains NaN values")
    return m != 0


def plane_index(layout: Layout, s: int) -> tuple:
    """Index into an array of ``layout`` (any plane size) selecting slice ``s``'s plane (+ channels)."""
    stack_idx = list(np.unravel_index(s, layout.stack_shape)) if layout.stack_shape else []
    idx: list = []
    ndim = len(layout.shape)
    for axis in range(ndim):
        if axis == layout.channel_axis or axis >= ndim - (3 if layout.channel_axis == ndim - 1 else 2):
            idx.append(slice(None))
        else:
            idx.append(int(stack_idx.pop(0)))
    return tuple(idx)


def put_plane(layout: Layout, arr: np.ndarray, s: int, plane: np.ndarray) -> None:
    """Write an ``(H, W, C)`` plane into slice ``s`` of ``arr`` (which has ``layout``'s axes)."""
    view = arr[plane_index(layout, s)]
    if layout.channel_axis is None:
        view[...] = plane[..., 0]
    elif layout.channel_axis < len(layout.shape) - 2:
        view[...] = np.moveaxis(plane, -1, 0)
    else:
        view[...] = plane


def get_plane(layout: Layout, arr: np.ndarray, s: int) -> np.ndarray:
    """Read slice ``s`` of ``arr`` as an ``(H, W, C)`` array (a view where possible)."""
    view = np.asarray(arr[plane_index(layout, s)])
    if layout.channel_axis is None:
        return view[..., None]
    if layout.channel_axis < len(layout.shape) - 2:
        return np.moveaxis(view, 0, -1)
    return view
