"""``napari-dip denoise``, ``inpaint``, ``super-resolve`` and ``demo``.

    napari-dip denoise IN -o OUT
    napari-dip inpaint IN --mask MASK -o OUT
    napari-dip super-resolve IN --factor 4 -o OUT
    napari-dip demo

A ``.tif`` output keeps the input's pixel size, z step, frame interval and axes (ImageJ or
OME-TIFF, as the input), the pixel size divided by the factor after super-resolution. A ``.zarr``
output (or ``--scheduler``) goes through :mod:`napari_dip.cli.distributed`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    EXIT_INTERRUPTED,
    PRESETS,
    CLIError,
    Progress,
    add_common,
    add_precision,
    check_device,
    check_output,
    check_output_log,
    default_channel_axis,
    describe_output,
    input_calibration,
    parse_factor,
    parse_iterations,
    read_input,
    weights_option,
    write_output,
)

__all__ = ["TASKS", "register", "run_demo", "run_restoration"]

#: Subcommand -> core task.
TASKS = {"denoise": "denoise", "inpaint": "inpaint", "super-resolve": "super_resolve"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``denoise``, ``inpaint``, ``super-resolve`` and ``demo`` (each sets ``handler``)."""
    p = subparsers.add_parser("denoise", help="denoise an image or stack")
    add_common(p)
    _add_warm(p)
    p.add_argument("--noise-model", choices=["gaussian", "poisson-gaussian", "auto"], default=None,
                   help="gaussian (default: one noise level), poisson-gaussian (shot + read noise: fit in the "
                        "variance-stabilised domain, parameters estimated from each plane unless given) or "
                        "auto (measure each plane and choose)")
    p.add_argument("--noise-gain", type=float, default=None, metavar="A",
                   help="the camera's gain (intensity units per photon; > 0), with --noise-read-variance")
    p.add_argument("--noise-read-variance", type=float, default=None, metavar="B",
                   help="the read noise's variance in intensity units squared (>= 0)")
    p.add_argument("--noise-offset", type=float, default=None, metavar="C",
                   help="the camera's offset (the intensity of zero photons; default 0)")
    p.add_argument("--pixel-fusion", choices=["auto", "on", "off"], default=None,
                   help="masked fits (preset auto on a CPU, pretrained): weigh each pixel's own noisy value back "
                        "into the estimate, by the measured noise against the estimate's local error; default "
                        "auto: where the noise is independent from pixel to pixel")
    p.add_argument("--neighbour-planes", type=_whole_number(0, "auto"), default="auto", metavar="K",
                   help="stacks, masked fits (preset auto on a CPU, pretrained): let the network also see K planes "
                        "on each side of the one it fits (their noise is independent, their structure alike); "
                        "0: each plane alone; default auto: 1 where it applies (not with a .zarr output or "
                        "--scheduler, which fit planes independently), else 0")
    p.set_defaults(handler=run_restoration)
    p = subparsers.add_parser("inpaint", help="fill in masked pixels")
    add_common(p)
    _add_warm(p)
    p.add_argument("--mask", type=Path, required=True,
                   help="mask image: nonzero = pixel to fill in; one plane, or the stack's shape")
    p.set_defaults(handler=run_restoration)
    p = subparsers.add_parser("super-resolve", help="upscale by an integer factor")
    add_common(p)
    _add_warm(p)
    p.add_argument("--factor", type=parse_factor, required=True, help="integer factor >= 2 (e.g. 2, 4, 8)")
    p.add_argument("--kernel", choices=["lanczos2", "bicubic"], default="lanczos2",
                   help="downsampling kernel of the forward model (default lanczos2, as in the paper)")
    p.set_defaults(handler=run_restoration)

    p = subparsers.add_parser("demo", help="denoise a bundled synthetic fluorescence image and print the PSNR")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--iterations", type=parse_iterations, default="auto")
    p.add_argument("--preset", choices=list(PRESETS), default="auto",
                   help="network preset (default auto: 'paper' on a GPU, 'pretrained' on a CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    add_precision(p)
    p.add_argument("-o", "--output", type=Path, default=None, help="also save noisy/result as TIFF here")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=run_demo)


def _add_warm(p: argparse.ArgumentParser) -> None:
    """``--warm-start`` and the warm planes' patience and floor (stacks)."""
    p.add_argument("--warm-start", action="store_true",
                   help="stacks: start each plane from the network the previous plane ended with")
    p.add_argument("--warm-stop-patience", type=_whole_number(1), default=None, metavar="N",
                   help="with --warm-start: the automatic stop's patience for the warm planes (default: the preset's)")
    p.add_argument("--warm-min-iterations", type=_whole_number(1), default=None, metavar="N",
                   help="with --warm-start: no stop before this iteration on the warm planes (default: the preset's)")


def _whole_number(minimum: int, word: str | None = None):
    """An argparse type: a whole number >= ``minimum`` (or ``word`` itself, where given)."""

    def parse(text: str) -> int | str:
        if word is not None and text == word:
            return word
        try:
            n = int(text)
        except ValueError:
            n = None
        if n is None or n < minimum:
            raise argparse.ArgumentTypeError(f"expected {f'{word!r} or ' if word else ''}a whole number >= {minimum}, "
                                             f"got {text!r}")
        return n

    return parse


