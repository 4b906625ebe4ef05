"""``napari-dip pretrain``: weights for masked fits, learned from images by masked-pixel reconstruction.

    # a prior for my microscope: fine-tune the shipped weights on my own (noisy) images or stacks
    napari-dip pretrain my_stack.tif more/*.tif -o my-microscope.pt
    napari-dip denoise new_frame.tif -o out.tif --weights my-microscope.pt
    # reproduce the shipped grayscale weights (CC0 scikit-image images + synthetic cells)
    napari-dip pretrain --builtin-data --channels 1 --steps 24000 --threads 1 -o masked-skip-gray.pt

Stacks are split into their 2D planes (grayscale) or RGB images. Own images are taken as noisy:
the hidden pixels are compared with the image itself (``--clean`` adds synthetic noise instead, for
noise-free images). Nothing is written over an existing file without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ._common import CLIError, check_device, check_writable, read_input

__all__ = ["register", "run_pretrain"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pretrain`` (sets ``handler``)."""
    p = subparsers.add_parser("pretrain", help="learn starting weights for masked fits from images",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, nargs="*", help="training images or stacks (TIFF, PNG, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the weights file to write (.pt)")
    p.add_argument("--builtin-data", action="store_true",
                   help="train on the package's redistributable set (CC0 scikit-image images + synthetic cells)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="1 (grayscale) or 3 (RGB); default: from the images (1 with --builtin-data)")
    p.add_argument("--clean", action="store_true",
                   help="the images are noise-free: add synthetic noise and compare with the clean image")
    p.add_argument("--from", dest="start", default=None, metavar="FILE|builtin|none",
                   help="weights to start from (default: 'builtin' for your own images, 'none' with --builtin-data)")
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default 2000 for own images, 24000 built-in)")
    p.add_argument("--batch", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--patch", type=int, default=64, help="crop side in pixels, a multiple of 32, at least 64 (default 64)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3, 5e-4 when starting from weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (the shipped weights: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing weights file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=run_pretrain)


def _own_images(paths: list[Path], channels: int | None) -> tuple[list[Any], list[str], int]:
    """Every 2D plane (grayscale) or RGB image of ``paths``, with names for error messages."""
    from ..core.layout import get_plane, infer_layout

    images, names, found = [], [], set()
    for path in paths:
        arr = read_input(path)
        layout = infer_layout(arr.shape)
        if layout.channels not in (1, 3):
            raise CLIError(f"{path}: {layout.channels}-channel images are not supported; use grayscale or RGB")
        found.add(layout.channels)
        for s in range(layout.n_slices):
            plane = get_plane(layout, arr, s)
            images.append(plane if layout.channels == 3 else plane[..., 0])
            names.append(f"{path}" + (f" plane {s}" if layout.n_slices > 1 else ""))
    if len(found) > 1:
        raise CLIError("the images mix grayscale and RGB; pre-train one kind at a time")
    got = found.pop()
    if channels is not None and channels != got:
        raise CLIError(f"--channels {channels} but the images have {got} channel(s)")
    return images, names, got


def run_pretrain(args: argparse.Namespace) -> int:
    """Run ``pretrain``; returns the exit status."""
    import torch

    from .. import __version__
    from ..core.pretrain import drain_pretraining, pretrain_steps
    from ..core.settings import get_settings, with_network_of
    from ..core.weights import WeightsError, builtin_path, load_weights, resolve_weights, save_weights

    if bool(args.images) == bool(args.builtin_data):
        raise CLIError("give training images, or --builtin-data (not both)")
    if args.output.suffix.lower() != ".pt":
        raise CLIError(f"output {args.output}: weights files end in .pt")
    check_writable("output", args.output, args.overwrite)
    if not args.output.parent.exists():
        raise CLIError(f"output folder {args.output.parent} does not exist")
    for name, value, low in (("--steps", args.steps, 1), ("--batch", args.batch, 1), ("--patch", args.patch, 64)):
        if value is not None and value < low:
            raise CLIError(f"{name} must be at least {low}, got {value}")
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.builtin_data:
        from ..datasets import builtin_training_images

        channels = args.channels or 1
        try:
            images, names = builtin_training_images(channels, seed=args.seed)
        except ImportError as err:
            raise CLIError(str(err)) from None
        synthetic, start_spec, steps = True, args.start or "none", args.steps or 24000
    else:
        images, names, channels = _own_images(args.images, args.channels)
        synthetic, start_spec, steps = args.clean, args.start or "builtin", args.steps or 2000
    settings = get_settings("pretrained", "denoise", weights=None)
    init_state, start_file = None, None
    if start_spec.lower() != "none":
        try:
            path = resolve_weights(start_spec, channels)
            if path is None:
                if start_spec == "builtin":
                    raise CLIError(f"no built-in weights for {channels}-channel images "
                                   f"(expected {builtin_path(channels)}); use --from none")
            else:
                w = load_weights(path)
                settings = with_network_of(settings, w)  # go on training the network the file holds
                w.check(settings.network, settings.network_kwargs, channels + 1, channels, "masked")
                init_state, start_file = w.state_dict, str(path)
        except WeightsError as err:
            raise CLIError(str(err)) from None
    lr = args.lr if args.lr is not None else (5e-4 if init_state is not None else 2e-3)
    options = dict(channels=channels, steps=steps, batch=args.batch, patch=args.patch, lr=lr, seed=args.seed,
                   synthetic_noise=synthetic)
    begin = time.perf_counter()

    def report(p) -> None:
        if not args.quiet:
            sys.stderr.write(f"step {p.step}/{p.total}: masked-pixel error {p.loss:.5f}, {p.seconds:.0f} s\n")
            sys.stderr.flush()

    try:
        net = drain_pretraining(pretrain_steps(images, settings, device=args.device, init_state=init_state,
                                               names=names, report_every=max(1, min(500, steps // 20)), **options),
                                report)
    except ValueError as err:
        raise CLIError(str(err)) from None
    meta = {"command": " ".join(["napari-dip", *getattr(args, "argv", ["pretrain"])]), "napari_dip": __version__, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": args.device, "started_from": start_file,
            "trained_on": ("built-in set: CC0 scikit-image images + synthetic cells" if args.builtin_data else
                           f"{len(images)} image(s) from {len(args.images)} file(s)"),
            "images": len(images), "date": time.strftime("%Y-%m-%d"), **options}
    try:
        save_weights(args.output, net, network=settings.network, network_kwargs=settings.network_kwargs,
                     in_channels=channels + 1, out_channels=channels, input_kind="masked", meta=meta,
                     overwrite=args.overwrite)
    except (FileExistsError, IsADirectoryError) as err:
        raise CLIError(str(err)) from None
    if not args.quiet:
        print(f"wrote {args.output}: {steps} steps on {len(images)} image(s) in {time.perf_counter() - begin:.0f} s")
    return 0
