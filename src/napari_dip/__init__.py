"""napari-dip: Deep Image Prior restoration for napari, Python and the command line.

``import napari_dip`` is light: torch loads on first use of the API, napari and Qt never load
unless the widgets are opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
_APPLICATIONS = ("restore_blind", "enhance", "flash_no_flash", "pre_image", "activation_maximisation",
                 "architecture_study")
__all__ = ["__version__", "denoise", "inpaint", "super_resolve", "Restoration", *_APPLICATIONS]

if TYPE_CHECKING:  # pragma: no cover
    from .core.api import denoise, inpaint, super_resolve
    from .core.restore import Restoration


def __getattr__(name: str):
    if name in ("denoise", "inpaint", "super_resolve"):
        from .core import api

        return getattr(api, name)
    if name == "Restoration":
        from .core.restore import Restoration

        return Restoration
    if name in _APPLICATIONS:
        from . import applications

        return getattr(applications, name)
    raise AttributeError(f"module 'napari_dip' has no attribute {name!r}")
