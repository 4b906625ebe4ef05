"""Shared fixtures: the real data folder (skipped when absent) and small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# small test images gain nothing from intra-op threads, and CI has 2 cores for everything
torch.set_num_threads(int(os.environ.get("NAPARI_DIP_TEST_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


def read_png(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


@pytest.fixture()
def smooth_rgb() -> np.ndarray:
    """A smooth 37x45 RGB float image in [0, 1] (odd, not a multiple of 32)."""
    yy, xx = np.mgrid[0:37, 0:45] / 36.0
    return np.stack([0.5 + 0.3 * np.sin(4 * xx) * np.cos(3 * yy), 0.2 + 0.6 * xx, 0.8 - 0.5 * yy],
                    axis=-1).astype(np.float32)


def add_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return (img + np.random.default_rng(seed).normal(0, sigma, img.shape)).astype(np.float32)


def smooth_gray(size: int = 32) -> np.ndarray:
    """A smooth grayscale float image in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    return (0.5 + 0.35 * np.sin(5 * xx + 2 * yy) * np.cos(3 * yy)).astype(np.float32)


def make_widget(widget_cls, viewer, layer, iterations: int, **values):
    """A docked napari-dip widget on ``layer`` set up for a short fixed-length CPU fit; other
    controls are set from ``values`` (``name=value``)."""
    w = widget_cls(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = layer
    w.preset.value = "fast"
    w.device.value = "cpu"
    w.auto_stop.value = False
    w.iterations.value = iterations
    for name, value in values.items():
        getattr(w, name).value = value
    return w


def start_and_wait(qtbot, w, timeout: int = 60_000, during=None):
    """Click ``w``'s Run button and wait for its ``run_finished`` signal; returns the output layer.

    ``during(update)`` is called with each update the worker sends (on the GUI thread), e.g. to
    click Cancel at a given point.
    """
    finished: list = []
    w.run_finished.connect(finished.append)
    w.run_button.native.click()
    assert w.worker is not None and w.running, w.status.value
    if during is not None:
        w.worker.yielded.connect(during)
    qtbot.waitUntil(lambda: bool(finished), timeout=timeout)
    w.run_finished.disconnect(finished.append)
    return finished[0]


# -- napari fixtures (the GUI test modules; napari is imported only when a test asks for them) ------
@pytest.fixture()
def viewer(make_napari_viewer):
    return make_napari_viewer()


def _record_notifications(keep):
    """Connect a recorder of napari notifications; yields the list ``keep(notification)`` fills."""
    from napari.utils.notifications import notification_manager

    seen: list = []

    def record(notification):
        item = keep(notification)
        if item is not None:
            seen.append(item)

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture()
def notes():
    """``(severity, message)`` of the notifications dispatched during the test."""
    yield from _record_notifications(lambda n: (str(n.severity), str(n.message)))


@pytest.fixture()
def errors():
    """Messages of the error notifications dispatched during the test."""
    from napari.utils.notifications import NotificationSeverity

    yield from _record_notifications(lambda n: str(n.message) if n.severity == NotificationSeverity.ERROR else None)
