"""The ``napari-dip`` command line (also ``python -m napari_dip``); uses the core only.

    napari-dip denoise IN -o OUT
    napari-dip inpaint IN --mask MASK -o OUT
    napari-dip super-resolve IN --factor 4 -o OUT
    napari-dip demo
    napari-dip info
    napari-dip pretrain IMAGES... -o WEIGHTS.pt
    napari-dip blind | enhance | flash | preimage | actmax | architecture-study ...

Inputs are never modified; an existing output is refused without ``--overwrite``, and an output
that is one of the inputs is always refused. Ctrl-C writes the best result so far and exits 130.

The package's modules import one way only: :mod:`._common` (errors, progress, options, checks)
imports no other module of the package; :mod:`.restore`, :mod:`.info`, :mod:`.applications` and
:mod:`.distributed` import only :mod:`._common` (and :mod:`.restore` calls :mod:`.distributed`
for ``.zarr`` outputs); this module assembles the parser from their ``register`` functions.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import applications, info, pretrain, restore
from ._common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CLIError, Progress

__all__ = ["CLIError", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "Progress", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-dip`` argument parser; every subcommand sets ``handler`` (called with the arguments)."""
    parser = argparse.ArgumentParser(prog="napari-dip", description="Deep Image Prior image restoration.")
    parser.add_argument("--version", action="version", version=f"napari-dip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    restore.register(sub)
    info.register(sub)
    pretrain.register(sub)
    applications.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``napari-dip`` with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for records of the command (weights files)
    try:
        return args.handler(args)
    except CLIError as err:
        parser.exit(EXIT_USAGE, f"napari-dip: error: {err}\n")
    except MemoryError as err:
        parser.exit(EXIT_ERROR, f"napari-dip: error: {err}\n")
    except RuntimeError as err:
        from ..core.fit import _is_oom

        if not _is_oom(err):
            raise
        first = (str(err).splitlines() or [""])[0]
        parser.exit(EXIT_ERROR, f"napari-dip: error: out of memory ({first}); use '--preset fast', a smaller "
                                "image or crop, or another '--device'\n")
    except KeyboardInterrupt:
        parser.exit(EXIT_INTERRUPTED, "\ninterrupted\n")
    return 0
