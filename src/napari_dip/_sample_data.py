"""npe2 sample data: synthetic fluorescence-like cells, made with numpy at run time (no download).

Each function returns a list of napari ``LayerData`` tuples ``(data, kwargs, layer_type)``.
"""

from __future__ import annotations

from typing import Any

from .samples import cells_stack, noisy_cells

__all__ = ["noisy_cells_sample", "damaged_stack_sample"]

LayerData = tuple[Any, dict[str, Any], str]


def noisy_cells_sample() -> list[LayerData]:
    """A noisy 256x256 uint16 camera image of cells (Poisson + read noise), to denoise."""
    _clean, noisy = noisy_cells(256, photons=30.0, read_noise=0.03, seed=0)
    return [(noisy, {"name": "noisy cells", "colormap": "gray"}, "image")]


def damaged_stack_sample() -> list[LayerData]:
    """A 5-plane 96x96 stack of cells with scratches and holes, and the Labels mask to inpaint."""
    _clean, damaged, mask = cells_stack(planes=5, size=96, seed=0)
    return [
        (damaged, {"name": "damaged stack", "colormap": "gray"}, "image"),
        (mask, {"name": "damage mask", "opacity": 0.5}, "labels"),
    ]
