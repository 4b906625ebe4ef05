"""Distributed, resumable stack jobs (napari_dip.distributed) against the in-process core.

All fits are tiny (24x32 planes, the 'fast' preset, 20 iterations, CPU, one torch thread), so
results are compared for exact equality: a plane's fit depends only on (plane, global intensity
map, settings, seed), and on the CPU with one thread (the same number of threads matters) the same
fit is bit-identical in any process.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")
pytest.importorskip("zarr")
torch = pytest.importorskip("torch")

import zarr  # noqa: E402

from napari_dip.core.restore import Restoration  # noqa: E402
from napari_dip.distributed import LazyTiff, StackJob, StoreMismatchError, restore_stack  # noqa: E402
from napari_dip.distributed import plane as plane_module  # noqa: E402
from napari_dip.distributed.store import read_done, read_runs  # noqa: E402

FIT = dict(iterations=20, preset="fast", device="cpu", seed=0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """6 noisy uint16 planes of 24x32 with different brightness (so the global map matters)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:24, 0:32]
    base = 800 + 400 * np.sin(xx / 5.0) * np.cos(yy / 4.0)
    planes = [base * (1 + 0.3 * k) + rng.normal(0, 60, base.shape) for k in range(6)]
    return np.clip(planes, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def reference(stack) -> np.ndarray:
    """The in-process core result for the whole stack."""
    return Restoration("denoise", stack, **FIT).run()


@pytest.fixture(scope="module")
def tiff_path(stack, tmp_path_factory):
    import tifffile

    path = tmp_path_factory.mktemp("input") / "stack.tif"
    tifffile.imwrite(path, stack)
    return path


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def _fit_counter(monkeypatch) -> list[int]:
    """Count in-process plane fits (PlaneRestoration.fit_plane calls)."""
    calls: list[int] = []
    original = plane_module.PlaneRestoration.fit_plane

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(plane_module.PlaneRestoration, "fit_plane", counting)
    return calls


# -- the global intensity map and checks mirror the core -------------------------------------------
@pytest.mark.parametrize("case", ["gray", "channels", "rgb", "inpaint", "flat"])
def test_intensity_map_matches_core(case):
    rng = np.random.default_rng(0)
    kw: dict = {}
    task = "denoise"
    if case == "gray":
        img = rng.integers(0, 4000, (3, 2, 8, 9)).astype(np.uint16)
    elif case == "channels":  # per-channel map, channel axis in front of the stack axis
        img = np.stack([rng.normal(10, 1, (4, 8, 9)), rng.normal(-300, 50, (4, 8, 9))]).astype(np.float32)
        kw = dict(channel_axis=0)
    elif case == "rgb":  # joint map over colours
        img = rng.uniform(0, 1, (2, 8, 9, 3)).astype(np.float32)
    elif case == "inpaint":  # NaN and extremes under the mask do not count
        img = rng.normal(0, 1, (3, 8, 9)).astype(np.float32)
        mask = np.zeros((3, 8, 9), bool)
        mask[:, 2:4, 3:6] = True
        img[0, 2, 3], img[1, 3, 5], img[2, 2, 4] = np.nan, 1e6, -1e6
        task, kw = "inpaint", dict(mask=mask)
    else:  # a constant image maps to 0.5
        img = np.full((2, 8, 9), 7, np.int16)
    core = Restoration(task, img, preset="fast", **kw).intensity
    job = StackJob(task, img, preset="fast", **kw)
    np.testing.assert_array_equal(job.intensity.low, core.low)
    np.testing.assert_array_equal(job.intensity.scale, core.scale)


def test_errors_mirror_core():
    img = np.ones((2, 8, 9), np.float32)
    img[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or Inf"):
        StackJob("denoise", img)
    mask = np.zeros((2, 8, 9), bool)
    mask[1] = True
    with pytest.raises(ValueError, match="every pixel of slice 1"):
        StackJob("inpaint", np.ones((2, 8, 9), np.float32), mask=mask)
    with pytest.raises(ValueError, match="warm_start"):
        StackJob("denoise", np.ones((2, 8, 9)), warm_start=True)
    with pytest.raises(ValueError, match="neighbour_planes"):
        StackJob("denoise", np.ones((2, 8, 9)), neighbour_planes=1)
    with pytest.raises(TypeError, match="unknown setting"):
        StackJob("denoise", np.ones((2, 8, 9)), not_a_setting=1)


# -- in-process: exact, lazy, resumable ------------------------------------------------------------
def test_inpaint_dask_input_matches_core():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    img = rng.normal(50, 5, (3, 24, 32)).astype(np.float32)
    mask = np.zeros(img.shape, bool)
    mask[0, 5:9, 10:20] = True
    mask[2, 12:15, 3:8] = True  # plane 1 has nothing to fill: copied through, not fitted
    img[mask] = np.nan
    ref = Restoration("inpaint", img, mask=mask, **FIT).run()
    events = []
    out = restore_stack("inpaint", da.from_array(img, chunks=(2, 12, 32)), mask=da.from_array(mask, chunks=(3, 24, 16)),
                        on_plane_done=events.append, **FIT)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, ref)
    assert [e.skipped for e in sorted(events, key=lambda e: e.index)] == [False, True, False]


def test_super_resolve_rgb_matches_core():
    img = np.random.default_rng(2).uniform(0, 255, (2, 12, 16, 3)).astype(np.uint8)
    kw = dict(FIT, iterations=10, factor=2)
    ref = Restoration("super_resolve", img, **kw).run()
    out = restore_stack("super_resolve", img, **kw)
    assert out.shape == (2, 24, 32, 3)
    np.testing.assert_array_equal(out, ref)


def test_interrupted_job_resumes_without_refitting(stack, reference, tiff_path, tmp_path, monkeypatch):
    fits = _fit_counter(monkeypatch)
    reads: list[tuple] = []
    original_getitem = LazyTiff.__getitem__

    def recording(self, key):
        arr = original_getitem(self, key)
        reads.append(arr.shape)
        return arr

    monkeypatch.setattr(LazyTiff, "__getitem__", recording)
    store = tmp_path / "out.zarr"
    seen: list[int] = []

    def crash_after_two(event):
        seen.append(event.index)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the user (or the machine) stops the job after two planes

    with pytest.raises(KeyboardInterrupt):
        restore_stack("denoise", tiff_path, store=store, on_plane_done=crash_after_two, **FIT)
    assert len(fits) == 2
    assert read_done(str(store), 6).tolist() == [True, True] + [False] * 4
    partial = zarr.open_array(store, path="0", mode="r")[:]
    np.testing.assert_array_equal(partial[:2], reference[:2])
    assert np.isnan(partial[2:]).all()
    # the input was read one plane at a time, never whole
    assert reads and all(np.prod(shape) <= 24 * 32 for shape in reads)

    events = []
    out = restore_stack("denoise", tiff_path, store=store, on_plane_done=events.append, **FIT)
    assert len(fits) == 6  # 2 + the 4 missing planes: finished planes were not refitted
    assert [(e.index, e.resumed) for e in events[:2]] == [(0, True), (1, True)]
    assert sorted(e.index for e in events) == list(range(6))
    assert read_runs(str(store), 6).tolist() == [1, 1, 2, 2, 2, 2]
    np.testing.assert_array_equal(out[:], reference)
    meta = zarr.open_group(store, mode="r").attrs["napari_dip"]
    assert meta["complete"] and meta["runs"] == 2

    # a third run has nothing to do
    out = restore_stack("denoise", tiff_path, store=store, **FIT)
    assert len(fits) == 6
    # a different job (seed, or input content) is refused, the store is left untouched
    with pytest.raises(StoreMismatchError, match="different job"):
        restore_stack("denoise", tiff_path, store=store, **dict(FIT, seed=1))
    changed = stack.copy()
    changed[3, 0, 0] += 1
    with pytest.raises(StoreMismatchError):
        restore_stack("denoise", changed, store=store, **FIT)
    with pytest.raises(FileExistsError):
        restore_stack("denoise", tiff_path, store=store, resume=False, **FIT)
    np.testing.assert_array_equal(zarr.open_array(store, path="0", mode="r")[:], reference)


# -- on a local cluster of 2 worker processes ------------------------------------------------------
def test_cluster_matches_in_process(client, reference, tiff_path, tmp_path):
    events = []
    out = restore_stack("denoise", str(tiff_path), store=tmp_path / "out.zarr", scheduler=client,
                        on_plane_done=events.append, **FIT)
    np.testing.assert_array_equal(out[:], reference)  # bit-identical to the in-process run
    assert sorted(e.index for e in events) == list(range(6))
    workers = {e.worker for e in events}
    assert workers <= set(client.scheduler_info()["workers"]) and len(workers) == 2  # both did work
    assert all(e.history["iterations"] == 20 for e in events)


def test_killed_worker_loses_and_duplicates_nothing(client, reference, stack, tmp_path):
    store = tmp_path / "out.zarr"
    killed: dict = {}

    def kill_a_busy_worker(event):
        if killed:
            return
        running = client.run(lambda dask_worker: [ts.key for ts in dask_worker.state.executing])
        pids = client.run(os.getpid)
        for address, keys in running.items():
            if keys:
                os.kill(pids[address], signal.SIGKILL)  # mid-fit: the plane's task dies with it
                killed.update(address=address, plane=int(str(keys[0]).rsplit("-", 1)[1]))
                return

    events = []
    out = restore_stack("denoise", stack, store=store, scheduler=client,
                        on_plane_done=lambda e: (events.append(e), kill_a_busy_worker(e)), **FIT)
    assert killed, "no worker was busy when the first plane landed"
    indices = [e.index for e in events]
    assert sorted(indices) == list(range(6))  # every plane exactly once
    redone = next(e for e in events if e.index == killed["plane"])
    assert redone.worker != killed["address"]  # the lost task ran again elsewhere
    assert read_done(str(store), 6).all()
    np.testing.assert_array_equal(out[:], reference)


# -- the store is an OME-Zarr image that viewers open ----------------------------------------------
@pytest.fixture()
def calibrated_store(stack, tmp_path):
    """A super-resolved (x2) store of an ImageJ time series at 0.25 um per pixel, 2.5 s per frame."""
    import tifffile

    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, stack[:3], imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 2.5})
    store = tmp_path / "movie-dip.zarr"
    out = restore_stack("super_resolve", src, store=store, factor=2, **dict(FIT, iterations=3))
    return store, np.asarray(out[:])


