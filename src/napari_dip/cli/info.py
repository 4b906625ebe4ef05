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
    from ..core.settings import PRESETS, resolve_preset
    from ..core.weights import resolve_weights

    print(f"napari-dip {__version__}, torch {torch.__version__}")
    print(f"devices: {', '.join(available_devices())} (auto -> {resolve_device('auto')})")
    device = resolve_device("auto")
    for label, channels in (("grayscale", 1), ("RGB", 3)):
        print(f"preset auto -> {label}: " + ", ".join(f"{task}: {resolve_preset('auto', task, device, channels)}"
                                                     for task in ("denoise", "inpaint", "super_resolve"))
              + f" (on {device})")
    for preset, tasks in PRESETS.items():
        for task, s in tasks.items():
            masked = s.input_kind == "masked"
            n = count_parameters(build_network(s.network, 4 if masked else s.input_channels, 3, **s.network_kwargs))
            start = ""
            if s.weights is not None:
                files = [resolve_weights(s.weights, c) for c in (1, 3)]
                start = ", starts from " + (" / ".join(f.name for f in files if f is not None) or "random weights "
                                            "(no shipped weights found)")
            kind = "masked image" if masked else "random code"
            print(f"preset {preset:10s} {task:13s}: {s.network} net from a {kind}, {n:,} parameters (RGB), "
                  f"lr {s.lr}, EMA {s.ema}, up to {s.iterations} iterations{start}")
    return 0
