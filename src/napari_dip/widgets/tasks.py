"""The three napari widgets: denoising, inpainting and super-resolution.

Each is a :class:`~napari_dip.widgets.base.RestorationWidget` with its task's own controls.
"""

from __future__ import annotations

from typing import Any

import napari
import napari.viewer
import numpy as np
from magicgui.widgets import ComboBox, SpinBox, Widget

from ..glue import read_mask_layer
from .base import RestorationWidget

__all__ = ["DenoiseWidget", "InpaintWidget", "SuperResolveWidget"]


class DenoiseWidget(RestorationWidget):
    """Denoise an Image layer (2D, RGB, or a stack fitted plane by plane) into a new layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    task = "denoise"
    title = "Denoising"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)

    def _advanced_task_controls(self) -> list[Widget]:
        from ..core.noise import NOISE_MODELS
        from ..core.settings import Settings

        self.noise_model = ComboBox(
            name="noise_model", label="noise model", choices=list(NOISE_MODELS),
            value=Settings.noise_model,
            tooltip="'poisson-gaussian': shot noise whose variance grows with the signal (fluorescence); the "
                    "camera's gain and read noise are estimated from the image and fitted in a "
                    "variance-stabilised domain. 'auto': measure the image and choose. 'gaussian': one noise "
                    "level for the whole image")
        self.neighbour_planes = ComboBox(
            name="neighbour_planes", label="neighbour planes", value="auto",
            choices=[("auto", "auto"), ("0: each plane alone", 0), *((str(k), k) for k in range(1, 5))],
            tooltip="Stacks: the network also sees this many planes on each side of the plane it fits (their "
                    "noise is independent, their structure alike). 'auto': 1 with the 'pretrained' fit ('auto' "
                    "on a CPU), else 0. On a 32-plane confocal stack 1 gave +1.7 dB for the same time, on the "
                    "FMD frame series (real noise) +0.3 to +1.2 dB; with warm start and a patience of 10, "
                    "+1.0 dB in 5x fewer iterations. Other numbers need the 'pretrained' fit")
        self.pixel_fusion = ComboBox(
            name="pixel_fusion", label="pixel fusion", value="auto",
            choices=[("auto", "auto"), ("on", True), ("off", False)],
            tooltip="The 'pretrained' fit ('auto' on a CPU) predicts each pixel from the others, never from its "
                    "own noisy value. Pixel fusion weighs that value back in, by the measured noise against the "
                    "prediction's local error: on the FMD confocal frames +0.3 to +0.9 dB at no fitting cost. "
                    "'auto': where the noise is independent from pixel to pixel (not on correlated noise, e.g. "
                    "wide-field cameras). 'on' needs the 'pretrained' fit")
        self._stack_only.append(self.neighbour_planes)
        return [self.noise_model, self.pixel_fusion, self.neighbour_planes]

    def _task_options(self) -> dict[str, Any]:
        stack = self.image.value is not None and self._layer_planes(self.image.value) > 1
        return {"noise_model": str(self.noise_model.value), "pixel_fusion": self.pixel_fusion.value,
                "neighbour_planes": self.neighbour_planes.value if stack else 0}


class InpaintWidget(RestorationWidget):
    """Fill in the pixels painted in a Labels layer (any nonzero label) of an Image layer.

    The mask is ``(Y, X)`` (the same pixels in every plane) or has the image's shape without its
    colour axis (plane by plane). Known pixels are kept exactly.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    task = "inpaint"
    title = "Inpainting"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)

    def _task_controls(self) -> list[Widget]:
        self.mask = ComboBox(name="mask", label="mask", choices=self._mask_choices, nullable=True,
                             tooltip="Labels layer: nonzero pixels are filled in. (Y, X), or the image's "
                                     "shape for a per-plane mask")
        return [self.mask]

    def _layer_pickers(self) -> list[tuple[ComboBox, type]]:
        return [*super()._layer_pickers(), (self.mask, napari.layers.Labels)]

    def _mask_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return self._layers_of(napari.layers.Labels)

    def _read_mask(self) -> np.ndarray | None:
        return read_mask_layer(self.mask.value)


class SuperResolveWidget(RestorationWidget):
    """Upsample an Image layer by an integer factor; the output keeps the input's extent in world
    coordinates (its Y and X scales are divided by the factor).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    task = "super_resolve"
    title = "Super-resolution"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)

    def _task_controls(self) -> list[Widget]:
        self.factor = SpinBox(name="factor", label="factor", value=4, min=2, max=16,
                              tooltip="Upsampling factor of Y and X")
        return [self.factor]

    def _advanced_task_controls(self) -> list[Widget]:
        self.kernel = ComboBox(name="kernel", label="kernel", choices=["lanczos2", "bicubic"], value="lanczos2",
                               tooltip="How the camera is assumed to downsample: the kernel of the model "
                                       "that maps the estimate to the input")
        return [self.kernel]

    def _task_options(self) -> dict[str, Any]:
        return {"factor": int(self.factor.value), "kernel": str(self.kernel.value)}
