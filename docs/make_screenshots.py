"""Make the user guide's screenshots: each widget at work on the sample data, mid-run and finished.

Runs napari with a real window, so on a machine without a display use a virtual one::

    OMP_NUM_THREADS=2 xvfb-run -a -s "-screen 0 1600x1024x24" python docs/make_screenshots.py

Writes ``docs/images/{denoise_running,denoise,cancelled,inpaint_running,inpaint,super_resolve}.png``
and prints, for each, what the run did (time, iterations, how it ended) for the captions. The fits
are short (the 'fast' preset on small images, automatic stopping); ``--scale`` below 1 shortens
the iteration caps for a quick check.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images"


def wait(app, predicate, timeout: float = 3600.0) -> None:
    """Process Qt events until ``predicate()`` is true (also used by make_app_screenshots.py)."""
    start = time.monotonic()
    while not predicate():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - start > timeout:
            raise TimeoutError("the run did not finish in time")


def setup(widget, layer, iterations: int, preview_every: int, auto_stop: bool = True, **values) -> None:
    widget.image.value = layer
    widget.preset.value = "fast"
    widget.auto_stop.value = auto_stop
    widget.iterations.value = iterations
    widget.preview_every.value = preview_every
    for name, value in values.items():
        getattr(widget, name).value = value


def shot(viewer, app, name: str, reset: bool = True) -> Path:
    from imageio.v3 import imwrite

    if reset:
        viewer.reset_view()
    for _ in range(30):  # let the canvas settle
        app.processEvents()
        time.sleep(0.02)
    path = OUT / f"{name}.png"
    imwrite(path, viewer.screenshot(canvas_only=False, flash=False))
    print("wrote", path, flush=True)
    return path


def report(name: str, widget) -> None:
    """Print what the run did, for the caption."""
    layer = widget.output_layer
    meta = layer.metadata.get("napari_dip", {}) if layer is not None else {}
    planes = [(p["plane"] + 1, p["ending"], p["iterations"], p["best_iteration"], p["rule"],
               (p["evidence"] or {}).get("unexplained")) for p in meta.get("planes", [])]
    print(f"[{name}] {meta.get('state')} in {meta.get('seconds')} s; planes (number, ending, iterations, "
          f"estimate from, rule, unexplained): {planes}\n  status: {widget.status.value}", flush=True)


def main(scale: float = 1.0) -> None:
    os.environ.setdefault("NAPARI_CONFIG", str(Path(tempfile.mkdtemp()) / "settings.yaml"))  # no user settings
    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    from napari_dip.samples import cells, cells_stack, noisy_cells
    from napari_dip.widgets import DenoiseWidget, InpaintWidget, SuperResolveWidget

    OUT.mkdir(parents=True, exist_ok=True)
    get_settings().application.gui_notification_level = "none"  # no toasts over the canvas
    its = lambda n: max(10, int(n * scale))  # noqa: E731
    print(f"load average before: {os.getloadavg()}", flush=True)

    # 1. denoising a noisy camera image: mid-run (live preview, plot, time estimate), then finished
    viewer = napari.Viewer(show=True, title="napari-dip: denoise")
    app = QApplication.instance()
    viewer.window.resize(1500, 900)
    _clean, noisy = noisy_cells(128, photons=20, seed=0)
    layer = viewer.add_image(noisy, name="noisy cells", colormap="gray")
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w, name="Denoise (Deep Image Prior)", area="right")
    setup(w, layer, its(3000), 25)  # automatic stopping, capped at the preset's 3000
    w.plot_section.expand(animate=False)
    viewer.canvas.grid.enabled = True
    w.run()
    wait(app, lambda: not w.running or w.progress.value >= its(300))
    print(f"[denoise_running] status: {w.status.value}", flush=True)
    shot(viewer, app, "denoise_running")
    wait(app, lambda: not w.running)
    report("denoise", w)
    shot(viewer, app, "denoise")

    # 2. cancelling early: the estimate is flagged as not converged, with a one-click Discard
    viewer.layers.remove(w.output_layer)
    w.run()
    wait(app, lambda: w.progress.value >= 15)
    w.cancel()
    wait(app, lambda: not w.running)
    report("cancelled", w)
    shot(viewer, app, "cancelled")
    viewer.close()

    # 3. inpainting a damaged stack with its Labels mask: mid-run, the viewer follows the plane
    #    being fitted and the planes not reached yet show the input; then finished
    viewer = napari.Viewer(show=True, title="napari-dip: inpaint")
    viewer.window.resize(1500, 900)
    _clean, damaged, mask = cells_stack(planes=3, size=64, seed=0)
    image = viewer.add_image(damaged, name="damaged stack", colormap="gray")
    labels = viewer.add_labels(mask, name="damage mask", opacity=0.4)
    labels.visible = False
    w = InpaintWidget(viewer)
    viewer.window.add_dock_widget(w, name="Inpaint (Deep Image Prior)", area="right")
    setup(w, image, its(1500), 25, mask=labels)
    w.plot_section.expand(animate=False)
    w.run()
    wait(app, lambda: not w.running or (w.slices.value >= 1 and w.progress.value >= 100))
    print(f"[inpaint_running] status: {w.status.value}", flush=True)
    shot(viewer, app, "inpaint_running")
    wait(app, lambda: not w.running)
    viewer.canvas.grid.enabled = True
    report("inpaint", w)
    viewer.dims.set_current_step(0, 1)
    shot(viewer, app, "inpaint")
    viewer.close()

    # 4. super-resolving a low-resolution image 4x; the output overlays the input in world space
    viewer = napari.Viewer(show=True, title="napari-dip: super-resolve")
    viewer.window.resize(1500, 900)
    high = cells(128, n_cells=8, seed=4)
    low = high.reshape(32, 4, 32, 4).mean(axis=(1, 3)).astype(np.float32)
    image = viewer.add_image(low, name="low-res", colormap="gray", scale=(4.0, 4.0))
    w = SuperResolveWidget(viewer)
    viewer.window.add_dock_widget(w, name="Super-resolve (Deep Image Prior)", area="right")
    setup(w, image, its(2000), 50, factor=4)
    w.plot_section.expand(animate=False)
    w.run()
    wait(app, lambda: not w.running)
    report("super_resolve", w)
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "super_resolve")
    viewer.close()
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts (e.g. 0.2 to test)")
    main(parser.parse_args().scale)
