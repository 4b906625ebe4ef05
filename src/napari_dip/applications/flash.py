"""Flash / no-flash reconstruction (paper, Sec. 4, after Petschnigg et al. 2004).

The no-flash photograph has the right colours and lighting but is noisy; the flash photograph is
sharp but lit differently. DIP fits the no-flash image with the denoising objective, but the
network's input is the *flash image* instead of random noise: ``min_θ ‖f_θ(x_flash) − x_noflash‖²``.
The network passes the flash image's edges and texture through easily, while the colours and
lighting come from the fitted target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.devices import resolve_device
from ..core.fit import Fitter, Snapshot, check_iterations
from ..core.settings import Settings
from ._common import PlaneJob, prepare_plane

__all__ = ["FLASH_SETTINGS", "FlashNoFlash", "flash_no_flash"]

#: Reference settings: the 128-channel 5-scale skip net with 4-channel skips and nearest
#: upsampling, lr 0.1, 601 iterations, no jitter and no averaging.
FLASH_SETTINGS = Settings(
    network="skip",
    network_kwargs=dict(channels_down=(128,) * 5, channels_up=(128,) * 5, channels_skip=(4,) * 5,
                        upsample="nearest", pad="reflection"),
    input_channels=3, input_kind="noise", lr=0.1, reg_noise_std=0.0, ema=0.0, iterations=601,
    stop_rule="none",
)


class FlashNoFlash(PlaneJob):
    """The flash/no-flash fit as a job: :meth:`~PlaneJob.steps` yields its snapshots, so a GUI can
    preview, cancel and report it like a restoration (:func:`flash_no_flash` runs it to the end).

    Parameters are those of :func:`flash_no_flash`, plus ``preview_every`` (export images into
    the snapshots every this many iterations) and ``precision`` (as for
    :class:`~napari_dip.core.fit.Fitter`). Everything is checked here; the network is built when
    :meth:`~PlaneJob.steps` starts.

    Raises
    ------
    ValueError
        For images that are not single 2D images, differ in height or width, or an ``'auto'``
        iteration count with a settings' ``stop_rule`` other than ``'none'``.
    """

    def __init__(self, flash, no_flash, *, iterations: int | str = 601, settings: Settings | None = None,
                 device: str = "auto", seed: int = 0, channel_axis: int | None = None, preview_every: int = 0,
                 precision: str = "auto", preset: str = "custom", **overrides):
        target = prepare_plane(no_flash, "no_flash image", channel_axis)
        code = prepare_plane(flash, "flash image", channel_axis)
        if target.layout.plane_shape != code.layout.plane_shape:
            raise ValueError(f"the flash image is {code.layout.plane_shape[0]}x{code.layout.plane_shape[1]}, "
                             f"the no-flash image {target.layout.plane_shape[0]}x{target.layout.plane_shape[1]}: "
                             "they must show the same, aligned scene")
        s = (settings or FLASH_SETTINGS).replace(input_channels=code.layout.channels, **overrides)
        if s.stop_rule != "none" and iterations == "auto":
            raise ValueError("flash/no-flash needs a fixed number of iterations")
        check_iterations(iterations)
        super().__init__(target.layout, iterations, s, preset)
        self.target, self.code = target, code
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.preview_every = int(preview_every)
        self.precision = precision

    def _new_fit(self) -> Fitter:
        # the flash image replaces the random code (padded like the output, so pixels line up)
        return Fitter(self.target.tensor, None, self.settings, iterations=self.iterations, device=self.device,
                      seed=self.seed, preview_every=self.preview_every, export=self.target.export_plane,
                      precision=self.precision, input=self.code.tensor)


def flash_no_flash(flash, no_flash, *, iterations: int = 601, settings: Settings | None = None,
                   device: str = "auto", seed: int = 0, channel_axis: int | None = None,
                   callback: Callable[[Snapshot], Any] | None = None, **overrides) -> np.ndarray:
    """Combine a flash and a no-flash photograph of the same scene into one image.

    Parameters
    ----------
    flash : array
        The flash image, ``(H, W)`` or ``(H, W, C)``; it becomes the network's input code.
    no_flash : array
        The no-flash image, same ``(H, W)`` and channels; it is the fitting target.
    iterations : int
        Fixed number of iterations (601 in the paper; the fit has no automatic stop).
    settings : Settings, optional
        Default :data:`FLASH_SETTINGS`; ``input_channels`` is set to the flash image's channels.
    device, seed, channel_axis
        As for :func:`napari_dip.denoise`.
    callback : callable, optional
        Called with every :class:`~napari_dip.core.fit.Snapshot` (images, when present, are
        ``(H, W, C)`` in the no-flash image's units).
    **overrides
        :class:`~napari_dip.core.settings.Settings` fields (``lr``, ``network_kwargs``, ``ema``, ...).

    Returns
    -------
    numpy.ndarray
        float32, the no-flash image's shape and intensity units.
    """
    return FlashNoFlash(flash, no_flash, iterations=iterations, settings=settings, device=device, seed=seed,
                        channel_axis=channel_axis, **overrides).run(callback)