def _npe2_read(path, plugin):
    import npe2

    npe2.PluginManager.instance().discover()
    layers = npe2.read([str(path)], stack=False, plugin_name=plugin)
    assert len(layers) == 1
    data, meta = layers[0][0], (layers[0][1] if len(layers[0]) > 1 else {})
    return (data[0] if isinstance(data, list) else data), meta


def test_store_has_ngff_scale_and_bookkeeping(calibrated_store):
    store, out = calibrated_store
    assert out.shape == (3, 48, 64) and np.isfinite(out).all()
    attrs = dict(zarr.open_group(store, mode="r").attrs)
    ms = attrs["ome"]["multiscales"][0]
    assert attrs["ome"]["version"] == "0.5"
    assert [(a["name"], a.get("type"), a.get("unit")) for a in ms["axes"]] == [
        ("t", "time", "second"), ("y", "space", "micrometer"), ("x", "space", "micrometer")]
    assert ms["datasets"] == [{"path": "0", "coordinateTransformations": [{"type": "scale",
                                                                          "scale": [2.5, 0.125, 0.125]}]}]
    assert list(zarr.open_group(store, mode="r").keys()) == ["0"]  # one array: nothing else for readers to trip on
    assert attrs["napari_dip"]["planes"] == [1, 1, 1] and attrs["napari_dip"]["complete"]


