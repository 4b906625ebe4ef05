"""The network input z: uniform noise (the paper's default) or a meshgrid."""

from __future__ import annotations

import torch

__all__ = ["make_input"]


def make_input(channels: int, height: int, width: int, kind: str = "noise", scale: float = 0.1,
               seed: int = 0) -> torch.Tensor:
    """A ``(1, channels, height, width)`` code on the CPU, reproducible from ``seed``.

    Parameters
    ----------
    kind : {'noise', 'meshgrid'}
        ``'noise'``: ``U(0, 1) * scale``. ``'meshgrid'``: two channels holding the x and y pixel
        coordinates in ``[0, 1]`` (``channels`` must be 2).
    """
    if kind == "noise":
        g = torch.Generator().manual_seed(int(seed))
        return torch.rand((1, channels, height, width), generator=g) * scale
    if kind == "meshgrid":
        if channels != 2:
            raise ValueError(f"a meshgrid input has 2 channels, got input_channels={channels}")
        ys = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
        xs = torch.linspace(0, 1, width).view(1, width).expand(height, width)
        return torch.stack([xs, ys])[None].contiguous()
    raise ValueError(f"unknown input kind {kind!r}; use 'noise' or 'meshgrid'")
