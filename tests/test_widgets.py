"""The napari widgets, headless (run under Xvfb): outputs, live preview, cancel, errors, plugin.

Every fit is tiny (24x32 pixels, the 'fast' preset, tens of iterations) so the file runs in well
under a minute on one CPU thread.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402

from conftest import make_widget  # noqa: E402
from napari_dip.samples import cells, noisy_cells, psnr  # noqa: E402

pytestmark = pytest.mark.gui

FIT_TIMEOUT = 60_000  # ms; generous for a loaded CI machine, a fit here takes a few seconds


@pytest.fixture()
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture()
def errors():
    """Messages of the error notifications dispatched during the test."""
    seen: list[str] = []

    def record(notification):
        if notification.severity == NotificationSeverity.ERROR:
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def run_to_end(qtbot, w):
    """Start ``w`` and wait for the run to end; returns the output layer."""
    finished: list = []
    w.run_finished.connect(finished.append)
    worker = w.run()
    assert worker is not None, w.status.value
    qtbot.waitUntil(lambda: bool(finished), timeout=FIT_TIMEOUT)
    assert not worker.is_running
    return finished[0]


# -- the three tasks -------------------------------------------------------------------------
def test_denoise_makes_a_better_new_layer_and_keeps_the_input(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    clean, noisy = noisy_cells((24, 32), photons=5, seed=0)
    reference = clean.astype(np.float64) * 4095 * 0.8 + 100  # the noise-free image in camera counts
    layer = viewer.add_image(noisy, name="cells", scale=(0.5, 0.25), translate=(3.0, -2.0),
                             units=("um", "um"), axis_labels=("y", "x"))
    before = layer.data.copy()
    w = make_widget(DenoiseWidget, viewer, layer, iterations=40, preview_every=10)
    w.overrides = {"ema": 0.9}  # a short average, for a short fit

    previews: list[float] = []  # output layer content at each preview, seen during the run

    def on_snapshot(snap):
        if snap.ema is not None:
            previews.append(float(np.abs(w.output_layer.data).max()))

    w.run_finished.connect(lambda _layer: None)
    worker = w.run()
    assert worker is not None, w.status.value
    assert w.output_layer is not None and w.output_layer in viewer.layers  # created at the start
    assert w.output_layer is not layer
    worker.yielded.connect(on_snapshot)
    qtbot.waitUntil(lambda: not w.running, timeout=FIT_TIMEOUT)
    out = w.output_layer

    assert out.name == "cells denoised"
    assert out.data.shape == noisy.shape and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert tuple(str(u) for u in out.units) == tuple(str(u) for u in layer.units)
    assert tuple(out.axis_labels) == ("y", "x")
    assert len(previews) >= 3 and all(p > 0 for p in previews)  # live preview before the end
    gain = psnr(out.data, reference, 4095 * 0.8) - psnr(noisy, reference, 4095 * 0.8)
    assert gain > 1.0, gain
    assert layer.data.dtype == before.dtype and layer.data.tobytes() == before.tobytes()
    assert out.metadata["napari_dip"]["task"] == "denoise" and not out.metadata["napari_dip"]["cancelled"]
    assert w.progress.value == 40 and w.progress.max == 40
    assert w.run_button.enabled and not w.cancel_button.enabled


def test_inpaint_fills_only_the_labelled_pixels(qtbot, viewer):
    from napari_dip.widgets import InpaintWidget

    clean = cells((24, 32), n_cells=4, seed=2)
    mask = np.zeros(clean.shape, np.uint8)
    mask[8:14, 10:18] = 1
    mask[20, :] = 3  # any nonzero label is filled in
    damaged = np.where(mask > 0, 0.0, clean).astype(np.float32)
    layer = viewer.add_image(damaged, name="damaged")
    labels = viewer.add_labels(mask, name="holes")
    before_image, before_mask = damaged.copy(), mask.copy()
    w = make_widget(InpaintWidget, viewer, layer, iterations=50, mask=labels)
    out = run_to_end(qtbot, w)

    holes = mask > 0
    assert out.name == "damaged inpainted" and out.data.shape == clean.shape
    np.testing.assert_array_equal(out.data[~holes], damaged[~holes])  # known pixels kept exactly
    assert np.abs(out.data[holes]).min() > 0  # every hole filled in
    assert psnr(out.data[holes], clean[holes], 1.0) > psnr(damaged[holes], clean[holes], 1.0) + 3
    assert layer.data.tobytes() == before_image.tobytes() and labels.data.tobytes() == before_mask.tobytes()


def test_super_resolve_upsamples_and_keeps_the_world_extent(qtbot, viewer):
    from napari_dip.widgets import SuperResolveWidget

    high = cells((24, 32), n_cells=3, seed=3)
    low = high.reshape(12, 2, 16, 2).mean(axis=(1, 3))
    nearest = np.repeat(np.repeat(low, 2, axis=0), 2, axis=1)
    layer = viewer.add_image(low, name="low", scale=(2.0, 2.0), translate=(10.0, 20.0))
    w = make_widget(SuperResolveWidget, viewer, layer, iterations=120, factor=2, preview_every=40)
    w.overrides = {"ema": 0.9, "reg_noise_std": 0.0}  # converge fast, for a short fit
    out = run_to_end(qtbot, w)

    assert out.name == "low x2 super-resolved"
    assert out.data.shape == (24, 32) and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, (1.0, 1.0))
    # output pixel 0 is centred a quarter input pixel (0.5 world units) before input pixel 0
    np.testing.assert_allclose(out.translate, (9.5, 19.5))
    assert psnr(out.data, high, 1.0) > psnr(nearest, high, 1.0), "no better than pixel replication"


@pytest.mark.parametrize(("shape", "dtype", "rgb"), [
    ((16, 20, 3), np.uint8, True),       # RGB
    ((3, 16, 20), np.float32, False),    # Z, Y, X stack
    ((2, 2, 16, 20), np.uint16, False),  # T, Z, Y, X stack
])
def test_layouts_give_the_same_layout_back(qtbot, viewer, shape, dtype, rgb):
    from napari_dip.widgets import DenoiseWidget

    data = (np.random.default_rng(0).random(shape) * (255 if dtype == np.uint8 else 1000)).astype(dtype)
    layer = viewer.add_image(data, rgb=rgb)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=3, preview_every=1)
    slices_seen: set[int] = set()
    w.run_finished.connect(lambda _l: None)
    worker = w.run()
    worker.yielded.connect(lambda snap: slices_seen.add(snap.slice_index))
    qtbot.waitUntil(lambda: not w.running, timeout=FIT_TIMEOUT)
    out = w.output_layer
    n_planes = int(np.prod(shape[:-3 if rgb else -2]))
    assert out.rgb == rgb and out.data.shape == shape and out.data.dtype == np.float32
    assert (not w.slices.native.isHidden()) == (n_planes > 1) and w.slices.value == n_planes
    assert slices_seen == set(range(n_planes))
    planes = out.data.reshape(n_planes, -1) if not rgb else out.data.reshape(1, -1)
    assert (np.abs(planes).max(axis=1) > 0).all()  # every plane fitted
    assert layer.data.tobytes() == data.tobytes()


# -- cancel and close --------------------------------------------------------------------------
def long_stack_run(viewer, widget_cls=None):
    from napari_dip.widgets import DenoiseWidget

    data = np.random.default_rng(1).random((4, 24, 32)).astype(np.float32)
    layer = viewer.add_image(data, name="stack")
    w = make_widget(widget_cls or DenoiseWidget, viewer, layer, iterations=100_000, preview_every=2)
    worker = w.run()
    assert worker is not None, w.status.value
    return w, worker, layer, data


def test_cancel_stops_within_one_iteration_and_keeps_the_best_estimate(qtbot, viewer):
    w, worker, layer, data = long_stack_run(viewer)
    job = w.job
    qtbot.waitUntil(lambda: w.progress.value >= 6, timeout=FIT_TIMEOUT)
    at_cancel = job.current.iteration
    w.cancel_button.clicked.emit()  # like a click; the button's signal is connected to cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=10_000)
    assert not worker.is_running
    assert job.current.iteration - at_cancel <= 1
    out = w.output_layer
    assert out is not None and out in viewer.layers and out.data.shape == data.shape
    assert np.isfinite(out.data).all()
    assert np.abs(out.data[0]).max() > 0  # the plane being fitted: its best estimate so far
    assert not out.data[1:].any()  # planes never reached are 0
    meta = out.metadata["napari_dip"]
    assert meta["cancelled"] and meta["planes_done"] == 1
    assert "cancelled" in w.status.value
    assert w.run_button.enabled and not w.cancel_button.enabled


def test_removing_the_dock_widget_stops_the_worker(qtbot, viewer):
    w, worker, _layer, _data = long_stack_run(viewer)
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=FIT_TIMEOUT)
    viewer.window.remove_dock_widget(w.native)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    # the widget hears of the end through the worker's finished signal, in the event loop
    qtbot.waitUntil(lambda: not w.running, timeout=10_000)


def test_closing_the_viewer_stops_the_worker(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    w, worker, _layer, _data = long_stack_run(viewer)
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=FIT_TIMEOUT)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)


def test_removing_the_output_layer_cancels_the_run(qtbot, viewer):
    w, worker, _layer, _data = long_stack_run(viewer)
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=FIT_TIMEOUT)
    viewer.layers.remove(w.output_layer)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    assert w.output_layer is None and len(viewer.layers) == 1


# -- errors ----------------------------------------------------------------------------------
def test_no_image_layer_is_a_notification(viewer, errors):
    from napari_dip.widgets import DenoiseWidget

    w = DenoiseWidget(viewer)
    assert w.image.value is None
    assert w.run() is None
    assert len(errors) == 1 and "no image layer selected" in errors[0]
    assert "no image layer selected" in w.status.value
    assert len(viewer.layers) == 0 and w.run_button.enabled


@pytest.mark.parametrize(("mask_shape", "fill", "message"), [
    ((24, 31), True, "fits neither one plane"),
    ((24, 32), False, "the mask is empty"),
    (None, False, "no mask selected"),
])
def test_bad_masks_are_notifications(viewer, errors, mask_shape, fill, message):
    from napari_dip.widgets import InpaintWidget

    layer = viewer.add_image(np.random.default_rng(0).random((24, 32)).astype(np.float32))
    w = InpaintWidget(viewer)
    w.image.value = layer
    if mask_shape is not None:
        mask = np.zeros(mask_shape, np.uint8)
        mask[:4, :4] = int(fill)
        w.mask.value = viewer.add_labels(mask)
    n_layers = len(viewer.layers)
    assert w.run() is None
    assert len(errors) == 1 and message in errors[0], errors
    assert len(viewer.layers) == n_layers  # no output layer left behind


def test_errors_inside_the_worker_are_notifications(qtbot, viewer, errors, monkeypatch):
    """Out of memory mid-fit, and a RuntimeError (which superqt would otherwise swallow)."""
    from napari_dip.widgets import DenoiseWidget

    fit = importlib.import_module("napari_dip.core.fit")

    layer = viewer.add_image(np.random.default_rng(0).random((24, 32)).astype(np.float32), name="img")
    original = fit.Fitter.steps
    failures = iter([fit.DIPMemoryError("out of memory on cuda: use the 'fast' preset"),
                     RuntimeError("CUDA error: an illegal memory access")])

    def failing_steps(self):
        gen = original(self)
        for _ in range(3):
            yield next(gen)
        raise next(failures)

    monkeypatch.setattr(fit.Fitter, "steps", failing_steps)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=20, preview_every=1)
    for expected in ("out of memory", "illegal memory access"):
        out = run_to_end(qtbot, w)
        assert errors and expected in errors[-1] and errors[-1].startswith("Denoising failed")
        assert "failed" in w.status.value and w.run_button.enabled
        assert out is not None and np.abs(out.data).max() > 0  # the partial result is kept
    assert len(errors) == 2


def test_bad_device_is_a_notification(viewer, errors):
    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(np.zeros((24, 32), np.float32))
    w = DenoiseWidget(viewer)
    w.image.value = layer
    assert w.device.choices == tuple(__import__("napari_dip.core.devices", fromlist=["x"]).available_devices())
    w.overrides = {"no_such_setting": 1}
    assert w.run() is None
    assert errors and "unknown setting" in errors[-1]


# -- controls ---------------------------------------------------------------------------------
def test_controls_follow_layers_and_presets(viewer):
    from napari_dip.core.settings import PRESETS
    from napari_dip.widgets import InpaintWidget

    w = InpaintWidget(viewer)
    assert w.image.choices == (None,) and w.mask.choices == (None,)  # nullable: nothing selected
    img = viewer.add_image(np.zeros((8, 8)), name="a")
    lab = viewer.add_labels(np.zeros((8, 8), np.uint8), name="m")
    assert w.image.choices == (None, img) and w.mask.choices == (None, lab)
    assert w.image.value is img and w.mask.value is lab  # empty boxes pick up new layers
    w.preset.value = "paper"
    assert w.iterations.value == PRESETS["paper"]["inpaint"].iterations
    w.preset.value = "fast"
    assert w.iterations.value == PRESETS["fast"]["inpaint"].iterations
    w.iterations.value = 123
    w.preset.value = "paper"
    assert w.iterations.value == 123  # a value the user chose is kept
    w.auto_stop.value = False
    assert w.iterations.label == "iterations"
    assert w.options().precision == "auto"
    w.precision.value = "bf16"
    assert w.options().precision == "bf16"
    viewer.layers.remove(img)
    assert w.image.choices == (None,) and w.image.value is None


# -- plugin ----------------------------------------------------------------------------------
def test_manifest_widgets_and_sample_data(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget, InpaintWidget, SuperResolveWidget

    for name, cls in (("Denoise", DenoiseWidget), ("Inpaint", InpaintWidget),
                      ("Super-resolve", SuperResolveWidget)):
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-dip", name)
        assert isinstance(widget, cls)
    viewer.open_sample("napari-dip", "damaged_stack")
    viewer.open_sample("napari-dip", "noisy_cells")
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds == {"damaged stack": "Image", "damage mask": "Labels", "noisy cells": "Image"}
    assert viewer.layers["damaged stack"].data.shape == viewer.layers["damage mask"].data.shape == (5, 96, 96)
    assert viewer.layers["noisy cells"].data.dtype == np.uint16


def test_npe2_validates_the_manifest():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-dip"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


def test_import_napari_dip_stays_light():
    code = ("import sys, napari_dip; heavy = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PySide2', "
            "'PyQt6', 'PySide6', 'magicgui') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"import napari_dip loaded {result.stdout.strip()} {result.stderr}"
    assert time.monotonic() - start < 60