def partial_result(job: Any) -> np.ndarray:
    """The output so far after an interruption; NaN where nothing was fitted (also when the
    interruption came before the first iteration of a plane finished)."""
    try:
        return job.result(cancelled=True)
    except Exception as err:  # noqa: BLE001 - still write the finished planes
        sys.stderr.write(f"\nnapari-dip: warning: the plane in progress could not be recovered "
                         f"({type(err).__name__}: {err}); writing the finished planes only\n")
        return job.output.copy()


def run_restoration(args: argparse.Namespace) -> int:
    """Run ``denoise``/``inpaint``/``super-resolve`` on one file; returns the exit status."""
    from ..core.restore import Restoration

    task = TASKS[args.command]
    kwargs: dict[str, Any] = dict(iterations=args.iterations, preset=args.preset, device=args.device,
                                  seed=args.seed, channel_axis=args.channel_axis, precision=args.precision,
                                  **weights_option(args.weights))
    if task == "super_resolve":
        kwargs.update(factor=args.factor, kernel=args.kernel)
    for key in ("noise_model", "noise_gain", "noise_read_variance", "noise_offset"):
        if getattr(args, key, None) is not None:  # denoise only; unset keeps the engine's default
            kwargs[key] = getattr(args, key)
    if getattr(args, "pixel_fusion", None) is not None:  # unset: the engine's default ('auto')
        kwargs["pixel_fusion"] = {"auto": "auto", "on": True, "off": False}[args.pixel_fusion]
    if getattr(args, "neighbour_planes", "auto") != "auto":
        kwargs["neighbour_planes"] = args.neighbour_planes  # unset ('auto'): the engine's default
    for key in ("warm_stop_patience", "warm_min_iterations"):
        if getattr(args, key, None) is not None:
            if not args.warm_start:
                raise CLIError(f"--{key.replace('_', '-')} applies to warm planes: add --warm-start")
            kwargs[key] = getattr(args, key)
    if getattr(args, "warm_start", False):
        kwargs["warm_start"] = True
    if args.output.suffix.lower() == ".zarr" or args.scheduler is not None:
        if kwargs.pop("warm_start", False):
            raise CLIError("--warm-start chains each plane to the previous one: not with a .zarr output or --scheduler "
                           "(those fit the planes independently); write a .tif instead")
        if kwargs.pop("neighbour_planes", 0):
            raise CLIError("--neighbour-planes fits each plane with its neighbours in one process: not with a .zarr "
                           "output or --scheduler (those fit the planes independently); write a .tif instead")
        from .distributed import run_cli

        return run_cli(args, task, kwargs)
    inputs = [args.input] + ([args.mask] if task == "inpaint" else [])
    check_output(args.output, inputs, args.overwrite)
    if args.log is not None:
        check_output_log(args.log, inputs + [args.output], args.overwrite)
    check_device(args.device)
    image = read_input(args.input)
    calibration = input_calibration(args.input)
    if calibration is not None and task == "super_resolve":
        calibration = calibration.scaled(args.factor)
    kwargs["channel_axis"] = default_channel_axis(args.input, image, args.channel_axis)
    if task == "inpaint":
        kwargs["mask"] = read_input(args.mask)
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
        result = partial_result(job)
        sys.stderr.write("\ninterrupted: writing the best result so far (unfitted planes are NaN)\n")
        status = EXIT_INTERRUPTED
    seconds = time.perf_counter() - start
    write_output(args.output, result, calibration)
    if args.log is not None:
        log = {"command": args.command, "input": str(args.input), "output": str(args.output),
               "preset": args.preset, "resolved_preset": job.resolved_preset, "device": str(job.device),
               "precision": job.precision, "seed": args.seed,
               "iterations": args.iterations, "seconds": round(seconds, 3), "interrupted": status != 0,
               "slices": job.history()}
        args.log.write_text(json.dumps(log, indent=1))
    if not args.quiet:
        print(f"wrote {describe_output(args.output, result, calibration)} in {seconds:.1f} s")
    return status


def run_demo(args: argparse.Namespace) -> int:
    """``napari-dip demo``: denoise the bundled synthetic image and print the PSNR."""
    from ..core.restore import Restoration
    from ..samples import noisy_cells, psnr

    clean, noisy = noisy_cells(args.size, seed=args.seed)
    if args.output is not None:
        check_output(args.output, [], args.overwrite)
    check_device(args.device)
    job = Restoration("denoise", noisy, iterations=args.iterations, preset=args.preset, device=args.device,
                      seed=args.seed, precision=args.precision)
    start = time.perf_counter()
    result = job.run(Progress(enabled=not args.quiet))
    seconds = time.perf_counter() - start
    fit = job.fits[0]
    # compare in the clean image's units: map the camera counts back
    to_unit = lambda x: (np.asarray(x, np.float64) - 100) / (4095 * 0.8)  # noqa: E731
    p_in, p_out = psnr(to_unit(noisy), clean, 1.0), psnr(to_unit(result), clean, 1.0)
    preset = args.preset if args.preset == job.resolved_preset else f"{args.preset} -> {job.resolved_preset}"
    print(f"demo: {args.size}x{args.size} synthetic fluorescence image, preset {preset}, device {job.device}")
    print(f"noisy input PSNR {p_in:.2f} dB -> DIP result PSNR {p_out:.2f} dB "
          f"(+{p_out - p_in:.2f} dB), {fit.iterations} iterations "
          f"(estimate from iteration {fit.best_iteration}), {seconds:.1f} s")
    if args.output is not None:
        write_output(args.output, np.stack([noisy.astype(np.float32), result]), None)
        print(f"wrote {args.output} (plane 0 noisy, plane 1 result)")
    return 0
