"""Make the screenshots of the application widgets and of a stack job on a local dask cluster.

Runs napari with a real window, so on a machine without a display use a virtual one::

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1600x1024x24" python docs/make_app_screenshots.py

Needs the reference images in ``../shared/data/dip/`` (snail.jpg, kate.png, the cave flash/no-flash
pair, monkey.jpg). Writes ``docs/images/{jpeg,enhance,flash,preimage,stack_job}.png`` and prints,
for each, what the run did (time, iterations, measured figures) for the captions. All fits are
CPU-sized: small crops, the 'fast' presets (or the light 'jpeg' network), a few hundred iterations.
``--only NAME`` makes one of them; ``--scale`` below 1 shortens the runs for a quick check.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from make_screenshots import OUT, shot, wait  # the same folder (run as a script)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dip"


def report(name: str, widget, layer=None) -> None:
    layer = layer if layer is not None else widget.output_layer
    meta = layer.metadata.get("napari_dip", {}) if layer is not None else {}
    figures = {k: meta[k] for k in ("blockiness", "local_contrast", "feature_distance", "activation") if k in meta}
    planes = [(p["plane"] + 1, p["ending"], p["iterations"], (p["evidence"] or {}).get("unexplained"))
              for p in meta.get("planes", [])]
    print(f"[{name}] {meta.get('state')} in {meta.get('seconds')} s; preset {meta.get('preset')}; planes "
          f"(number, ending, iterations, unexplained): {planes}; {figures}\n  status: {widget.status.value}", flush=True)


def read(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def viewer_with(title: str, cls, dock_name: str):
    import napari

    viewer = napari.Viewer(show=True, title=title)
    viewer.window.resize(1500, 900)
    w = cls(viewer)
    viewer.window.add_dock_widget(w, name=dock_name, area="right")
    return viewer, w


def jpeg(app, its) -> None:
    from napari_dip.widgets import BlindRestoreWidget

    crop = read(DATA / "denoising" / "snail.jpg")[64:160, 128:256]  # 96x128, on the 8x8 grid
    viewer, w = viewer_with("napari-dip: JPEG artefacts", BlindRestoreWidget, "Remove JPEG artefacts")
    viewer.add_image(crop, name="snail.jpg crop", rgb=True)
    w.image.value = viewer.layers["snail.jpg crop"]
    w.iterations.value = its(600)
    w.preview_every.value = 50
    w.run()
    wait(app, lambda: not w.running)
    report("jpeg", w)
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "jpeg")
    viewer.close()


def enhance(app, its) -> None:
    from napari_dip.widgets import EnhanceWidget

    crop = read(DATA / "restoration" / "kate.png")[60:156, 100:196]  # 96x96
    viewer, w = viewer_with("napari-dip: enhance", EnhanceWidget, "Enhance detail")
    viewer.add_image(crop, name="kate crop", rgb=True)
    w.image.value = viewer.layers["kate crop"]
    w.iterations.value = its(300)
    w.preview_every.value = 25
    w.alpha.value = 1.0
    w.add_coarse.value = True
    w.advanced_section.expand(animate=False)
    w.run()
    wait(app, lambda: not w.running)
    report("enhance", w)
    viewer.layers.move(viewer.layers.index(w.coarse_layer), 1)  # input, coarse, enhanced
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "enhance")
    viewer.close()


def flash(app, its) -> None:
    from napari_dip.widgets import FlashNoFlashWidget

    folder = DATA / "flash_no_flash"
    f = read(folder / "cave01_00_flash.jpg")[::4, ::4][:96, :128]  # 1/4 scale, top-left 96x128
    nf = read(folder / "cave01_01_noflash.jpg")[::4, ::4][:96, :128]
    viewer, w = viewer_with("napari-dip: flash / no-flash", FlashNoFlashWidget, "Flash / no-flash")
    viewer.add_image(f, name="cave flash", rgb=True)
    viewer.add_image(nf, name="cave no-flash", rgb=True)
    w.image.value, w.flash.value = viewer.layers["cave no-flash"], viewer.layers["cave flash"]
    w.iterations.value = its(300)
    w.preview_every.value = 25
    w.run()
    wait(app, lambda: not w.running)
    report("flash", w)
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "flash")
    viewer.close()


def preimage(app, its) -> None:
    import torch

    from napari_dip.widgets import PreImageWidget

    # no trained network can be downloaded here: a small randomly initialised conv net, scripted
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
    path = Path(tempfile.mkdtemp()) / "small-convnet.pt"
    torch.jit.script(net).save(str(path))
    crop = read(DATA / "feature_inversion" / "monkey.jpg")[64:128, 80:144]  # 64x64
    viewer, w = viewer_with("napari-dip: pre-image", PreImageWidget, "Pre-image / activation maximisation")
    viewer.add_image(crop, name="monkey crop", rgb=True)
    w.image.value = viewer.layers["monkey crop"]
    w.model.value = path
    w.layer.value = "4"
    w.iterations.value = its(300)
    w.preview_every.value = 25
    w.overrides = {"lr": 0.01}
    w.run()
    wait(app, lambda: not w.running)
    for method, layer in w.result_layers.items():
        report(f"preimage {method}", w, layer)
        x0 = crop.astype(np.float64)
        print(f"  mean abs pixel error vs the crop ({method}): {np.abs(layer.data - x0).mean():.1f}", flush=True)
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "preimage")
    viewer.close()


def stack_job(app, its) -> None:
    from distributed import LocalCluster

    from napari_dip.samples import noisy_cells
    from napari_dip.widgets import DenoiseWidget

    planes = 8
    data = np.stack([noisy_cells(64, photons=20, seed=s)[1] for s in range(planes)])
    store = Path(tempfile.mkdtemp()) / "cells-denoised.zarr"
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        viewer, w = viewer_with("napari-dip: stack job", DenoiseWidget, "Denoise")
        layer = viewer.add_image(data, name="noisy cells stack", scale=(1.0, 0.16, 0.16), units=("um", "um", "um"),
                                 axis_labels=("z", "y", "x"), colormap="gray")
        w.image.value = layer
        w.preset.value = "fast"
        w.auto_stop.value = False
        w.iterations.value = its(400)
        w.scheduler.value = cluster.scheduler_address
        w.store.value = store
        w.advanced_section.expand(animate=False)
        # a first run, cancelled once 3 planes have landed
        w.run()
        wait(app, lambda: not w.running or w.slices.value >= 3)
        w.cancel()
        wait(app, lambda: not w.running)
        print(f"[stack_job cancelled] status: {w.status.value}", flush=True)
        viewer.layers.remove(w.output_layer)
        # the same job again: it resumes from the store
        start = time.monotonic()
        w.run()
        wait(app, lambda: not w.running or (w.slices.value >= 6 and w.output_layer is not None))
        print(f"[stack_job running] {time.monotonic() - start:.0f} s; status: {w.status.value}", flush=True)
        viewer.canvas.grid.enabled = True
        viewer.dims.set_current_step(0, 5)
        shot(viewer, app, "stack_job")
        wait(app, lambda: not w.running)
        meta = w.output_layer.metadata["napari_dip"]
        print(f"[stack_job] {meta['state']} in {meta['seconds']} s; resumed {meta['stack_job']['planes_resumed']}; "
              f"workers {meta['stack_job']['workers']}; plane seconds {[p['seconds'] for p in meta['planes']]}\n"
              f"  status: {w.status.value}", flush=True)
        viewer.close()


def main(only: str | None, scale: float) -> None:
    os.environ.setdefault("NAPARI_CONFIG", str(Path(tempfile.mkdtemp()) / "settings.yaml"))  # no user settings
    import torch
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    get_settings().application.gui_notification_level = "none"  # no toasts over the canvas
    import napari

    napari.Viewer(show=False).close()  # create the Qt application
    app = QApplication.instance()
    its = lambda n: max(10, int(n * scale))  # noqa: E731
    print(f"load average before: {os.getloadavg()}", flush=True)
    for name, make in (("jpeg", jpeg), ("enhance", enhance), ("flash", flash), ("preimage", preimage),
                       ("stack_job", stack_job)):
        if only in (None, name):
            start = time.monotonic()
            make(app, its)
            print(f"[{name}] {time.monotonic() - start:.0f} s wall", flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["jpeg", "enhance", "flash", "preimage", "stack_job"], default=None)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts (e.g. 0.1 to test)")
    args = parser.parse_args()
    main(args.only, args.scale)
