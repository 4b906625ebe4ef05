"""Reading napari layers into arrays for the core, and placing the results back as new layers.

Layers are duck-typed (anything with the attributes of a napari ``Image`` or ``Labels`` layer),
so this module imports neither napari nor Qt. Data are always copied: a fit runs in a thread
while the user may keep editing (e.g. painting the mask), and the input layer must never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "TASK_WORDS",
    "ImageInput",
    "read_image_layer",
    "read_mask_layer",
    "output_name",
    "output_layer_kwargs",
    "super_resolved_placement",
]

#: How each task names its output layer (``"<input> <word>"``).
TASK_WORDS = {"denoise": "denoised", "inpaint": "inpainted", "super_resolve": "super-resolved"}


@dataclass
class ImageInput:
    """An Image layer's pixels and placement, copied out of the layer.

    Attributes
    ----------
    name : str
        The layer's name.
    data : ndarray
        A private copy of the pixels, ``(..., Y, X)`` or ``(..., Y, X, C)`` for RGB(A).
    rgb : bool
        Whether the last axis holds RGB(A) colours.
    scale, translate : tuple of float
        Per displayed axis (the colour axis excluded), as on the layer.
    placement : dict
        Other layer attributes copied to the output: ``units``, ``axis_labels``, ``rotate``,
        ``shear``, ``affine`` (only those the layer has).
    display : dict
        Display settings copied to the output: ``contrast_limits``, ``colormap``, ``gamma``.
    """

    name: str
    data: np.ndarray
    rgb: bool
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    placement: dict[str, Any] = field(default_factory=dict)
    display: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """Number of displayed axes (the colour axis of RGB images excluded)."""
        return len(self.scale)


def _layer_array(layer: Any, what: str) -> np.ndarray:
    if getattr(layer, "multiscale", False):
        raise ValueError(f"{what} layer {layer.name!r} is multiscale (a pyramid); Deep Image Prior fits "
                         "every pixel, so use a single-resolution layer (e.g. a crop of level 0)")
    return np.array(layer.data, copy=True)  # materialises dask/zarr data; never a view of the layer


def read_image_layer(layer: Any, copy: bool = True) -> ImageInput:
    """Copy an Image layer's data and placement.

    Parameters
    ----------
    layer : napari.layers.Image or None
    copy : bool
        Copy the pixels into a numpy array (default). False keeps the layer's own array (numpy,
        dask or zarr, possibly lazy) in :attr:`ImageInput.data`, for readers that read it plane by
        plane and never write (stack jobs).

    Raises
    ------
    ValueError
        If no layer is given, or it is multiscale or not an image.
    """
    if layer is None:
        raise ValueError("no image layer selected: open an image (or File > Open Sample > Deep Image Prior) "
                         "and choose it in the 'image' box")
    if not hasattr(layer, "rgb") or not hasattr(layer, "contrast_limits"):
        raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not an Image layer")
    if copy:
        data = _layer_array(layer, "image")
    elif getattr(layer, "multiscale", False):
        data = _layer_array(layer, "image")  # raises: multiscale layers are not supported
    else:
        data = layer.data
    placement: dict[str, Any] = {}
    for key in ("units", "axis_labels", "rotate", "shear", "affine"):
        if hasattr(layer, key):
            value = getattr(layer, key)
            placement[key] = value.affine_matrix.copy() if key == "affine" else (
                np.array(value, copy=True) if isinstance(value, np.ndarray) else value)
    display: dict[str, Any] = {"contrast_limits": [float(v) for v in layer.contrast_limits],
                               "gamma": float(getattr(layer, "gamma", 1.0))}
    if not layer.rgb:
        display["colormap"] = layer.colormap
    return ImageInput(name=str(layer.name), data=data, rgb=bool(layer.rgb),
                      scale=tuple(float(s) for s in layer.scale),
                      translate=tuple(float(t) for t in layer.translate),
                      placement=placement, display=display)


def read_mask_layer(layer: Any) -> np.ndarray:
    """Copy a Labels layer's data as the inpainting mask (nonzero = pixel to fill in).

    Raises
    ------
    ValueError
        If no layer is given, or it is multiscale.
    """
    if layer is None:
        raise ValueError("no mask selected: add a Labels layer (Layers > New Labels layer), paint the "
                         "pixels to fill in, and choose it in the 'mask' box")
    return _layer_array(layer, "mask")


def output_name(name: str, task: str, factor: int = 1) -> str:
    """``"<name> denoised"``, ``"<name> inpainted"`` or ``"<name> x4 super-resolved"``."""
    if task not in TASK_WORDS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASK_WORDS)}")
    if task == "super_resolve":
        return f"{name} x{int(factor)} {TASK_WORDS[task]}"
    return f"{name} {TASK_WORDS[task]}"


def super_resolved_placement(scale, translate, factor: int, rotate=None, shear=None
                             ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of an image whose last two axes were upsampled by ``factor``.

    The Y and X scales are divided by ``factor``, and the translate moves so that the new pixels
    tile the old ones: input pixel ``i`` spans ``[i - 1/2, i + 1/2]`` (in pixels), and output
    pixel ``j`` has its centre at ``(j + 1/2) / factor - 1/2`` input pixels. The shift goes
    through the layer's rotation and shear, so rotated layers stay aligned too.

    Parameters
    ----------
    scale, translate : sequence of float
        Per displayed axis; Y and X are the last two.
    factor : int
    rotate, shear : array, optional
        The layer's rotation matrix and shear (as napari stores them).
    """
    scale = np.asarray(scale, dtype=np.float64)
    translate = np.asarray(translate, dtype=np.float64)
    n = scale.size
    delta = np.zeros(n)
    delta[-2:] = 0.5 / factor - 0.5  # in input pixels
    linear = np.eye(n)
    if rotate is not None or shear is not None:
        from napari.utils.transforms import Affine  # only when the layer is rotated or sheared

        linear = Affine(scale=np.ones(n), translate=np.zeros(n), rotate=rotate, shear=shear).linear_matrix
    new_translate = translate + linear @ (scale * delta)
    new_scale = scale.copy()
    new_scale[-2:] /= factor
    return tuple(float(s) for s in new_scale), tuple(float(t) for t in new_translate)


def _is_identity(matrix: Any, n: int) -> bool:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 1:  # napari's upper-triangular shear values
        return bool(np.allclose(m, 0))
    return m.shape == (n, n) and bool(np.allclose(m, np.eye(n)))


def output_layer_kwargs(inp: ImageInput, task: str, factor: int = 1) -> dict[str, Any]:
    """Keyword arguments for ``viewer.add_image`` that place the output over its input.

    Same units, axis labels, rotation, shear, affine, contrast limits and colormap as the input;
    super-resolution divides the Y and X scales by ``factor`` and shifts the translate so that
    pixel centres line up (see :func:`super_resolved_placement`).
    """
    kwargs: dict[str, Any] = {"name": output_name(inp.name, task, factor), "rgb": inp.rgb}
    scale, translate = inp.scale, inp.translate
    if task == "super_resolve":
        rotate, shear = inp.placement.get("rotate"), inp.placement.get("shear")
        n = inp.ndim
        rotate = None if rotate is None or _is_identity(rotate, n) else rotate
        shear = None if shear is None or _is_identity(shear, n) else shear
        scale, translate = super_resolved_placement(scale, translate, factor, rotate, shear)
    kwargs["scale"] = scale
    kwargs["translate"] = translate
    kwargs.update(inp.placement)
    kwargs.update(inp.display)
    return kwargs