def test_napari_builtin_reader_opens_the_store(calibrated_store):
    pytest.importorskip("napari")
    store, out = calibrated_store
    data, _ = _npe2_read(store, "napari")  # napari's own reader: one image (its zarr reader ignores NGFF scale)
    np.testing.assert_array_equal(np.asarray(data), out)


def test_ome_zarr_reader_opens_the_store_with_its_scale(calibrated_store):
    pytest.importorskip("napari_ome_zarr")
    store, out = calibrated_store
    data, meta = _npe2_read(store, "napari-ome-zarr")
    np.testing.assert_array_equal(np.asarray(data), out)
    assert list(meta["scale"]) == pytest.approx([2.5, 0.125, 0.125])
    assert tuple(meta["units"]) == ("second", "micrometer", "micrometer")
    assert tuple(meta["axis_labels"]) == ("t", "y", "x")


def test_store_as_input_keeps_its_scale(calibrated_store, tmp_path):
    store, out = calibrated_store
    second = tmp_path / "again.zarr"
    again = restore_stack("denoise", store, store=second, **dict(FIT, iterations=2))
    assert again.shape == out.shape
    ms = zarr.open_group(second, mode="r").attrs["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.5, 0.125, 0.125]


def test_cli_outputs_keep_the_pixel_size(tmp_path, client):
    """``-o OUT.zarr`` writes the scale (and a store as input passes it on); ``--scheduler`` with a
    ``.tif`` output writes it into the TIFF."""
    import tifffile

    from napari_dip.cli import main
    from napari_dip.io import read_calibration

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.full((2, 12, 16), 500, np.uint16) + np.arange(16, dtype=np.uint16), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "ZYX", "unit": "um", "spacing": 1.5})
    args = ["--iterations", "2", "--preset", "fast", "--device", "cpu", "--quiet"]
    assert main(["denoise", str(src), "-o", str(tmp_path / "out.zarr"), *args]) == 0
    cal = read_calibration(tmp_path / "out.zarr")
    assert cal.spacing == pytest.approx({"Z": 1.5, "Y": 0.5, "X": 0.5}) and cal.axes == "ZYX"
    assert main(["super-resolve", str(tmp_path / "out.zarr"), "--factor", "2", "-o", str(tmp_path / "big.zarr"),
                 *args]) == 0
    assert read_calibration(tmp_path / "big.zarr").pixel_size == pytest.approx((0.25, 0.25))
    assert main(["denoise", str(src), "-o", str(tmp_path / "out.tif"), "--scheduler", client.scheduler.address,
                 *args]) == 0
    cal = read_calibration(tmp_path / "out.tif")
    assert cal.kind == "imagej" and cal.spacing == pytest.approx({"Z": 1.5, "Y": 0.5, "X": 0.5})


def test_old_store_format_is_refused(tmp_path, stack):
    store = tmp_path / "old.zarr"
    group = zarr.open_group(store, mode="w")
    group.create_array("data", shape=(2, 4, 4), dtype="float32")
    group.attrs["napari_dip"] = {"format": 1, "fingerprint": "x"}
    with pytest.raises(ValueError, match="another version of napari-dip"):
        restore_stack("denoise", stack[:2], store=store, **FIT)
    assert "data" in zarr.open_group(store, mode="r")  # untouched
