"""What every ``napari-dip`` subcommand shares: errors, the progress display, argument types,
the common options, and the checks made before any file is read or written.

Nothing here imports another module of :mod:`napari_dip.cli`, so the subcommand modules can all
import it without an import cycle.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..io import Calibration

__all__ = ["CLIError", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "PRESETS", "Progress", "add_common",
           "add_precision", "check_device", "check_output", "check_output_log", "check_writable",
           "default_channel_axis", "describe_output", "input_calibration", "parse_factor", "parse_iterations",
           "read_input", "warn", "weights_option", "write_output"]

EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 2, 1, 130

#: ``--preset`` choices of the restoration commands (the first is the default).
PRESETS = ("auto", "pretrained", "fast", "paper")


class CLIError(Exception):
    """A user error: printed as ``napari-dip: error: ...`` with exit status 2."""


def warn(message: str) -> None:
    """Print ``napari-dip: warning: message`` on stderr (also with ``--quiet``: it reports a loss)."""
    sys.stderr.write(f"napari-dip: warning: {message}\n")
    sys.stderr.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """Fit progress on stderr: iterations, the loss, and the slice for stacks.

    On a terminal it is one bar, redrawn in place (``\\r``) at most every ``every`` seconds. When
    the stream is not a terminal (a log file, a pipe, a batch system's output) it writes plain
    lines instead, one per update and at most one every ``every`` seconds, plus the last line of
    each slice, so that logs stay readable and small.

    Parameters
    ----------
    enabled : bool
        False writes nothing (``--quiet``).
    stream : text stream, optional
        Where to write (default: ``sys.stderr`` when created).
    every : float, optional
        Minimum seconds between updates; default 0.2 on a terminal and 10 in plain mode.
    plain : bool, optional
        Force plain lines (True) or the redrawn bar (False); default: plain unless ``stream`` is a
        terminal.
    clock : callable
        Returns the time in seconds (for tests).
    """

    WIDTH = 24

    def __init__(self, enabled: bool = True, stream: IO[str] | None = None, every: float | None = None,
                 plain: bool | None = None, clock: Callable[[], float] = time.perf_counter):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.plain = (not _is_terminal(self.stream)) if plain is None else bool(plain)
        self.every = (10.0 if self.plain else 0.2) if every is None else float(every)
        self.clock = clock
        self._start = clock()
        self._last = -math.inf

    def __call__(self, snap: Any) -> None:
        if not self.enabled:
            return
        now = self.clock()
        last_of_slice = bool(snap.stopped) or snap.iteration == snap.total
        if now - self._last < self.every and not last_of_slice:
            return
        self._last = now
        parts = []
        if snap.n_slices > 1:
            parts.append(f"slice {snap.slice_index + 1}/{snap.n_slices}")
        if snap.loss is not None:
            parts.append(f"loss {snap.loss:.3e}")
        if snap.stopped:
            parts.append(f"auto-stop (best {snap.best_iteration})")
        parts.append(f"{now - self._start:.0f}s")
        if self.plain:
            percent = 100 * snap.iteration // max(snap.total, 1)
            self.stream.write("  ".join([f"iteration {snap.iteration}/{snap.total} ({percent}%)", *parts]) + "\n")
        else:
            done = int(snap.iteration / max(snap.total, 1) * self.WIDTH)
            bar = "#" * done + "-" * (self.WIDTH - done)
            self.stream.write("\r" + "  ".join([f"[{bar}] {snap.iteration}/{snap.total}", *parts]) + " " * 4)
            if last_of_slice:
                self.stream.write("\n")
        self.stream.flush()


# -- argument types --------------------------------------------------------------------------------
def parse_iterations(value: str) -> int | str:
    """``--iterations``: a positive integer, or ``'auto'``."""
    from ..core.fit import check_iterations

    try:
        n = check_iterations(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return "auto" if n is None else n


def parse_factor(value: str) -> int:
    """``--factor``: an integer >= 2."""
    from ..core.restore import check_factor

    try:
        return check_factor(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# -- options ---------------------------------------------------------------------------------------
def add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto (default): fp32 (TF32 arithmetic on CUDA); bf16 on a CPU with AMX is 1.2-2.3x faster "
                        "per iteration at slightly lower quality (docs/performance.md)")


def add_common(p: argparse.ArgumentParser) -> None:
    """The options of ``denoise``, ``inpaint`` and ``super-resolve`` (and ``blind``, ``enhance``)."""
    p.add_argument("input", type=Path, help="input image (TIFF, PNG or JPEG); never modified")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (.tif keeps float32 values and the pixel size; .zarr: a resumable "
                        "OME-Zarr store written plane by plane)")
    p.add_argument("--iterations", type=parse_iterations, default="auto",
                   help="a positive number, or 'auto' for automatic stopping (default)")
    p.add_argument("--preset", choices=list(PRESETS), default=PRESETS[0],
                   help="network preset (default auto: 'paper' on a GPU; on a CPU 'pretrained' for denoise and "
                        "inpaint, 'fast' for super-resolve)")
    p.add_argument("--weights", default=None, metavar="FILE|builtin|none",
                   help="starting weights: a file from 'napari-dip pretrain', 'builtin' (the shipped ones) or "
                        "'none' (random); default: the preset's")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_precision(p)
    p.add_argument("--channel-axis", type=int, default=None,
                   help="axis holding channels; default: a last axis of 3 or 4 is RGB(A), otherwise grayscale")
    p.add_argument("--log", type=Path, default=None, help="write the loss/stop-signal curves as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask scheduler address (tcp://host:8786): fit the planes on that cluster's workers")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="with an OUT.zarr output: continue an interrupted run of the same job (default on)")


# -- checks ----------------------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an output that is an input, exists without ``--overwrite``, has an unknown format,
    or lies in a folder that does not exist."""
    from ..io import _OTHER_SUFFIXES, TIFF_SUFFIXES

    for src in inputs:
        if _same_file(output, src) or output.resolve() == src.resolve():
            raise CLIError(f"output {output} is the input file {src}: refusing to overwrite an input")
    check_writable("output", output, overwrite)
    if output.suffix.lower() not in TIFF_SUFFIXES + _OTHER_SUFFIXES:
        raise CLIError(f"output {output}: unsupported format {output.suffix!r}; use .tif, .tiff, .png or .jpg")
    if not output.parent.exists():
        raise CLIError(f"output folder {output.parent} does not exist")


def check_writable(what: str, path: Path, overwrite: bool) -> None:
    """Refuse a ``path`` that is a folder, or that exists without ``--overwrite``."""
    if path.exists() and path.is_dir():
        raise CLIError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise CLIError(f"{what} {path} exists; pass --overwrite to replace it")


def check_output_log(log: Path, others: list[Path], overwrite: bool) -> None:
    """Refuse a ``--log`` file that is one of ``others``, exists without ``--overwrite``, or whose
    folder does not exist."""
    for other in others:
        if log.resolve() == other.resolve():
            raise CLIError(f"log {log} is the same path as {other}")
    check_writable("log", log, overwrite)
    if not log.parent.exists():
        raise CLIError(f"log folder {log.parent} does not exist")


def weights_option(value: str | None) -> dict[str, Any]:
    """The ``weights`` setting override of ``--weights`` (empty: the preset's), checked before any
    file is written: a file must exist and be a napari-dip weights file."""
    if value is None:
        return {}
    if value.lower() == "none":
        return {"weights": None}
    if value == "builtin":
        return {"weights": value}
    from ..core.weights import WeightsError, load_weights, resolve_weights

    try:
        load_weights(resolve_weights(value, 1))
    except WeightsError as err:
        raise CLIError(str(err)) from None
    return {"weights": str(Path(value).expanduser())}


def check_device(device: str) -> None:
    """Refuse an unknown device, or one this machine lacks, before any file is read or written."""
    from ..core.devices import resolve_device

    try:
        resolve_device(device)
    except (ValueError, RuntimeError) as err:
        raise CLIError(str(err)) from None


# -- reading ---------------------------------------------------------------------------------------
def read_input(path: Path) -> np.ndarray:
    """Read an input image, turning unreadable files into :class:`CLIError`."""
    from ..io import ImageReadError, read_image

    try:
        return read_image(path)
    except ImageReadError as err:
        raise CLIError(str(err)) from None


def default_channel_axis(path: Path, image: np.ndarray, channel_axis: int | None) -> int | None:
    """PNG/JPEG/BMP files keep colours on their last axis: a 2-channel (grey + alpha) file is one
    2-channel image, not a stack of images 2 pixels wide (TIFFs keep the core's default)."""
    from ..io import TIFF_SUFFIXES

    if channel_axis is None and path.suffix.lower() not in TIFF_SUFFIXES and image.ndim == 3 \
            and image.shape[-1] == 2:
        return -1
    return channel_axis


# -- pixel sizes -----------------------------------------------------------------------------------
def input_calibration(path: Path) -> Calibration | None:
    """The pixel size, z step, frame interval and axes of an input file (None when it has none).

    Unreadable metadata is a warning, not an error: the pixels may still be fine.
    """
    from ..io import ImageReadError, read_calibration

    try:
        return read_calibration(path)
    except ImageReadError as err:
        warn(f"{err}; the output will have no pixel size")
        return None


def write_output(path: Path, image: np.ndarray, calibration: Calibration | None) -> None:
    """Write an output image with its calibration; warn when the format cannot keep the pixel size."""
    from ..io import TIFF_SUFFIXES, write_image

    if calibration is not None and calibration.spacing and path.suffix.lower() not in TIFF_SUFFIXES:
        warn(f"{path.suffix} files cannot store a pixel size: {path} loses the input's "
             f"({calibration.describe()}); write a .tif to keep it")
    write_image(path, image, calibration)


def describe_output(path: Path, image: Any, calibration: Calibration | None) -> str:
    """``'out.tif (64x64, float32, 0.0625 x 0.0625 micrometer per pixel)'`` for the closing message."""
    size = "x".join(map(str, image.shape))
    where = f", {calibration.describe()}" if calibration is not None and calibration.spacing else ""
    return f"{path} ({size}, float32{where})"
