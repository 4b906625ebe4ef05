"""The ``napari-dip`` command line (also ``python -m napari_dip``); uses the core only.

    napari-dip denoise IN -o OUT
    napari-dip inpaint IN --mask MASK -o OUT
    napari-dip super-resolve IN --factor 4 -o OUT
    napari-dip demo
    napari-dip info

Inputs are never modified; an existing output is refused without ``--overwrite``, and an output
that is one of the inputs is always refused. Ctrl-C writes the best result so far and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 2, 1, 130


class CLIError(Exception):
    """A user error: printed as ``napari-dip: error: ...`` with exit status 2."""


class Progress:
    """A one-line text progress bar on stderr (iterations, and slices for stacks)."""

    def __init__(self, enabled: bool = True, stream=None, every: float = 0.2):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.every = every
        self._last = 0.0
        self._start = time.perf_counter()

    def __call__(self, snap) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.every and not snap.stopped and snap.iteration != snap.total:
            return
        self._last = now
        width = 24
        frac = snap.iteration / max(snap.total, 1)
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        parts = [f"[{bar}] {snap.iteration}/{snap.total}"]
        if snap.n_slices > 1:
            parts.append(f"slice {snap.slice_index + 1}/{snap.n_slices}")
        if snap.loss is not None:
            parts.append(f"loss {snap.loss:.3e}")
        if snap.stopped:
            parts.append(f"auto-stop (best {snap.best_iteration})")
        parts.append(f"{now - self._start:.0f}s")
        self.stream.write("\r" + "  ".join(parts) + " " * 4)
        if snap.stopped or snap.iteration == snap.total:
            self.stream.write("\n")
        self.stream.flush()


def _iterations(value: str) -> int | str:
    from .core.fit import check_iterations

    try:
        n = check_iterations(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return "auto" if n is None else n


def _factor(value: str) -> int:
    from .core.restore import check_factor

    try:
        return check_factor(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto (default): bf16 on CUDA, fp32 elsewhere; bf16 on a CPU with AMX is 1.2-2.3x faster "
                        "per iteration at slightly lower quality (docs/performance.md)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="input image (TIFF, PNG or JPEG); never modified")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (.tif keeps float32 values; .zarr: a resumable store written plane by plane)")
    p.add_argument("--iterations", type=_iterations, default="auto",
                   help="a positive number, or 'auto' for automatic stopping (default)")
    p.add_argument("--preset", choices=["paper", "fast"], default="paper", help="network preset (default paper)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_precision(p)
    p.add_argument("--channel-axis", type=int, default=None,
                   help="axis holding channels; default: a last axis of 3 or 4 is RGB(A), otherwise grayscale")
    p.add_argument("--log", type=Path, default=None, help="write the loss/stop-signal curves as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask scheduler address (tcp://host:8786): fit the planes on that cluster's workers")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="with an OUT.zarr output: continue an interrupted run of the same job (default on)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-dip", description="Deep Image Prior image restoration.")
    parser.add_argument("--version", action="version", version=f"napari-dip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("denoise", help="denoise an image or stack")
    _add_common(p)
    p = sub.add_parser("inpaint", help="fill in masked pixels")
    _add_common(p)
    p.add_argument("--mask", type=Path, required=True,
                   help="mask image: nonzero = pixel to fill in; one plane, or the stack's shape")
    p = sub.add_parser("super-resolve", help="upscale by an integer factor")
    _add_common(p)
    p.add_argument("--factor", type=_factor, required=True, help="integer factor >= 2 (e.g. 2, 4, 8)")
    p.add_argument("--kernel", choices=["lanczos2", "bicubic"], default="lanczos2",
                   help="downsampling kernel of the forward model (default lanczos2, as in the paper)")

    p = sub.add_parser("demo", help="denoise a bundled synthetic fluorescence image and print the PSNR")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--iterations", type=_iterations, default="auto")
    p.add_argument("--preset", choices=["paper", "fast"], default="fast")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    _add_precision(p)
    p.add_argument("-o", "--output", type=Path, default=None, help="also save noisy/result as TIFF here")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")

    sub.add_parser("info", help="show devices, presets and network sizes")

    from .applications.cli import register as register_applications  # here: avoids an import cycle

    register_applications(sub)
    return parser


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    from .io import _OTHER_SUFFIXES, TIFF_SUFFIXES

    for src in inputs:
        if _same_file(output, src) or output.resolve() == src.resolve():
            raise CLIError(f"output {output} is the input file {src}: refusing to overwrite an input")
    _check_writable("output", output, overwrite)
    if output.suffix.lower() not in TIFF_SUFFIXES + _OTHER_SUFFIXES:
        raise CLIError(f"output {output}: unsupported format {output.suffix!r}; use .tif, .tiff, .png or .jpg")
    if not output.parent.exists():
        raise CLIError(f"output folder {output.parent} does not exist")


def _check_writable(what: str, path: Path, overwrite: bool) -> None:
    """Refuse a ``path`` that is a folder, or that exists without ``--overwrite``."""
    if path.exists() and path.is_dir():
        raise CLIError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise CLIError(f"{what} {path} exists; pass --overwrite to replace it")


def _check_device(device: str) -> None:
    """Refuse an unknown device, or one this machine lacks, before any file is read or written."""
    from .core.devices import resolve_device

    try:
        resolve_device(device)
    except (ValueError, RuntimeError) as err:
        raise CLIError(str(err)) from None


def _default_channel_axis(path: Path, image: np.ndarray, channel_axis: int | None) -> int | None:
    """PNG/JPEG/BMP files keep colours on their last axis: a 2-channel (grey + alpha) file is one
    2-channel image, not a stack of images 2 pixels wide (TIFFs keep the core's default)."""
    from .io import TIFF_SUFFIXES

    if channel_axis is None and path.suffix.lower() not in TIFF_SUFFIXES and image.ndim == 3 \
            and image.shape[-1] == 2:
        return -1
    return channel_axis


def _partial_result(job) -> np.ndarray:
    """The output so far after an interruption; NaN where nothing was fitted (also when the
    interruption came before the first iteration of a plane finished)."""
    try:
        return job.result(cancelled=True)
    except Exception as err:  # noqa: BLE001 - still write the finished planes
        sys.stderr.write(f"\nnapari-dip: warning: the plane in progress could not be recovered "
                         f"({type(err).__name__}: {err}); writing the finished planes only\n")
        return job.output.copy()


def _read(path: Path) -> np.ndarray:
    from .io import ImageReadError, read_image

    try:
        return read_image(path)
    except ImageReadError as err:
        raise CLIError(str(err)) from None


def _run_restoration(args: argparse.Namespace) -> int:
    from .core.restore import Restoration
    from .io import write_image

    task = {"denoise": "denoise", "inpaint": "inpaint", "super-resolve": "super_resolve"}[args.command]
    kwargs: dict[str, Any] = dict(iterations=args.iterations, preset=args.preset, device=args.device,
                                  seed=args.seed, channel_axis=args.channel_axis, precision=args.precision)
    if task == "super_resolve":
        kwargs.update(factor=args.factor, kernel=args.kernel)
    if args.output.suffix.lower() == ".zarr" or args.scheduler is not None:
        try:
            from .distributed.cli import run_cli
        except ImportError as err:
            raise CLIError(f"--scheduler and .zarr outputs need dask, distributed and zarr "
                           f"(pip install 'napari-dip[distributed]'): {err}") from None
        return run_cli(args, task, kwargs)
    inputs = [args.input] + ([args.mask] if task == "inpaint" else [])
    _check_output(args.output, inputs, args.overwrite)
    if args.log is not None:
        _check_output_log(args.log, inputs + [args.output], args.overwrite)
    _check_device(args.device)
    image = _read(args.input)
    kwargs["channel_axis"] = _default_channel_axis(args.input, image, args.channel_axis)
    if task == "inpaint":
        kwargs["mask"] = _read(args.mask)
    try:
        job = Restoration(task, image, **kwargs)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    progress = Progress(enabled=not args.quiet)
    status = 0
    start = time.perf_counter()
    try:
        result = job.run(progress)
    except (ValueError, TypeError) as err:  # e.g. a plane with nothing to fit
        raise CLIError(str(err)) from None
    except KeyboardInterrupt:
        result = _partial_result(job)
        sys.stderr.write("\ninterrupted: writing the best result so far (unfitted planes are NaN)\n")
        status = EXIT_INTERRUPTED
    seconds = time.perf_counter() - start
    write_image(args.output, result)
    if args.log is not None:
        log = {"command": args.command, "input": str(args.input), "output": str(args.output),
               "preset": args.preset, "device": str(args.device), "precision": job.precision, "seed": args.seed,
               "iterations": args.iterations, "seconds": round(seconds, 3), "interrupted": status != 0,
               "slices": job.history()}
        args.log.write_text(json.dumps(log, indent=1))
    if not args.quiet:
        print(f"wrote {args.output} ({'x'.join(map(str, result.shape))}, float32) in {seconds:.1f} s")
    return status


def _check_output_log(log: Path, others: list[Path], overwrite: bool) -> None:
    for other in others:
        if log.resolve() == other.resolve():
            raise CLIError(f"log {log} is the same path as {other}")
    _check_writable("log", log, overwrite)
    if not log.parent.exists():
        raise CLIError(f"log folder {log.parent} does not exist")


def _run_demo(args: argparse.Namespace) -> int:
    from .core.restore import Restoration
    from .samples import noisy_cells, psnr

    clean, noisy = noisy_cells(args.size, seed=args.seed)
    if args.output is not None:
        _check_output(args.output, [], args.overwrite)
    _check_device(args.device)
    job = Restoration("denoise", noisy, iterations=args.iterations, preset=args.preset, device=args.device,
                      seed=args.seed, precision=args.precision)
    start = time.perf_counter()
    result = job.run(Progress(enabled=not args.quiet))
    seconds = time.perf_counter() - start
    fit = job.fits[0]
    # compare in the clean image's units: map the camera counts back
    to_unit = lambda x: (np.asarray(x, np.float64) - 100) / (4095 * 0.8)  # noqa: E731
    p_in, p_out = psnr(to_unit(noisy), clean, 1.0), psnr(to_unit(result), clean, 1.0)
    print(f"demo: {args.size}x{args.size} synthetic fluorescence image, preset {args.preset}, "
          f"device {job.current.device if job.current else args.device}")
    print(f"noisy input PSNR {p_in:.2f} dB -> DIP result PSNR {p_out:.2f} dB "
          f"(+{p_out - p_in:.2f} dB), {fit.iterations} iterations "
          f"(estimate from iteration {fit.best_iteration}), {seconds:.1f} s")
    if args.output is not None:
        from .io import write_image

        write_image(args.output, np.stack([noisy.astype(np.float32), result]))
        print(f"wrote {args.output} (plane 0 noisy, plane 1 result)")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    import torch

    from .core.devices import available_devices, resolve_device
    from .core.networks import build_network, count_parameters
    from .core.settings import PRESETS

    print(f"napari-dip {__version__}, torch {torch.__version__}")
    print(f"devices: {', '.join(available_devices())} (auto -> {resolve_device('auto')})")
    for preset, tasks in PRESETS.items():
        for task, s in tasks.items():
            n = count_parameters(build_network(s.network, s.input_channels, 3, **s.network_kwargs))
            print(f"preset {preset:5s} {task:13s}: {s.network} net, {n:,} parameters (RGB), lr {s.lr}, "
                  f"jitter {s.reg_noise_std:.3g}, EMA {s.ema}, up to {s.iterations} iterations")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"demo": _run_demo, "info": _run_info}
    handler = getattr(args, "handler", None) or handlers.get(args.command, _run_restoration)
    try:
        return handler(args)
    except CLIError as err:
        parser.exit(EXIT_USAGE, f"napari-dip: error: {err}\n")
    except MemoryError as err:
        parser.exit(EXIT_ERROR, f"napari-dip: error: {err}\n")
    except RuntimeError as err:
        from .core.fit import _is_oom

        if not _is_oom(err):
            raise
        first = (str(err).splitlines() or [""])[0]
        parser.exit(EXIT_ERROR, f"napari-dip: error: out of memory ({first}); use '--preset fast', a smaller "
                                "image or crop, or another '--device'\n")
    except KeyboardInterrupt:
        parser.exit(EXIT_INTERRUPTED, "\ninterrupted\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
