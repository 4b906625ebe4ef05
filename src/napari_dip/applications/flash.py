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

from ..core.fit import Fitter, Snapshot, drain
from ..core.settings import Settings
from ._common import prepare_plane

__all__ = ["FLASH_SETTINGS", "flash_no_flash"]

#: Reference settings: the 128-channel 5-scale skip net with 4-channel skips and nearest
#: upsampling, lr 0.1, 601 iterations, no jitter and no averaging.
FLASH_SETTINGS = Settings(
    network="skip",
    network_kwargs=dict(channels_down=(128,) * 5, channels_up=(128,) * 5, channels_skip=(4,) * 5,
                        upsample="nearest", pad="reflection"),
    input_channels=3, input_kind="noise", lr=0.1, reg_noise_std=0.0, ema=0.0, iterations=601,
    stop_rule="none",
)


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
    device, seed, channel_axis, callback
        As for :func:`napari_dip.denoise`.
    **overrides
        :class:`~napari_dip.core.settings.Settings` fields (``lr``, ``network_kwargs``, ``ema``, ...).

    Returns
    -------
    numpy.ndarray
        float32, the no-flash image's shape and intensity units.
    """
    target = prepare_plane(no_flash, "no_flash image", channel_axis)
    code = prepare_plane(flash, "flash image", channel_axis)
    if target.layout.plane_shape != code.layout.plane_shape:
        raise ValueError(f"the flash image is {code.layout.plane_shape[0]}x{code.layout.plane_shape[1]}, "
                         f"the no-flash image {target.layout.plane_shape[0]}x{target.layout.plane_shape[1]}: "
                         "they must show the same, aligned scene")
    s = (settings or FLASH_SETTINGS).replace(input_channels=code.layout.channels, **overrides)
    if s.stop_rule != "none" and iterations == "auto":
        raise ValueError("flash/no-flash needs a fixed number of iterations")
    # the flash image replaces the random code (padded like the output, so pixels line up)
    fitter = Fitter(target.tensor, None, s, iterations=iterations, device=device, seed=seed,
                    export=target.export, input=code.tensor)
    return drain(fitter.steps(), callback).image
