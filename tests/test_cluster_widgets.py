"""Stack jobs from the Denoise / Inpaint / Super-resolve widgets: an output .zarr store and a dask
scheduler in the Advanced section (napari_dip.widgets.stackjob, napari_dip.glue.stackjob).

The cluster is a ``distributed.LocalCluster`` of 2 worker processes on loopback; planes are tiny
(24x32, the 'fast' preset, a few iterations, one torch thread per task), so the file runs in a
couple of minutes. Checked as a user would: planes land in the output layer as they finish, the
store carries the layer's pixel size, a cancelled job resumes where it stopped, cancel stops the
job cleanly, and a scheduler nobody answers at is a plain message with nothing lost.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("dask")
pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from napari.utils.notifications import NotificationSeverity  # noqa: E402

from conftest import make_widget, start_and_wait  # noqa: E402
from napari_dip.distributed.store import read_runs  # noqa: E402
from napari_dip.io import ngff_calibration  # noqa: E402
from napari_dip.samples import noisy_cells  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT = 240_000  # ms: worker processes import torch on a loaded 2-core machine


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as c:
        yield c


def stack(planes: int = 4, shape=(24, 32)) -> np.ndarray:
    return np.stack([noisy_cells(shape, photons=20, seed=i)[1] for i in range(planes)]).astype(np.float32)


def stack_widget(cls, viewer, data, iterations: int = 6, **values):
    layer = viewer.add_image(data, name="cells", scale=(2.0, 0.5, 0.5), units=("um", "um", "um"),
                             axis_labels=("z", "y", "x"))
    return make_widget(cls, viewer, layer, iterations, **values), layer


def test_planes_land_in_the_layer_as_they_finish_on_the_cluster(qtbot, viewer, cluster, tmp_path):
    from napari_dip.widgets import DenoiseWidget

    data = stack(4)
    store = tmp_path / "cells-dip.zarr"
    w, layer = stack_widget(DenoiseWidget, viewer, data, scheduler=cluster.scheduler_address, store=store)
    # (plane, whether it is in the output layer, finite planes in the layer) at each landing
    landed: list[tuple[int, bool, int]] = []

    def during(u):
        if u.kind == "plane":
            shown = np.isfinite(np.asarray(w.output_layer.data).reshape(4, -1)).all(axis=1)
            landed.append((u.event.index, bool(shown[u.event.index]), int(shown.sum())))

    out = start_and_wait(qtbot, w, TIMEOUT, during=during)

    assert sorted(p for p, _, _ in landed) == [0, 1, 2, 3]
    # each plane is in the layer when it lands (a later one may already be too: the workers write the
    # store, and on a loaded machine the next plane can reach it before this update reaches the GUI)
    assert all(shown for _, shown, _ in landed), landed
    counts = [n for _, _, n in landed]
    assert counts == sorted(counts) and all(n >= k for k, n in enumerate(counts, 1)), landed
    assert out.name == "cells denoised" and out.data.shape == data.shape
    on_disk = np.asarray(zarr.open_group(str(store), mode="r")["0"])
    np.testing.assert_array_equal(np.asarray(out.data), on_disk)
    assert np.isfinite(on_disk).all()
    np.testing.assert_allclose(out.scale, layer.scale)
    meta = out.metadata["napari_dip"]
    job = meta["stack_job"]
    assert meta["state"] == "finished" and meta["planes_in_layer"] == [0, 1, 2, 3] and meta["preset"] == "fast"
    assert job["store"] == str(store.resolve()) and job["scheduler"] == cluster.scheduler_address
    assert set(job["workers"].values()) <= set(cluster.scheduler.workers) and len(job["workers"]) == 4
    assert [p["ending"] for p in meta["planes"]] == ["fixed"] * 4 and all(p["iterations"] == 6 for p in meta["planes"])
    # the store carries the layer's calibration: axes z, y, x with their pixel size in micrometres
    cal = ngff_calibration(dict(zarr.open_group(str(store), mode="r").attrs))
    assert cal.axes == "ZYX" and cal.spacing == {"Z": 2.0, "Y": 0.5, "X": 0.5}
    assert cal.units == {"Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
    assert "stack job done" in w.status.value and "4 of 4 planes in the store" in w.status.value
    assert w.run_button.enabled and not w.running and layer.data.tobytes() == data.tobytes()


def test_a_cancelled_job_resumes_where_it_stopped(qtbot, viewer, cluster, tmp_path):
    from napari_dip.widgets import DenoiseWidget

    data = stack(8)
    store = tmp_path / "resume.zarr"
    w, layer = stack_widget(DenoiseWidget, viewer, data, iterations=40, scheduler=cluster.scheduler_address,
                            store=store)

    def cancel_at_first(u):
        if u.kind == "plane" and not w._stack_runner._run["control"].cancelled:
            w.cancel_button.native.click()

    first = start_and_wait(qtbot, w, TIMEOUT, during=cancel_at_first)
    meta = first.metadata["napari_dip"]
    kept = meta["stack_job"]["planes_in_store"]
    assert meta["state"] == "cancelled" and 1 <= len(kept) < 8, kept
    assert "cancelled" in w.status.value and f"{len(kept)} of 8 planes are in the store" in w.status.value
    assert "run it again with the same store to resume" in w.status.value
    np.testing.assert_array_equal(np.flatnonzero(read_runs(str(store), 8)), kept)
    shown = np.asarray(first.data)
    assert np.isfinite(shown[kept]).all()  # the landed planes are in the layer
    before = np.asarray(zarr.open_group(str(store), mode="r")["0"])[kept].copy()

    landed: list = []
    second = start_and_wait(qtbot, w, TIMEOUT, during=lambda u: u.kind == "plane" and landed.append(u.event))
    meta = second.metadata["napari_dip"]
    resumed = [e.index for e in landed if e.resumed]
    assert sorted(resumed) == kept and landed[:len(kept)] == [e for e in landed if e.resumed]  # resumed first
    assert sorted(e.index for e in landed if not e.resumed) == sorted(set(range(8)) - set(kept))
    assert meta["state"] == "finished" and meta["stack_job"]["run"] == 2
    assert meta["stack_job"]["planes_resumed"] == resumed
    runs = read_runs(str(store), 8)
    assert set(runs[kept]) == {1} and set(np.delete(runs, kept)) == {2}  # run 2 fitted only the others
    after = np.asarray(zarr.open_group(str(store), mode="r")["0"])
    np.testing.assert_array_equal(after[kept], before)  # the resumed planes were not refitted
    assert np.isfinite(after).all() and f"{len(kept)} planes" in w.status.value and "read from the store" in w.status.value


def test_cancel_stops_the_cluster_job_at_once(qtbot, viewer, cluster, tmp_path):
    """Planes of many iterations: a cancel right after the job is ready ends it long before any
    plane could finish, and nothing is recorded as done."""
    import time

    from napari_dip.widgets import DenoiseWidget

    store = tmp_path / "long.zarr"
    w, _layer = stack_widget(DenoiseWidget, viewer, stack(4), iterations=100_000,
                             scheduler=cluster.scheduler_address, store=store)
    clicked: list[float] = []

    def cancel_when_ready(u):
        if u.kind == "ready":
            clicked.append(time.monotonic())
            w.cancel_button.native.click()

    out = start_and_wait(qtbot, w, TIMEOUT, during=cancel_when_ready)
    ended = time.monotonic()
    assert clicked and ended - clicked[0] < 30, ended - clicked[0]  # not 4 x 100,000 iterations
    assert out is None and w.output_layer is None and len(viewer.layers) == 1  # nothing landed: no empty layer
    assert read_runs(str(store), 4).sum() == 0 and store.exists()  # the store stays, empty, resumable
    assert "cancelled" in w.status.value and "0 of 4 planes are in the store" in w.status.value
    assert w.outcome.state == "cancelled" and not w.running and w.run_button.enabled


def test_an_unreachable_scheduler_is_a_plain_message_and_nothing_is_lost(qtbot, viewer, notes, tmp_path):
    from napari_dip.widgets import DenoiseWidget

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    data = stack(3)
    store = tmp_path / "never.zarr"
    w, layer = stack_widget(DenoiseWidget, viewer, data, scheduler=address, store=store)
    w._stack_runner.connect_timeout = 2.0
    out = start_and_wait(qtbot, w, 60_000)

    assert out is None and len(viewer.layers) == 1 and layer.data.tobytes() == data.tobytes()
    assert not store.exists()  # nothing was written
    errors = [m for s, m in notes if s == str(NotificationSeverity.ERROR)]
    assert len(errors) == 1 and f"could not reach the dask scheduler at '{address}'" in errors[0], notes
    assert "Check the address" in errors[0] and "Traceback" not in errors[0]
    assert "could not reach the dask scheduler" in w.status.value
    assert w.outcome.state == "failed" and not w.outcome.built and w.run_button.enabled and not w.running


def test_super_resolution_and_inpainting_in_this_process_into_a_store(qtbot, viewer, tmp_path):
    """No scheduler: the planes are fitted here, one after the other, into a resumable store; the
    super-resolved store's pixel size is the layer's divided by the factor."""
    from napari_dip.widgets import InpaintWidget, SuperResolveWidget

    data = stack(2, shape=(12, 16))
    store = tmp_path / "sr.zarr"
    w, _layer = stack_widget(SuperResolveWidget, viewer, data, iterations=3, factor=2, store=store)
    out = start_and_wait(qtbot, w, TIMEOUT)
    assert out.data.shape == (2, 24, 32) and np.isfinite(np.asarray(out.data)).all()
    np.testing.assert_allclose(out.scale, (2.0, 0.25, 0.25))
    cal = ngff_calibration(dict(zarr.open_group(str(store), mode="r").attrs))
    assert cal.spacing == {"Z": 2.0, "Y": 0.25, "X": 0.25}
    meta = out.metadata["napari_dip"]
    assert meta["stack_job"]["scheduler"] is None and meta["stack_job"]["workers"] == {} or all(
        ":" in v for v in meta["stack_job"]["workers"].values())

    mask = np.zeros((2, 24, 32), np.uint8)
    mask[:, 8:12, 10:20] = 1
    labels = viewer.add_labels(mask, name="holes")
    w2, layer2 = stack_widget(InpaintWidget, viewer, stack(2), iterations=3, mask=labels,
                              store=tmp_path / "filled.zarr")
    out2 = start_and_wait(qtbot, w2, TIMEOUT)
    known = mask == 0
    np.testing.assert_array_equal(np.asarray(out2.data)[known], layer2.data[known])  # known pixels kept exactly


@pytest.mark.parametrize(("setup", "message"), [
    (dict(plane_mode="current"), "a stack job fits every plane"),
    (dict(warm_start=True), "turn warm start off"),
    (dict(neighbour_planes=1), "set neighbour planes to auto or 0"),  # auto (the default) runs: the test above
    (dict(store="out.tif"), "must be a folder ending in .zarr"),
])
def test_stack_job_options_that_do_not_apply_are_refused(viewer, notes, tmp_path, setup, message):
    from napari_dip.widgets import DenoiseWidget

    values = dict(setup)
    if "store" in values:
        values["store"] = tmp_path / values["store"]
    else:
        values["store"] = tmp_path / "x.zarr"
    w, _layer = stack_widget(DenoiseWidget, viewer, stack(2), **values)
    assert w.run() is None and not w.running and len(viewer.layers) == 1
    errors = [m for s, m in notes if s == str(NotificationSeverity.ERROR)]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "x.zarr").exists()


def test_the_stack_job_controls_are_in_advanced_and_only_in_the_restoration_widgets(viewer):
    from napari_dip.widgets import (
        BlindRestoreWidget,
        DenoiseWidget,
        EnhanceWidget,
        FlashNoFlashWidget,
        InpaintWidget,
        PreImageWidget,
        SuperResolveWidget,
    )

    for cls in (DenoiseWidget, InpaintWidget, SuperResolveWidget):
        w = cls(viewer)
        assert w.advanced.native.isAncestorOf(w.scheduler.native) and w.advanced.native.isAncestorOf(w.store.native)
        assert w.scheduler.value == "" and w.store.value is None and not w._stack_runner.requested
    for cls in (BlindRestoreWidget, EnhanceWidget, FlashNoFlashWidget, PreImageWidget):
        w = cls(viewer)
        assert w._stack_runner is None and not hasattr(w, "scheduler")


def test_the_noise_model_reaches_a_stack_job(viewer, tmp_path):
    from napari_dip.widgets import DenoiseWidget

    w, _layer = stack_widget(DenoiseWidget, viewer, stack(2), store=tmp_path / "cells-dip.zarr")
    w.noise_model.value = "poisson-gaussian"
    request = w._stack_runner.request()
    assert request.fit_kwargs["preset"].noise_model == "poisson-gaussian"
    w.overrides = {"noise_model": "auto"}  # a script's explicit override wins over the control
    assert w._stack_runner.request().fit_kwargs["preset"].noise_model == "auto"
