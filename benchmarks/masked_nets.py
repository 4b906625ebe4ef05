"""Variants of the masked network: time per iteration, and pre-training one for a time-to-quality run.

The ``pretrained`` preset's network (``core.settings._MASKED_SKIP``) and the variants measured
against it (docs/performance.md, "A lighter masked network")::

    python benchmarks/masked_nets.py time                                  # fwd + bwd + Adam, 256 px, 1 thread
    python benchmarks/masked_nets.py pretrain previous -o masked-previous.pt   # ~40-55 min on one thread here

``pretrain`` runs what ``napari-dip pretrain --builtin-data --channels 1 --steps 24000 --threads 1``
runs (the same images, options and seed), for the variant's network. A weights file names its
network, so a fit from it needs only the file::

    python benchmarks/time_to_quality.py --sets fmd256 --methods bm3d auto --method previous:preset=pretrained,weights=masked-previous.pt --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

#: changes to the preset's network
VARIANTS: dict[str, dict] = {
    "default": {},
    # the shipped network until 2026-11-30 (reflection padding, a BatchNorm on each concatenation)
    "previous": {"pad": "reflection", "concat_norm": True},
    # faster still, but on the demo image it learned the noise (docs/performance.md)
    "nearest": {"upsample": "nearest"},
}


def network_kwargs(variant: str) -> dict:
    from napari_dip.core.settings import get_settings

    base = get_settings("pretrained", "denoise", weights=None).network_kwargs
    return {**base, **VARIANTS[variant]}


def time_variants(names: Sequence[str], size: int, rounds: int) -> None:
    import torch

    from napari_dip.core.networks import build_network

    def seconds(net) -> float:
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        x, y = torch.rand(1, 2, size, size), torch.rand(1, 1, size, size)
        times = []
        for _ in range(16):
            start = time.perf_counter()
            opt.zero_grad()
            loss = ((net(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        return statistics.median(times[3:])

    seconds(build_network("skip", 2, 1, **network_kwargs(names[0])))  # warm-up
    found: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):  # interleaved, so drifting load hits every variant alike
        for n in names:
            found[n].append(seconds(build_network("skip", 2, 1, **network_kwargs(n))))
    ref = statistics.median(found[names[0]])
    for n in names:
        t = statistics.median(found[n])
        print(f"{n:10s} {1000 * t:7.1f} ms per iteration at {size} px  ({t / ref:.2f}x {names[0]})", flush=True)


def pretrain_variant(variant: str, output: Path, steps: int) -> None:
    import torch

    from napari_dip import __version__
    from napari_dip.core.pretrain import drain_pretraining, pretrain_steps
    from napari_dip.core.settings import get_settings
    from napari_dip.core.weights import save_weights
    from napari_dip.datasets import builtin_training_images

    kwargs = network_kwargs(variant)
    settings = get_settings("pretrained", "denoise", weights=None).replace(network_kwargs=kwargs)
    images, names = builtin_training_images(1, seed=0)
    options = dict(channels=1, steps=steps, batch=8, patch=64, lr=2e-3, seed=0, synthetic_noise=True)
    start = time.perf_counter()
    net = drain_pretraining(pretrain_steps(images, settings, device="cpu", names=names, report_every=500, **options),
                            lambda p: print(f"step {p.step}/{p.total}: {p.loss:.5f}, {p.seconds:.0f} s", flush=True))
    meta = {"command": f"python benchmarks/masked_nets.py pretrain {variant} -o {output.name} --steps {steps}",
            "napari_dip": __version__, "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "device": "cpu", "started_from": None, "variant": variant,
            "trained_on": "built-in set: CC0 scikit-image images + synthetic cells", "images": len(images),
            "date": time.strftime("%Y-%m-%d"), **options}
    save_weights(output, net, network=settings.network, network_kwargs=kwargs, in_channels=2, out_channels=1,
                 input_kind="masked", meta=meta)
    print(f"wrote {output} in {time.perf_counter() - start:.0f} s")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="time per iteration of each variant")
    t.add_argument("variants", nargs="*", choices=list(VARIANTS), help="default: all, the first is the reference")
    t.add_argument("--size", type=int, default=256)
    t.add_argument("--rounds", type=int, default=3)
    r = sub.add_parser("pretrain", help="pre-train a variant as the shipped weights are")
    r.add_argument("variant", choices=list(VARIANTS))
    r.add_argument("-o", "--output", type=Path, required=True)
    r.add_argument("--steps", type=int, default=24000)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.command == "time":
        time_variants(args.variants or list(VARIANTS), args.size, args.rounds)
    else:
        pretrain_variant(args.variant, args.output, args.steps)


if __name__ == "__main__":
    main()
