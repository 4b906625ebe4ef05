"""The Python API: ``denoise``, ``inpaint`` and ``super_resolve`` on numpy arrays."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .fit import Snapshot
from .restore import Restoration

__all__ = ["denoise", "inpaint", "super_resolve"]

_DOC_COMMON = """
    iterations : int or 'auto'
        A fixed number of iterations, or automatic stopping (``stop_rule``, default ``'auto'``) capped by
        the preset.
    preset : {'auto', 'pretrained', 'fast', 'paper'}
        ``'auto'`` (default): ``'paper'`` on a GPU, ``'pretrained'`` on a CPU for denoising and
        inpainting, ``'fast'`` on a CPU for super-resolution. ``paper``: the paper's
        2.2M-parameter skip net from a random code; ``fast``: a light net from a random code;
        ``pretrained``: a light net that sees the image with hidden pixels, started from the
        shipped pre-trained weights (docs/engine.md).
    device : str
        ``'auto'`` (CUDA, then MPS, then CPU), ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'``.
    seed : int
        Equal seeds give identical results on the CPU with the same torch version and thread count.
    channel_axis : int, optional
        Axis holding channels. By default an array whose last axis has 3 or 4 entries is RGB(A);
        any other array is grayscale (a stack over its leading axes).
    callback : callable, optional
        Called with each :class:`~napari_dip.core.fit.Snapshot` (not with ``scheduler``/``store``).
    scheduler : str or distributed.Client, optional
        Fit the planes as dask tasks on a cluster (``'tcp://host:8786'``); needs
        ``napari-dip[distributed]``. See :func:`napari_dip.distributed.restore_stack`.
    store : str or path, optional
        Write the output plane by plane into this ``.zarr`` store (resumable: running the same job
        again skips finished planes) and return it as a zarr array instead of a numpy array.
    **options
        ``preview_every``, ``precision``, ``warm_start``, ``rgb`` and any
        :class:`~napari_dip.core.settings.Settings` field (``lr``, ``reg_noise_std``, ``ema``, ...).

    Returns
    -------
    numpy.ndarray
        float32, in the input's intensity units{shape}.
"""


def _run(task: str, image, callback, *, scheduler=None, store=None, **kwargs):
    if scheduler is not None or store is not None:
        from ..distributed import restore_stack  # dask is only imported here, never by the core

        if callback is not None:
            raise ValueError("callback (per-iteration snapshots) is not available with scheduler= or store=; "
                             "use napari_dip.distributed.restore_stack(..., on_plane_done=...) to follow planes")
        return restore_stack(task, image, store=store, scheduler=scheduler, **kwargs)
    return Restoration(task, image, **kwargs).run(callback)


def denoise(image, *, iterations: int | str = "auto", preset: str = "auto", device: str = "auto",
            seed: int = 0, channel_axis: int | None = None,
            callback: Callable[[Snapshot], Any] | None = None, **options) -> np.ndarray:
    return _run("denoise", image, callback, iterations=iterations, preset=preset, device=device, seed=seed,
                channel_axis=channel_axis, **options)


def inpaint(image, mask, *, iterations: int | str = "auto", preset: str = "auto", device: str = "auto",
            seed: int = 0, channel_axis: int | None = None,
            callback: Callable[[Snapshot], Any] | None = None, **options) -> np.ndarray:
    return _run("inpaint", image, callback, mask=mask, iterations=iterations, preset=preset, device=device,
                seed=seed, channel_axis=channel_axis, **options)


def super_resolve(image, factor: int, *, iterations: int | str = "auto", preset: str = "auto",
                  device: str = "auto", seed: int = 0, channel_axis: int | None = None,
                  callback: Callable[[Snapshot], Any] | None = None, **options) -> np.ndarray:
    return _run("super_resolve", image, callback, factor=factor, iterations=iterations, preset=preset,
                device=device, seed=seed, channel_axis=channel_axis, **options)


denoise.__doc__ = """Denoise an image or a stack (one fit per 2D plane) with Deep Image Prior.

    A masked fit's estimate (the ``pretrained`` preset, ``'auto'`` on a CPU) is then combined with
    each pixel's own noisy value, weighted by the noise measured in the image (``pixel_fusion``:
    ``'auto'`` by default, True or False; :mod:`napari_dip.core.fusion`); the noise model of the fit
    itself is ``noise_model`` (``'gaussian'`` by default, ``'poisson-gaussian'`` or ``'auto'``).

    Parameters
    ----------
    image : array
        ``(..., Y, X)`` or ``(..., Y, X, C)``, integer or float, finite. Never modified.
""" + _DOC_COMMON.replace("{shape}", ", same shape as ``image``")

inpaint.__doc__ = """Fill in the masked pixels of an image or a stack with Deep Image Prior.

    Parameters
    ----------
    image : array
        ``(..., Y, X)`` or ``(..., Y, X, C)``. Pixels under the mask may be NaN.
    mask : array
        Nonzero = pixel to fill in. Shape ``(Y, X)`` (applied to every plane) or the image's shape
        without its channel axis (plane by plane). Known pixels are returned unchanged.
""" + _DOC_COMMON.replace("{shape}", ", same shape as ``image``")

super_resolve.__doc__ = """Upscale an image or a stack by an integer ``factor`` with Deep Image Prior.

    The network's output, downsampled by a Lanczos-2 kernel (``kernel='bicubic'`` as an option),
    is fitted to the input, as in the paper.

    Parameters
    ----------
    image : array
        ``(..., Y, X)`` or ``(..., Y, X, C)``.
    factor : int
        Integer factor >= 2 (2, 4 and 8 in the paper).
""" + _DOC_COMMON.replace("{shape}", ", with Y and X ``factor`` times larger")
