"""Weights files: a network's starting point, saved by pre-training and loaded by fits.

A weights file is a ``torch.save`` of a plain dictionary (loaded with ``weights_only=True``, so
it cannot run code) holding the network's description next to its tensors:

``format``, ``version``
    ``'napari-dip-weights'`` and 1.
``network``, ``network_kwargs``, ``in_channels``, ``out_channels``, ``input_kind``
    What the tensors belong to; a fit refuses a file whose network differs from its settings and
    names the difference.
``state_dict``
    The tensors.
``meta``
    Free-form provenance: what it was trained on, steps, the command, the package version.

``Settings(weights='builtin')`` picks the weights shipped with the package for the image's
channel count (grayscale or RGB), reproducible with ``napari-dip pretrain --builtin-data``; a path
picks a file of your own (``napari-dip pretrain my_images/*.tif -o my-microscope.pt``).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Weights", "BUILTIN", "builtin_path", "load_weights", "resolve_weights", "save_weights",
           "WeightsError"]

FORMAT = "napari-dip-weights"
VERSION = 1
#: the name that selects the shipped weights
BUILTIN = "builtin"
_BUILTIN_FILES = {1: "masked-skip-gray.pt", 3: "masked-skip-rgb.pt"}
_DIR = Path(__file__).resolve().parent.parent / "weights"


class WeightsError(ValueError):
    """A weights file is missing, corrupt or does not match the network; the message names it."""


@dataclass(frozen=True)
class Weights:
    """The content of a weights file (see the module docstring)."""

    path: str
    network: str
    network_kwargs: dict[str, Any]
    in_channels: int
    out_channels: int
    input_kind: str
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    def check(self, network: str, network_kwargs: dict[str, Any], in_channels: int, out_channels: int,
              input_kind: str) -> None:
        """Raise :class:`WeightsError` naming the file and the first difference, if any."""
        wanted = {"network": network, "network_kwargs": _plain(network_kwargs), "in_channels": int(in_channels),
                  "out_channels": int(out_channels), "input_kind": input_kind}
        have = {"network": self.network, "network_kwargs": _plain(self.network_kwargs),
                "in_channels": self.in_channels, "out_channels": self.out_channels, "input_kind": self.input_kind}
        for key, value in wanted.items():
            if have[key] != value:
                raise WeightsError(f"weights file {self.path} does not match this fit: its {key} is {have[key]!r}, "
                                   f"the fit needs {value!r} (pre-train weights for these settings, or change them)")


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so settings and loaded files compare equal."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def builtin_path(channels: int) -> Path | None:
    """The shipped weights file for images with ``channels`` channels (None where there is none)."""
    name = _BUILTIN_FILES.get(int(channels))
    return None if name is None else _DIR / name


def resolve_weights(spec: str | os.PathLike | None, channels: int) -> Path | None:
    """The file that ``Settings.weights`` names for an image with ``channels`` channels.

    ``None`` -> None (random start); ``'builtin'`` -> the shipped file for the channel count, or
    None where the package ships none (e.g. 2-channel images: those start from random weights);
    anything else is a path, which must exist.

    Raises
    ------
    WeightsError
        For a path that does not exist or is not a file.
    """
    if spec is None:
        return None
    if isinstance(spec, str) and spec == BUILTIN:
        path = builtin_path(channels)
        return path if path is not None and path.is_file() else None
    path = Path(spec).expanduser()
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if not path.is_file():
        raise WeightsError(f"weights file {path} is not a file")
    return path


def load_weights(path: str | os.PathLike) -> Weights:
    """Read a weights file (``weights_only=True``: no code runs).

    Raises
    ------
    WeightsError
        If the file is missing, unreadable, not a napari-dip weights file, or from a newer version.
    """
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except OSError as err:
        if not p.exists():
            raise WeightsError(f"weights file {p} does not exist") from None
        raise WeightsError(f"weights file {p} cannot be read: {err.strerror or err}") from None
    return _load_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> Weights:
    del mtime_ns, size  # part of the cache key only: a rewritten file is read again
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a corrupt or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"weights file {path} is corrupt or not a napari-dip weights file ({first[:200]})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a napari-dip weights file (no '{FORMAT}' header)")
    if int(raw.get("version", 0)) > VERSION:
        raise WeightsError(f"weights file {path} has format version {raw.get('version')}; this napari-dip reads "
                           f"version {VERSION} and older: upgrade napari-dip")
    try:
        state = raw["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError("state_dict is not a dictionary of tensors")
        return Weights(path=path, network=str(raw["network"]), network_kwargs=dict(raw["network_kwargs"]),
                       in_channels=int(raw["in_channels"]), out_channels=int(raw["out_channels"]),
                       input_kind=str(raw["input_kind"]), state_dict=state, meta=dict(raw.get("meta") or {}))
    except (KeyError, TypeError, ValueError) as err:
        raise WeightsError(f"weights file {path} is incomplete or damaged ({err})") from None


def save_weights(path: str | os.PathLike, net: torch.nn.Module, *, network: str, network_kwargs: dict[str, Any],
                 in_channels: int, out_channels: int, input_kind: str, meta: dict[str, Any] | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``net``'s weights with their description; refuses to replace a file unless ``overwrite``.

    The file is written next to its destination and renamed into place, so an interrupted save
    never leaves half a file under the final name.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass overwrite=True (--overwrite) to replace it")
    if p.exists() and not p.is_file():
        raise IsADirectoryError(f"{p} is not a file")
    state = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}
    # plain JSON types only (e.g. torch.__version__ is a str subclass that weights_only loading refuses)
    meta = json.loads(json.dumps(dict(meta or {}), default=str))
    payload = {"format": FORMAT, "version": VERSION, "network": network, "network_kwargs": _plain(network_kwargs),
               "in_channels": int(in_channels), "out_channels": int(out_channels), "input_kind": input_kind,
               "state_dict": state, "meta": meta}
    tmp = p.with_name(f".{p.name}.partial")
    torch.save(payload, tmp)
    os.replace(tmp, p)
    return p
