"""Choosing the torch device: ``auto`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

__all__ = ["available_devices", "resolve_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Names usable with :func:`resolve_device` on this machine, ``'auto'`` first."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        names += ["cuda"] + ([f"cuda:{i}" for i in range(n)] if n > 1 else [])
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'`` into a usable device.

    Raises
    ------
    ValueError
        For a name torch does not know.
    RuntimeError
        For a known device that this machine does not have (e.g. CUDA without a GPU).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use one of {available_devices()}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was requested but torch finds no CUDA GPU "
                               f"(torch {torch.__version__}); use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} does not exist: this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not _mps_available():
        raise RuntimeError(f"device {device!r} was requested but Apple MPS is not available; use 'cpu' or 'auto'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use one of {available_devices()}")
    return dev
