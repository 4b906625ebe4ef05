"""The Deep Image Prior engine: torch and numpy only (no napari, no Qt)."""

from .api import denoise, inpaint, super_resolve
from .devices import available_devices, resolve_device
from .fit import DIPMemoryError, FitResult, Fitter, Snapshot, fit
from .networks import NETWORKS, build_network, count_parameters
from .operators import Downsampler, Identity, Mask
from .restore import Restoration
from .settings import PRESETS, Settings, get_settings

__all__ = [
    "DIPMemoryError", "Downsampler", "FitResult", "Fitter", "Identity", "Mask", "NETWORKS", "PRESETS",
    "Restoration", "Settings", "Snapshot", "available_devices", "build_network", "count_parameters",
    "denoise", "fit", "get_settings", "inpaint", "resolve_device", "super_resolve",
]
