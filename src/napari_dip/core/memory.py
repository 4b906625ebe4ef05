"""Memory estimates, so a fit that cannot fit is refused or tiled before it starts.

The estimate of one fit step is measured, not guessed: a forward pass of the actual network at a
small reference size records the bytes of every tensor autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``); activations scale with the number of pixels, so
that figure is scaled to the real size. Weights, gradients and Adam's two moments add four copies
of the parameters; transient buffers add a margin.
"""

from __future__ import annotations

import functools
import math
import os

import torch

from .networks import build_network
from .settings import Settings

__all__ = ["available_bytes", "estimate_fit_bytes", "format_bytes", "largest_fitting_side"]

_REFERENCE = 128  # pixels per side of the measuring pass
_TRANSIENT = 1.6  # forward/backward temporaries on top of the saved activations (measured: 1.3-1.5)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _settings_key(settings: Settings) -> tuple:
    return (settings.network, repr(sorted(settings.network_kwargs.items())), settings.input_channels,
            settings.input_kind == "masked")


@functools.lru_cache(maxsize=32)
def _per_pixel(key: tuple, channels: int) -> tuple[float, int]:
    """(bytes of saved activations per output pixel, parameter count) for a network."""
    name, kwargs_repr, in_channels, masked = key
    if masked:  # the image and its visibility map
        in_channels = channels + 1
    kwargs = dict(eval(kwargs_repr, {"__builtins__": {}}))  # our own repr of literals only
    with torch.random.fork_rng(devices=[]):
        net = build_network(name, in_channels, channels, **kwargs).train()
    m = net.size_multiple * max(1, net.min_cells)
    side = max(_REFERENCE, m)
    z = torch.rand(1, in_channels, *net.input_size(side, side))
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            ptr = t.untyped_storage().data_ptr()
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(z).sum()
    params = sum(p.numel() for p in net.parameters())
    return sum(seen.values()) / (side * side), params


def estimate_fit_bytes(settings: Settings, channels: int, height: int, width: int) -> int:
    """Estimated peak memory (bytes) of fitting a ``height x width`` output with ``settings``."""
    per_pixel, params = _per_pixel(_settings_key(settings), int(channels))
    activations = per_pixel * height * width * _TRANSIENT
    images = 12 * channels * height * width * 4  # target, weights, EMA, best, stop buffers...
    return int(activations + images + 4 * params * 4)


def available_bytes(device: torch.device) -> int:
    """Memory a fit may use on ``device`` now (free GPU memory, or available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
        except (AttributeError, RuntimeError):
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def largest_fitting_side(settings: Settings, channels: int, budget: int, multiple: int = 32) -> int:
    """Largest square side (a multiple of ``multiple``) whose :func:`estimate_fit_bytes` stays
    within ``budget`` bytes (0 if none does)."""
    per_pixel, params = _per_pixel(_settings_key(settings), int(channels))
    fixed = 4 * params * 4
    if budget <= fixed:
        return 0
    side = int(math.sqrt((budget - fixed) / (per_pixel * _TRANSIENT + 48 * channels))) // multiple * multiple
    while side > 0 and estimate_fit_bytes(settings, channels, side, side) > budget:
        side -= multiple
    while estimate_fit_bytes(settings, channels, side + multiple, side + multiple) <= budget:
        side += multiple
    return side
