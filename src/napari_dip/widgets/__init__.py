"""napari widgets of napari-dip (these import napari and Qt; ``import napari_dip`` does not)."""

from __future__ import annotations

from .applications import BlindRestoreWidget, EnhanceWidget, FlashNoFlashWidget, PreImageWidget
from .base import RestorationWidget
from .tasks import DenoiseWidget, InpaintWidget, SuperResolveWidget

__all__ = ["BlindRestoreWidget", "DenoiseWidget", "EnhanceWidget", "FlashNoFlashWidget", "InpaintWidget",
           "PreImageWidget", "RestorationWidget", "SuperResolveWidget"]
