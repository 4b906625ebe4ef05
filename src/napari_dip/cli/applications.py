"""Command-line subcommands for the applications, added to ``napari-dip`` by :func:`register`.

    napari-dip blind IN -o OUT
    napari-dip enhance IN -o OUT [--alpha 1] [--coarse COARSE]
    napari-dip flash FLASH NOFLASH -o OUT
    napari-dip preimage IN --model MODEL --layer LAYER -o OUT [--method dip|tv]
    napari-dip actmax --model MODEL --layer LAYER --unit N -o OUT
    napari-dip architecture-study IMAGE --mask MASK [--quick] [--json OUT]

Every handler follows the main CLI's rules: inputs are never modified, an existing output is
refused without ``--overwrite``, an output that is an input is always refused, and a ``.tif``
output keeps the pixel size of the image it restores (``blind``, ``enhance``, ``preimage``: the
input; ``flash``: the no-flash image).
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
    CLIError,
    Progress,
    add_common,
    check_output,
    describe_output,
    input_calibration,
    parse_iterations,
    read_input,
    write_output,
)

__all__ = ["register"]


def _fixed(value: str) -> int:
    n = parse_iterations(value)
    if n == "auto":
        raise argparse.ArgumentTypeError("this command needs a fixed number of iterations")
    return int(n)


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="TorchScript file (torch.jit.save), or a torchvision model name (needs torchvision)")
    p.add_argument("--layer", default="", help="dotted layer name, e.g. features.8 (default: the model output)")
    p.add_argument("--weights", type=Path, default=None, help="state dict for a torchvision name (weights_only)")
    p.add_argument("--method", choices=["dip", "tv"], default="dip",
                   help="dip: deep image prior (default); tv: pixels with a TV-norm regulariser (baseline)")
    p.add_argument("--iterations", type=_fixed, default=3100, help="Adam steps (default 3100, as in the paper)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.001 for dip, 0.01 for tv)")
    p.add_argument("--tv-weight", type=float, default=1e-2, help="lambda of the TV baseline (default 0.01)")
    p.add_argument("--mean", type=float, nargs="+", default=None, help="model input mean per channel")
    p.add_argument("--std", type=float, nargs="+", default=None, help="model input std per channel")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the application subcommands to ``napari-dip``'s subparsers (each sets ``handler``)."""
    p = subparsers.add_parser("blind", help="remove JPEG artefacts / unknown degradations")
    add_common(p)
    p.set_defaults(handler=_run_blind, iterations=2400)
    for action in p._actions:  # the JPEG settings are this command's default preset
        if action.dest == "preset":
            action.choices, action.default = ["jpeg", "paper", "fast"], "jpeg"
            action.help = "jpeg: the paper's JPEG-artefact net (default); paper/fast: the denoising presets"
        elif action.dest == "iterations":
            action.help = "a positive number (default 2400, as in the paper), or 'auto'"

    p = subparsers.add_parser("enhance", help="enhance detail: x0 + alpha * (x0 - coarse DIP fit)")
    add_common(p)
    p.set_defaults(handler=_run_enhance, iterations=300)
    for action in p._actions:
        if action.dest == "iterations":
            action.help = "length of the coarse fit (default 300), or 'auto'"
    p.add_argument("--alpha", type=float, default=1.0, help="detail gain (default 1)")
    p.add_argument("--coarse", type=Path, default=None, help="also write the coarse image here")
    p.add_argument("--no-clip", action="store_true", help="do not clip the result to the input's range")

    p = subparsers.add_parser("flash", help="flash / no-flash: the flash image drives the network")
    p.add_argument("flash", type=Path, help="flash image (network input)")
    p.add_argument("no_flash", type=Path, help="no-flash image (target)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--iterations", type=_fixed, default=601, help="default 601, as in the paper")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_run_flash)

    p = subparsers.add_parser("preimage", help="natural pre-image of a trained network's features")
    p.add_argument("input", type=Path, help="image whose features are inverted")
    p.add_argument("-o", "--output", type=Path, required=True)
    _add_model(p)
    p.set_defaults(handler=_run_preimage)

    p = subparsers.add_parser("actmax", help="activation maximisation of one unit")
    p.add_argument("-o", "--output", type=Path, required=True)
    _add_model(p)
    p.add_argument("--unit", type=int, required=True, help="channel index in the layer's output")
    p.add_argument("--size", type=int, default=227, help="image size (default 227)")
    p.set_defaults(handler=_run_actmax)

    p = subparsers.add_parser("architecture-study",
                              help="compare depths and skip connections on large-hole inpainting")
    p.add_argument("image", type=Path, help="intact image (its pixels under the hole are the ground truth)")
    p.add_argument("--mask", type=Path, required=True, help="hole mask")
    p.add_argument("--mask-kind", choices=["known", "fill"], default="known",
                   help="known: white = known, black = hole (the paper's masks, default); fill: nonzero = hole")
    p.add_argument("--quick", action="store_true", help="CPU size: 1/4 scale, a 64x96 crop, 200 iterations")
    p.add_argument("--scale", type=int, default=None, help="integer downscaling (default 1, or 4 with --quick)")
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="crop after scaling")
    p.add_argument("--iterations", type=_fixed, default=None, help="per architecture (default 3001; 200 --quick)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_run_architecture)


def _write(path: Path, image: np.ndarray, quiet: bool, seconds: float, calibration: Any = None) -> None:
    if calibration is not None and calibration.axes and len(calibration.axes) != np.ndim(image):
        calibration = calibration.for_shape(np.shape(image))
    write_output(path, image, calibration)
    if not quiet:
        print(f"wrote {describe_output(path, image, calibration)} in {seconds:.1f} s")


def _guard(fn, *args, **kwargs) -> Any:
    """Run an API call, turning input errors into :class:`CLIError` and Ctrl-C into exit 130."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        raise CLIError(str(err)) from None
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        raise SystemExit(EXIT_INTERRUPTED) from None


def _run_blind(args: argparse.Namespace) -> int:
    from ..applications.blind import restore_blind

    check_output(args.output, [args.input], args.overwrite)
    image = read_input(args.input)
    start = time.perf_counter()
    out = _guard(restore_blind, image, iterations=args.iterations, preset=args.preset, device=args.device,
                 seed=args.seed, channel_axis=args.channel_axis, callback=Progress(enabled=not args.quiet))
    _write(args.output, out, args.quiet, time.perf_counter() - start, input_calibration(args.input))
    return 0


def _run_enhance(args: argparse.Namespace) -> int:
    from ..applications.enhance import enhance

    check_output(args.output, [args.input], args.overwrite)
    if args.coarse is not None:
        check_output(args.coarse, [args.input, args.output], args.overwrite)
    image = read_input(args.input)
    start = time.perf_counter()
    res = _guard(enhance, image, alpha=args.alpha, iterations=args.iterations, preset=args.preset,
                 clip=not args.no_clip, device=args.device, seed=args.seed, channel_axis=args.channel_axis,
                 callback=Progress(enabled=not args.quiet))
    seconds = time.perf_counter() - start
    calibration = input_calibration(args.input)
    _write(args.output, res.enhanced, args.quiet, seconds, calibration)
    if args.coarse is not None:
        _write(args.coarse, res.coarse, args.quiet, seconds, calibration)
    return 0


def _run_flash(args: argparse.Namespace) -> int:
    from ..applications.flash import flash_no_flash

    check_output(args.output, [args.flash, args.no_flash], args.overwrite)
    flash, no_flash = read_input(args.flash), read_input(args.no_flash)
    extra = {} if args.lr is None else {"lr": args.lr}
    start = time.perf_counter()
    out = _guard(flash_no_flash, flash, no_flash, iterations=args.iterations, device=args.device, seed=args.seed,
                 callback=Progress(enabled=not args.quiet), **extra)
    _write(args.output, out, args.quiet, time.perf_counter() - start, input_calibration(args.no_flash))
    return 0


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(method=args.method, iterations=args.iterations, lr=args.lr, tv_weight=args.tv_weight,
                mean=args.mean, std=args.std, weights=args.weights, device=args.device, seed=args.seed,
                callback=Progress(enabled=not args.quiet))


def _model_inputs(args: argparse.Namespace) -> list[Path]:
    paths = [Path(args.model)] if Path(args.model).exists() else []
    return paths + ([args.weights] if args.weights is not None else [])


def _run_preimage(args: argparse.Namespace) -> int:
    from ..applications.preimage import pre_image

    check_output(args.output, [args.input, *_model_inputs(args)], args.overwrite)
    image = read_input(args.input)
    res = _guard(pre_image, image, args.model, args.layer or None, **_model_kwargs(args))
    same_grid = np.shape(res.image)[:2] == image.shape[:2]  # the pre-image of the same field of view
    _write(args.output, res.image, args.quiet, res.seconds, input_calibration(args.input) if same_grid else None)
    if not args.quiet:
        print(f"relative feature distance {res.initial:.4g} (start) -> {res.objective:.4g} ({args.method})")
    return 0


def _run_actmax(args: argparse.Namespace) -> int:
    from ..applications.preimage import activation_maximisation

    check_output(args.output, _model_inputs(args), args.overwrite)
    res = _guard(activation_maximisation, args.model, args.layer or None, args.unit, size=args.size,
                 **_model_kwargs(args))
    image = res.image * (255.0 if args.output.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp") else 1.0)
    _write(args.output, image.astype(np.float32), args.quiet, res.seconds)
    if not args.quiet:
        print(f"activation of unit {args.unit}: {res.initial:.4g} (start) -> {res.objective:.4g} ({args.method})")
    return 0


def _run_architecture(args: argparse.Namespace) -> int:
    from ..applications.architecture import architecture_study, format_table, make_case

    if args.json is not None:
        _check_output_json(args.json, [args.image, args.mask], args.overwrite)
    image, mask = read_input(args.image), read_input(args.mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    known = mask != 0 if args.mask_kind == "known" else mask == 0
    scale = args.scale if args.scale is not None else (4 if args.quick else 1)
    box = tuple(args.box) if args.box is not None else ((16, 48, 64, 96) if args.quick else None)
    iterations = args.iterations if args.iterations is not None else (200 if args.quick else 3001)
    case = _guard(make_case, image, known, scale=scale, box=box)
    progress = Progress(enabled=not args.quiet)

    def callback(name: str, snap) -> None:
        progress(snap)

    rows = _guard(architecture_study, *case, iterations=iterations, device=args.device, seed=args.seed,
                  callback=callback)
    print(f"case: {case[0].shape[0]}x{case[0].shape[1]} (scale 1/{scale}, box {box}), "
          f"{100 * case[1].mean():.1f} % hole, {iterations} iterations per architecture")
    print(format_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"scale": scale, "box": box, "iterations": iterations, "rows": rows},
                                        indent=1))
    return 0


def _check_output_json(path: Path, inputs: list[Path], overwrite: bool) -> None:
    for src in inputs:
        if path.resolve() == src.resolve():
            raise CLIError(f"output {path} is the input file {src}: refusing to overwrite an input")
    if path.exists() and not overwrite:
        raise CLIError(f"output {path} exists; pass --overwrite to replace it")
    if not path.parent.exists():
        raise CLIError(f"output folder {path.parent} does not exist")
