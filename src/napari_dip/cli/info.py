"""``napari-dip info``: the torch version, devices, presets and network sizes."""

from __future__ import annotations

import argparse

__all__ = ["register", "run_info"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``info`` (sets ``handler``)."""
    p = subparsers.add_parser("info", help="show devices, presets and network sizes")
    p.set_defaults(handler=run_info)


def run_info(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__
    from ..core.devices import available_devices, resolve_device
    from ..core.networks import build_network, count_parameters
    from ..core.settings import PRESETS

    print(f"napari-dip {__version__}, torch {torch.__version__}")
    print(f"devices: {', '.join(available_devices())} (auto -> {resolve_device('auto')})")
    for preset, tasks in PRESETS.items():
        for task, s in tasks.items():
            n = count_parameters(build_network(s.network, s.input_channels, 3, **s.network_kwargs))
            print(f"preset {preset:5s} {task:13s}: {s.network} net, {n:,} parameters (RGB), lr {s.lr}, "
                  f"jitter {s.reg_noise_std:.3g}, EMA {s.ema}, up to {s.iterations} iterations")
    return 0
