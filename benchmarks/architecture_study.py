"""The paper's architecture study (depth and skip connections) on large-hole inpainting.

    python benchmarks/architecture_study.py --quick          # CPU: 1/4 scale, 64x96 crop, 200 its
    python benchmarks/architecture_study.py --iterations 3001 --scale 1

The case is ``library.png`` with the hole of ``library_mask.png`` (white = known): the image is
intact under the mask, so the hidden pixels are the ground truth and the PSNR is measured inside
the hole. Prints a Markdown table (one row per architecture) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_dip.applications import ARCHITECTURES, architecture_study, format_table, make_case

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dip" / "inpainting"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help=f"folder with library.png and library_mask.png ({DATA})")
    p.add_argument("--quick", action="store_true", help="1/4 scale, 64x96 crop, 200 iterations")
    p.add_argument("--scale", type=int, default=None)
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"))
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--only", nargs="+", default=None, choices=list(ARCHITECTURES), metavar="NAME",
                   help="run only these architectures")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import imageio.v3 as iio

    image = np.asarray(iio.imread(args.data / "library.png"))
    known = np.asarray(iio.imread(args.data / "library_mask.png"))
    known = known[..., 0] if known.ndim == 3 else known
    scale = args.scale or (4 if args.quick else 1)
    box = tuple(args.box) if args.box else ((16, 48, 64, 96) if args.quick else None)
    iterations = args.iterations or (200 if args.quick else 3001)
    img, hole = make_case(image, known, scale=scale, box=box)
    archs = {k: ARCHITECTURES[k] for k in (args.only or ARCHITECTURES)}

    def progress(name, snap):
        if snap.iteration % 50 == 0 or snap.iteration == snap.total:
            sys.stderr.write(f"\r{name}: {snap.iteration}/{snap.total}   ")
            sys.stderr.flush()

    rows = architecture_study(img, hole, architectures=archs, iterations=iterations, device=args.device,
                              seed=args.seed, callback=progress)
    sys.stderr.write("\n")
    print(f"library, scale 1/{scale}, box {box}: {img.shape[0]}x{img.shape[1]}, {100 * hole.mean():.1f} % hole, "
          f"{iterations} iterations, seed {args.seed}, device {args.device}")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"scale": scale, "box": box, "iterations": iterations, "rows": rows},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
