"""napari widgets of napari-dip (these import napari and Qt; ``import napari_dip`` does not)."""

from __future__ import annotations

from .base import RestorationWidget
from .tasks import DenoiseWidget, InpaintWidget, SuperResolveWidget

__all__ = ["DenoiseWidget", "InpaintWidget", "RestorationWidget", "SuperResolveWidget"]
