"""Make the user guide's screenshots: each widget at work on the sample data.

Runs napari with a real window, so on a machine without a display use a virtual one::

    OMP_NUM_THREADS=2 xvfb-run -a -s "-screen 0 1280x1024x24" python docs/make_screenshots.py

Writes ``docs/images/{denoise,inpaint,super_resolve,cancelled}.png``. The fits are short (the
'fast' preset on small images, automatic stopping) and the script took 11 minutes on 2 CPU
cores (``--scale`` below 1 shortens the iteration caps).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images"


def wait(app, predicate, timeout: float = 600.0) -> None:
    """Process Qt events until ``predicate()`` is true."""
    start = time.monotonic()
    while not predicate():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - start > timeout:
            raise TimeoutError("the fit did not finish in time")


def setup(widget, layer, iterations: int, preview_every: int, auto_stop: bool = True, **values) -> None:
    widget.image.value = layer
    widget.preset.value = "fast"
    widget.auto_stop.value = auto_stop
    widget.iterations.value = iterations
    widget.preview_every.value = preview_every
    for name, value in values.items():
        getattr(widget, name).value = value


def shot(viewer, app, name: str) -> Path:
    from imageio.v3 import imwrite

    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    path = OUT / f"{name}.png"
    imwrite(path, viewer.screenshot(canvas_only=False, flash=False))
    print("wrote", path)
    return path


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

    # 1. denoising a noisy camera image, the result beside the input
    viewer = napari.Viewer(show=True, title="napari-dip: denoise")
    app = QApplication.instance()
    viewer.window.resize(1500, 860)
    _clean, noisy = noisy_cells(128, photons=20, seed=0)
    layer = viewer.add_image(noisy, name="noisy cells", colormap="gray")
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w, name="Denoise (Deep Image Prior)", area="right")
    setup(w, layer, its(3000), 50)  # automatic stopping, capped at the preset's 3000
    w.run()
    wait(app, lambda: not w.running)
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "denoise")

    # 2. cancelling a long run: the best estimate so far is kept
    viewer.layers.remove(w.output_layer)
    viewer.canvas.grid.enabled = False
    w.iterations.value = 100_000
    w.auto_stop.value = True
    w.run()
    wait(app, lambda: w.progress.value >= its(150))
    w.cancel()
    wait(app, lambda: not w.running)
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "cancelled")
    viewer.close()

    # 3. inpainting a damaged stack with its Labels mask
    viewer = napari.Viewer(show=True, title="napari-dip: inpaint")
    viewer.window.resize(1500, 860)
    _clean, damaged, mask = cells_stack(planes=3, size=64, seed=0)
    image = viewer.add_image(damaged, name="damaged stack", colormap="gray")
    labels = viewer.add_labels(mask, name="damage mask", opacity=0.4)
    w = InpaintWidget(viewer)
    viewer.window.add_dock_widget(w, name="Inpaint (Deep Image Prior)", area="right")
    setup(w, image, its(1500), 50, mask=labels)
    w.run()
    wait(app, lambda: not w.running)
    labels.visible = False
    viewer.canvas.grid.enabled = True
    viewer.dims.set_current_step(0, 1)
    shot(viewer, app, "inpaint")
    viewer.close()

    # 4. super-resolving a low-resolution image 4x; the output overlays the input in world space
    viewer = napari.Viewer(show=True, title="napari-dip: super-resolve")
    viewer.window.resize(1500, 860)
    high = cells(128, n_cells=8, seed=4)
    low = high.reshape(32, 4, 32, 4).mean(axis=(1, 3)).astype(np.float32)
    image = viewer.add_image(low, name="low-res", colormap="gray", scale=(4.0, 4.0))
    w = SuperResolveWidget(viewer)
    viewer.window.add_dock_widget(w, name="Super-resolve (Deep Image Prior)", area="right")
    setup(w, image, its(2000), 50, factor=4)
    w.run()
    wait(app, lambda: not w.running)
    viewer.canvas.grid.enabled = True
    shot(viewer, app, "super_resolve")
    viewer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts (e.g. 0.2 to test)")
    main(parser.parse_args().scale)
