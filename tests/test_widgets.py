"""The napari widgets, driven as a user would (run under Xvfb): set controls, click the buttons,
wait for the run to end; outputs, live preview, plane control, honest end states, cancel, errors,
responsiveness, layout and the plugin manifest.

Every fit is tiny (24x32 or 64x64 pixels, the 'fast' preset, tens of iterations) so the file runs
in a few minutes on one CPU thread.
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

from napari.utils.notifications import NotificationSeverity  # noqa: E402

from conftest import make_widget, start_and_wait  # noqa: E402
from napari_dip.samples import cells, noisy_cells, psnr  # noqa: E402

pytestmark = pytest.mark.gui

FIT_TIMEOUT = 120_000  # ms; generous for a loaded CI machine, a fit here takes a few seconds


def stack_layer(viewer, planes: int = 3, shape=(24, 32), name: str = "stack"):
    data = np.stack([noisy_cells(shape, photons=20, seed=i)[1] for i in range(planes)]).astype(np.float32)
    return viewer.add_image(data, name=name), data


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
    previews: list[float] = []  # the output layer's content at each preview, seen during the run
    at_start: list[bool] = []

    def during(update):
        if not at_start:
            at_start.append(True)
        if update.preview is not None:
            previews.append(float(np.nanmax(np.abs(w.output_layer.data))))

    finished: list = []
    w.run_finished.connect(finished.append)
    w.run_button.native.click()
    out = w.output_layer
    assert out is not None and out in viewer.layers and out is not layer  # created at the start ...
    assert np.isnan(out.data).all()  # ... empty (drawn transparent), so the input shows through
    w.worker.yielded.connect(during)
    qtbot.waitUntil(lambda: bool(finished), timeout=FIT_TIMEOUT)

    assert finished == [out] and out.name == "cells denoised"
    assert out.data.shape == noisy.shape and out.data.dtype == np.float32 and np.isfinite(out.data).all()
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert tuple(str(u) for u in out.units) == tuple(str(u) for u in layer.units)
    assert tuple(out.axis_labels) == ("y", "x")
    assert len(previews) >= 2 and all(p > 0 for p in previews)  # live preview before the end
    gain = psnr(out.data, reference, 4095 * 0.8) - psnr(noisy, reference, 4095 * 0.8)
    assert gain > 1.0, gain
    assert layer.data.dtype == before.dtype and layer.data.tobytes() == before.tobytes()
    meta = out.metadata["napari_dip"]
    assert meta["task"] == "denoise" and meta["state"] == "finished" and not meta["cancelled"]
    assert meta["planes_fitted"] == [0] and meta["planes"][0]["ending"] == "fixed"
    assert w.progress.value == 40 and w.progress.max == 40
    assert w.run_button.enabled and not w.cancel_button.enabled
    assert "Ran the fixed 40 iterations" in w.status.value


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
    w = make_widget(InpaintWidget, viewer, layer, iterations=80, mask=labels)
    w.overrides = {"ema": 0.9}  # a short average, for a short fit
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)

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
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)

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
    planes_seen: set[int] = set()
    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=lambda u: planes_seen.add(u.plane))
    n_planes = int(np.prod(shape[:-3 if rgb else -2]))
    assert out.rgb == rgb and out.data.shape == shape and out.data.dtype == np.float32
    assert (not w.slices.native.isHidden()) == (n_planes > 1) and w.slices.value == n_planes
    assert planes_seen == set(range(n_planes))
    planes = out.data.reshape(n_planes, -1) if not rgb else out.data.reshape(1, -1)
    assert np.isfinite(planes).all() and (np.abs(planes).max(axis=1) > 0).all()  # every plane fitted
    assert layer.data.tobytes() == data.tobytes()


# -- plane control ---------------------------------------------------------------------------
def test_plane_controls_show_only_for_stacks(viewer):
    from napari_dip.widgets import DenoiseWidget

    flat = viewer.add_image(np.zeros((24, 32), np.float32), name="flat")
    stack, _ = stack_layer(viewer, planes=4)
    w = DenoiseWidget(viewer)

    def hidden(control) -> bool:
        return not control.native.isVisibleTo(w.native)

    stack_only = [w.plane_mode, w.follow, w.warm_start, w.neighbour_planes, w.stop_after_plane_button]
    w.image.value = flat
    assert all(hidden(c) for c in stack_only)
    w.image.value = stack
    assert not any(hidden(c) for c in stack_only)
    assert hidden(w.first_plane)  # the range only for 'range'
    w.plane_mode.value = "range"
    assert not hidden(w.first_plane) and w.last_plane.max == 4 and w.last_plane.value == 4
    w.image.value = flat
    assert all(hidden(c) for c in stack_only) and hidden(w.first_plane)


def test_a_plane_range_fits_only_those_planes_and_leaves_the_others_empty(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer, data = stack_layer(viewer, planes=4)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=4, preview_every=1)
    w.plane_mode.value = "range"
    w.first_plane.value, w.last_plane.value = 2, 3
    seen: set[int] = set()
    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=lambda u: seen.add(u.plane))
    assert seen == {1, 2}
    assert np.isfinite(out.data[1:3]).all() and np.isnan(out.data[[0, 3]]).all()
    meta = out.metadata["napari_dip"]
    assert meta["planes_selected"] == [1, 2] and meta["planes_fitted"] == [1, 2]
    assert meta["planes_not_fitted"] == [0, 3] and meta["history"][0] is None
    assert "Kept 2 of 4 planes (2-3)" in w.status.value
    assert layer.data.tobytes() == data.tobytes()


def test_current_plane_fits_the_plane_the_viewer_shows(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer, _ = stack_layer(viewer, planes=4)
    viewer.dims.set_current_step(0, 2)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=3, preview_every=1)
    w.plane_mode.value = "current"
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    meta = out.metadata["napari_dip"]
    assert meta["planes_fitted"] == [2] and np.isnan(out.data[[0, 1, 3]]).all()
    assert np.isfinite(out.data[2]).all()


@pytest.mark.parametrize("follow", [True, False])
def test_the_viewer_follows_the_plane_being_fitted(qtbot, viewer, follow):
    from napari_dip.widgets import DenoiseWidget

    layer, _ = stack_layer(viewer, planes=3)
    viewer.dims.set_current_step(0, 2)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=3, preview_every=1, follow=follow)
    shown: list[tuple[int, int]] = []
    start_and_wait(qtbot, w, FIT_TIMEOUT,
                   during=lambda u: shown.append((u.plane, int(viewer.dims.current_step[0]))))
    steps = {plane: step for plane, step in shown}
    if follow:
        assert steps == {0: 0, 1: 1, 2: 2}
    else:
        assert set(steps.values()) == {2}  # the user's view stays where it was


def test_cancel_right_after_plane_one_keeps_exactly_the_finished_planes(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer, _ = stack_layer(viewer, planes=3)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=20, preview_every=1)

    def during(u):
        if u.plane == 1 and u.snapshot.iteration >= 2:
            w.cancel_button.native.click()

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    assert np.isfinite(out.data[0]).all() and np.abs(out.data[0]).max() > 0
    assert np.isnan(out.data[1:]).all()  # plane 2's few-iteration estimate is not presented as done
    meta = out.metadata["napari_dip"]
    assert meta["state"] == "cancelled" and meta["planes_in_layer"] == [0] and meta["planes_done"] == 1
    assert meta["partial_plane"] == 1 and not meta["partial_kept"]
    assert "1 of 3 planes" in w.status.value and "of plane 2" in w.status.value
    assert "left out" in w.status.value
    assert w.slices.value == 1
    # the user may still keep it: it is added, flagged
    assert not w.keep_partial_button.native.isHidden()
    w.keep_partial_button.native.click()
    assert np.isfinite(out.data[1]).all() and np.isnan(out.data[2]).all()
    assert out.name.endswith("(not converged)") and out.metadata["napari_dip"]["planes_in_layer"] == [0, 1]
    assert w.keep_partial_button.native.isHidden()


def test_stop_after_this_plane_finishes_it_and_stops(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer, _ = stack_layer(viewer, planes=3)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=15, preview_every=1)

    def during(u):
        if u.plane == 0 and u.snapshot.iteration >= 3 and w.stop_after_plane_button.enabled:
            w.stop_after_plane_button.native.click()

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    meta = out.metadata["napari_dip"]
    assert meta["state"] == "stopped_after_plane" and meta["planes_fitted"] == [0]
    assert meta["planes"][0]["iterations"] == 15  # plane 1 ran to its end
    assert np.isfinite(out.data[0]).all() and np.isnan(out.data[1:]).all()
    assert "stopped after plane 1 as asked" in w.status.value and "1 of 3 planes" in w.status.value


# -- honest end states -----------------------------------------------------------------------
def test_the_stopping_rule_and_its_iteration_are_stated(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    _clean, noisy = noisy_cells((24, 32), photons=5, seed=0)
    layer = viewer.add_image(noisy, name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=3000, auto_stop=True, preview_every=0)
    w.overrides = {"stop_patience": 10, "min_iterations": 10, "stop_every": 5, "ema": 0.9}
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    record = out.metadata["napari_dip"]["planes"][0]
    assert record["ending"] == "rule" and record["rule"] == "holdout" and record["iterations"] < 3000
    assert (f"Stopped by the hold-out rule at iteration {record['iterations']}; estimate from iteration "
            f"{record['best_iteration']}") in w.status.value


def test_the_noise_model_control_reaches_the_fit_and_its_record(qtbot, viewer):
    from napari_dip.core.settings import Settings
    from napari_dip.widgets import DenoiseWidget

    _clean, noisy = noisy_cells((96, 96), photons=30, seed=0)  # gain 4095 * 0.8 / 30 = 109 counts per photon
    layer = viewer.add_image(noisy, name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=10, preview_every=0)
    assert w.noise_model in list(w.advanced) and w.noise_model.value == Settings.noise_model
    assert list(w.noise_model.choices) == ["auto", "gaussian", "poisson-gaussian"]
    w.noise_model.value = "poisson-gaussian"
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    meta = out.metadata["napari_dip"]
    noise = meta["planes"][0]["noise"]
    assert noise["model"] == "poisson-gaussian" and noise["requested"] == "poisson-gaussian"
    assert noise["source"] == "estimated" and 80 < noise["gain"] < 140, noise
    assert "Fitted with the Poisson-Gaussian noise model (estimated gain" in w.status.value
    assert meta["options"]["noise_model"] == "poisson-gaussian"
    assert np.isfinite(out.data).all() and out.data.shape == noisy.shape  # back in the input's units
    assert 0 < out.data.mean() < 4095


def test_the_pixel_fusion_control_reaches_the_fit_its_record_and_the_status(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    _clean, noisy = noisy_cells((96, 96), photons=30, seed=0)
    layer = viewer.add_image(noisy, name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=10, preview_every=0, preset="pretrained")
    assert w.pixel_fusion in list(w.advanced) and w.pixel_fusion.value == "auto"
    assert list(w.pixel_fusion.choices) == ["auto", True, False]
    fused = start_and_wait(qtbot, w, FIT_TIMEOUT)
    noise = fused.metadata["napari_dip"]["planes"][0]["noise"]
    assert noise["fusion"] is True and 0 < noise["fusion_weight"] < 1, noise
    assert "Each pixel's own noisy value weighed back in (pixel fusion) at a mean weight of" in w.status.value
    w.pixel_fusion.value = False
    plain = start_and_wait(qtbot, w, FIT_TIMEOUT)
    meta = plain.metadata["napari_dip"]
    assert meta["options"]["pixel_fusion"] is False and meta["planes"][0]["noise"]["fusion"] is False
    assert "pixel fusion" not in w.status.value
    assert not np.array_equal(plain.data, fused.data)
    np.testing.assert_array_equal(layer.data, noisy)  # the input layer is untouched


def test_the_neighbour_planes_control_reaches_the_fit_and_its_record(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer, data = stack_layer(viewer, planes=3)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=4, preview_every=0, preset="pretrained")
    assert w.neighbour_planes in list(w.advanced) and w.neighbour_planes.value == "auto"
    assert w.options().neighbour_planes == "auto" and w._build_job(w._read_input(), w.options()).neighbour_planes == 1
    w.neighbour_planes.value = 0
    alone = start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert alone.metadata["napari_dip"]["options"]["neighbour_planes"] == 0
    assert alone.metadata["napari_dip"]["neighbour_planes"] == 0
    w.neighbour_planes.value = 1
    seen = start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert seen.metadata["napari_dip"]["options"]["neighbour_planes"] == 1
    assert seen.metadata["napari_dip"]["neighbour_planes"] == 1
    assert np.isfinite(seen.data).all() and not np.array_equal(seen.data, alone.data)  # the fit saw them


def test_the_warm_patience_control_stops_warm_planes_sooner(qtbot, viewer):
    from napari_dip.glue import RunOptions
    from napari_dip.widgets import DenoiseWidget

    layer, _data = stack_layer(viewer, planes=3)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=300, auto_stop=True, preview_every=0,
                    preset="pretrained")
    assert w.advanced.native.isAncestorOf(w.warm_patience.native) and not w.warm_patience.enabled
    w.warm_patience.value = 5
    assert w.options().warm_patience == 0  # without warm start it means nothing
    w.warm_start.value = True
    assert w.warm_patience.enabled
    w.auto_stop.value = False
    assert not w.warm_patience.enabled  # a fixed count has no patience
    w.auto_stop.value = True
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    meta = out.metadata["napari_dip"]
    assert meta["options"]["warm_patience"] == 5
    first, *warm = meta["planes"]
    assert first["iterations"] >= 50  # the cold plane keeps the preset's floor (50) and patience
    assert all(p["ending"] != "cap" and 10 <= p["iterations"] < 50 for p in warm), meta["planes"]
    assert RunOptions(warm_start=True, warm_patience=10).setting_overrides() == {
        "warm_stop_patience": 10, "warm_min_iterations": 20}
    with pytest.raises(ValueError, match="warm_patience"):
        RunOptions(warm_patience=-1).setting_overrides()


def test_reaching_the_cap_says_so(qtbot, viewer, notes):
    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(noisy_cells((24, 32), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=25, auto_stop=True, preview_every=0)
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert out.metadata["napari_dip"]["planes"][0]["ending"] == "cap"
    expected = "Reached the cap of 25 iterations before the hold-out rule fired: consider raising 'max iterations'"
    assert expected in w.status.value
    assert [s for s, m in notes if expected in m] == [str(NotificationSeverity.WARNING)]


def test_an_early_cancel_is_flagged_not_converged_and_can_be_discarded(qtbot, viewer, notes):
    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(noisy_cells((64, 64), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=100_000, preview_every=1)

    def during(u):
        if u.snapshot.iteration >= 3:
            w.cancel_button.native.click()

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    assert out is not None and out.name == "cells denoised (not converged)"
    meta = out.metadata["napari_dip"]
    assert meta["state"] == "cancelled" and meta["planes_not_converged"] == [0]
    evidence = meta["planes"][0]["evidence"]
    assert evidence["unexplained"] > 0.3 and not evidence["converged"]
    assert "NOT converged" in w.status.value and "cancelled at iteration" in w.status.value
    assert any("NOT converged" in m for _s, m in notes)
    assert not w.discard_button.native.isHidden()
    w.discard_button.native.click()
    assert out not in viewer.layers and w.output_layer is None and w.discard_button.native.isHidden()


def test_a_cancel_after_convergence_keeps_the_estimate_unflagged(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(noisy_cells((24, 32), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=100_000, preview_every=0)

    def during(u):
        if u.snapshot.iteration >= 300:
            w.cancel_button.native.click()

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    assert out.name == "cells denoised" and out.metadata["napari_dip"]["planes_not_converged"] == []
    assert "is kept: close to converged" in w.status.value
    assert w.discard_button.native.isHidden()


# -- notifications, plot, time ---------------------------------------------------------------
def test_a_tiled_fit_notifies_once_and_plots_each_tile_apart(qtbot, viewer, notes):
    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(noisy_cells((64, 64), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=12, preview_every=4)
    w.overrides = {"tile": 48}  # 4 tiles of 48 px
    w.plot_section.expand(animate=False)
    titles: list[str] = []
    firsts: list[int] = []

    def during(u):
        if not titles or titles[-1] != w.plot.title:
            titles.append(w.plot.title)
            firsts.append(w.plot.iterations[0] if w.plot.iterations else 0)

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    assert titles == [f"tile {k}/4" for k in range(1, 5)]
    assert set(firsts) == {1} and max(w.plot.iterations) == 12 and len(w.plot.iterations) == 12
    tiling = [m for _s, m in notes if "tiles" in m]
    assert len(tiling) == 1 and "4 overlapping tiles of 48x48" in tiling[0]
    assert len(notes) == 2  # the tiling and the end, nothing per iteration
    assert np.isfinite(out.data).all()


def test_roll_backs_are_notified_without_flooding(qtbot, viewer, notes):
    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(noisy_cells((24, 32), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=60, preview_every=0)
    w.overrides = {"rollback_factor": 1.0, "checkpoint_every": 1}  # any rise of the loss rolls back
    w.notify_interval = 3600.0
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    rollbacks = out.metadata["napari_dip"]["planes"][0]["rollbacks"]
    warned = [m for _s, m in notes if "loss blew up" in m]
    assert rollbacks >= 2 and len(warned) == 1, (rollbacks, warned)


def test_the_status_gives_a_time_estimate_that_is_refined(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer, _ = stack_layer(viewer, planes=3)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=40, auto_stop=True, preview_every=0)
    w.overrides = {"stop_patience": 10, "min_iterations": 10}
    texts: list[str] = []
    start_and_wait(qtbot, w, FIT_TIMEOUT, during=lambda u: texts.append(w.status.value))
    timed = [t for t in texts if "s/it" in t or "it/s" in t]
    assert timed, texts
    # before any plane has ended only the cap bounds the time; afterwards the planes that ended do
    assert any("at most" in t and "the run at most" in t for t in timed if "plane 1/3" in t)
    assert any("the run ~" in t for t in timed if "plane 3/3" in t), timed


def test_progress_shows_in_the_activity_panel(qtbot, viewer):
    from napari.utils import progress

    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(noisy_cells((24, 32), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=30, preview_every=0)
    seen: list[tuple[str, int, int]] = []

    def during(u):
        seen.extend((p.desc, p.n, p.total) for p in list(progress._all_instances) if "Denoising" in p.desc)

    start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    assert seen and all(total == 30 for _d, _n, total in seen)
    assert max(n for _d, n, _t in seen) > 0
    # closed at the end: at once, or on the next turn of the event loop when the run ended inside one of the
    # activity bar's own processEvents calls (_ActivityProgress.close defers it then; seen on a loaded CI machine)
    qtbot.waitUntil(lambda: not [p for p in progress._all_instances if "Denoising" in p.desc], timeout=5_000)


def test_plot_draws_only_when_shown_and_follows_the_theme(qtbot, viewer):
    from napari.utils.theme import get_theme

    from napari_dip.widgets import DenoiseWidget

    layer = viewer.add_image(noisy_cells((24, 32), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=40, preview_every=0)
    w.plot.min_interval = 0.0
    draws = w.plot.draws
    start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert w.plot.draws == draws  # collapsed: nothing drawn
    w.plot_section.expand(animate=False)
    qtbot.waitUntil(lambda: w.plot.draws > draws, timeout=5_000)  # what it missed, drawn on expanding
    start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert w.plot.draws > draws + 1
    for theme in ("dark", "light"):
        viewer.theme = theme
        background = get_theme(theme).background.as_hex()
        assert w.plot.figure.get_facecolor()[:3] == pytest.approx(
            tuple(int(background[i:i + 2], 16) / 255 for i in (1, 3, 5)), abs=1e-3)


# -- responsiveness --------------------------------------------------------------------------
def test_the_event_loop_stays_responsive_during_a_fit(qtbot, make_napari_viewer):
    """A 10 ms heartbeat timer during a real fit that previews every iteration, in a shown window;
    the longest gap between beats is the longest freeze. Prints the figure; asserts a generous bound."""
    from qtpy.QtCore import QTimer

    from napari_dip.widgets import DenoiseWidget

    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(noisy_cells((64, 64), photons=20, seed=0)[1], name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=150, preview_every=1)
    w.plot_section.expand(animate=False)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    updates: list[float] = []
    timer.start()
    start = time.perf_counter()
    start_and_wait(qtbot, w, FIT_TIMEOUT, during=lambda u: updates.append(time.perf_counter()))
    seconds = time.perf_counter() - start
    timer.stop()
    stall = max(gaps[1:])
    print(f"\nlongest event-loop stall {stall * 1000:.0f} ms (p99 {np.percentile(gaps[1:], 99) * 1000:.0f} ms) "
          f"over {seconds:.1f} s, {len(updates)} updates for 150 iterations")
    # measured: 0.25-0.6 s on 2 shared cores at a load average of 5; 2.2 s while three other test and
    # screenshot jobs ran beside it (the old widget: up to 11 s); the bound only catches real freezes
    assert stall < 3.0, f"the event loop froze for {stall:.2f} s"
    assert len(updates) <= 10 * seconds + 10  # throttled: about 10 a second plus events


# -- cancel and close --------------------------------------------------------------------------
def long_stack_run(viewer, widget_cls=None):
    from napari_dip.widgets import DenoiseWidget

    data = np.random.default_rng(1).random((4, 24, 32)).astype(np.float32)
    layer = viewer.add_image(data, name="stack")
    w = make_widget(widget_cls or DenoiseWidget, viewer, layer, iterations=100_000, preview_every=2)
    worker = w.run()
    assert worker is not None, w.status.value
    return w, worker, layer, data


def test_cancel_stops_within_one_iteration(qtbot, viewer):
    w, worker, layer, data = long_stack_run(viewer)
    job = w.job
    qtbot.waitUntil(lambda: w.progress.value >= 6, timeout=FIT_TIMEOUT)
    with qtbot.waitSignal(w.run_finished, timeout=30_000):
        at_cancel = job.current.iteration
        w.cancel_button.native.click()
    assert not worker.is_running or qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000) is None
    assert job.current.iteration - at_cancel <= 1
    out = w.output_layer
    assert out is not None and out in viewer.layers and out.data.shape == data.shape
    assert np.isfinite(out.data[0]).all()  # the only estimate: kept, flagged
    assert np.isnan(out.data[1:]).all()  # planes never reached are empty
    meta = out.metadata["napari_dip"]
    assert meta["cancelled"] and meta["planes_done"] == 1 and meta["planes_fitted"] == []
    assert "cancelled at iteration" in w.status.value
    assert w.run_button.enabled and not w.cancel_button.enabled


def test_quitting_the_worker_from_a_script_keeps_the_finished_planes(qtbot, viewer):
    from napari_dip.widgets import DenoiseWidget

    layer, _ = stack_layer(viewer, planes=3)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=8, preview_every=1)

    def during(u):
        if u.plane == 1:
            w.worker.quit()  # napari's own stop, as a script might call it

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    assert out is not None and out.metadata["napari_dip"]["state"] == "cancelled"
    assert out.metadata["napari_dip"]["planes_fitted"] == [0]
    assert np.isfinite(out.data[0]).all() and np.isnan(out.data[1:]).all()


def test_removing_the_dock_widget_stops_the_worker(qtbot, viewer):
    w, worker, _layer, _data = long_stack_run(viewer)
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=FIT_TIMEOUT)
    with qtbot.waitSignal(w.run_finished, timeout=30_000):
        viewer.window.remove_dock_widget(w.native)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    assert not w.running


def test_closing_the_viewer_stops_the_worker(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    w, worker, _layer, _data = long_stack_run(viewer)
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=FIT_TIMEOUT)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)


def test_removing_the_output_layer_cancels_the_run(qtbot, viewer):
    w, worker, _layer, _data = long_stack_run(viewer)
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=FIT_TIMEOUT)
    # wait for the widget's own end-of-run signal (delivered after the worker's finished signal
    # reaches the GUI thread), not for the worker thread to stop
    with qtbot.waitSignal(w.run_finished, timeout=30_000) as blocker:
        viewer.layers.remove(w.output_layer)
    assert blocker.args == [None]
    assert w.output_layer is None and len(viewer.layers) == 1 and not w.running
    assert "output layer was removed" in w.status.value


# -- errors ----------------------------------------------------------------------------------
def test_no_image_layer_is_a_notification(viewer, errors):
    from napari_dip.widgets import DenoiseWidget

    w = DenoiseWidget(viewer)
    assert w.image.value is None
    w.run_button.native.click()
    assert w.worker is None
    assert len(errors) == 1 and "no image layer selected" in errors[0]
    assert "File > Open Sample > Deep Image Prior" in errors[0]
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
    assert len(errors) == 1 and message in errors[0], list(errors)
    assert len(viewer.layers) == n_layers  # no output layer left behind


def test_errors_inside_the_worker_are_notifications(qtbot, viewer, errors, monkeypatch):
    """Out of memory mid-fit, and a RuntimeError (which superqt would otherwise swallow)."""
    from napari_dip.widgets import DenoiseWidget

    fit = importlib.import_module("napari_dip.core.fit")

    layer, _ = stack_layer(viewer, planes=2)
    original = fit.Fitter.steps
    failures = iter([fit.DIPMemoryError("out of memory on cuda: use the 'fast' preset"),
                     RuntimeError("CUDA error: an illegal memory access")])
    calls = {"n": 0}

    def failing_steps(self):
        calls["n"] += 1
        gen = original(self)
        if calls["n"] % 2 == 1:  # the first plane of each run ends, the second fails
            return (yield from gen)
        for _ in range(3):
            yield next(gen)
        raise next(failures)

    monkeypatch.setattr(fit.Fitter, "steps", failing_steps)
    w = make_widget(DenoiseWidget, viewer, layer, iterations=20, preview_every=1)
    for expected in ("out of memory", "illegal memory access"):
        out = start_and_wait(qtbot, w, FIT_TIMEOUT)
        assert errors and expected in errors[-1] and errors[-1].startswith("Denoising failed at iteration 3 of plane 2")
        assert "failed" in w.status.value and w.run_button.enabled
        assert out is not None and np.isfinite(out.data[0]).all()  # the finished plane is kept
        assert out.metadata["napari_dip"]["state"] == "failed"
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


# -- controls and layout ---------------------------------------------------------------------
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


def test_common_controls_on_top_and_the_rest_collapsed(viewer):
    from napari_dip.widgets import DenoiseWidget, InpaintWidget, SuperResolveWidget

    for cls, extra in ((DenoiseWidget, []), (InpaintWidget, ["mask"]), (SuperResolveWidget, ["factor"])):
        w = cls(viewer)
        for name in ["image", *extra, "iterations", "auto_stop", "preset"]:
            assert w._common.native.isAncestorOf(getattr(w, name).native), name
        advanced = ["device", "precision", "seed", "preview_every", "warm_start"] + (
            ["kernel"] if cls is SuperResolveWidget else [])
        for name in advanced:
            assert w.advanced.native.isAncestorOf(getattr(w, name).native), name
        assert not w.advanced_section.isExpanded() and not w.plot_section.isExpanded()
        assert w.overrides == {} and callable(w.run) and callable(w.cancel) and w.output_layer is None


def test_three_widgets_fit_a_1080_pixel_screen(qtbot, make_napari_viewer):
    from napari_dip.widgets import DenoiseWidget, InpaintWidget, SuperResolveWidget

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((5, 64, 64), np.float32), name="stack")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="mask")
    widgets = [cls(viewer) for cls in (DenoiseWidget, InpaintWidget, SuperResolveWidget)]
    for w in widgets:
        viewer.window.add_dock_widget(w, area="right")
    heights = [w.native.sizeHint().height() for w in widgets]
    print(f"\nsize hints (stack chosen): {heights} px; window minimum "
          f"{viewer.window._qt_window.minimumSizeHint().height()} px")
    assert max(heights) < 400
    assert viewer.window._qt_window.minimumSizeHint().height() <= 1000
    for w in widgets:  # expanding everything scrolls instead of growing the window past the screen
        w.plot_section.expand(animate=False)
        w.advanced_section.expand(animate=False)
    qtbot.waitUntil(lambda: all(w.native.sizeHint().height() > h + 100 for w, h in zip(widgets, heights)),
                    timeout=5_000)
    qtbot.wait(100)  # let the dock layout take the new sizes
    assert viewer.window._qt_window.minimumSizeHint().height() <= 1000


def test_base_class_takes_new_controls(viewer):
    from magicgui.widgets import CheckBox, ComboBox

    from napari_dip.widgets import DenoiseWidget

    viewer.add_image(np.zeros((24, 32), np.float32))
    w = DenoiseWidget(viewer)
    noise = w.add_control(ComboBox(name="noise", label="noise", choices=["gaussian", "poisson"]), "common")
    option = w.add_control(CheckBox(name="per_plane", text="per plane"), "advanced", stack_only=True)
    assert w._common.native.isAncestorOf(noise.native) and w.advanced.native.isAncestorOf(option.native)
    assert option.native.isHidden()  # a 2D image: stack-only controls hidden
    with pytest.raises(ValueError, match="section"):
        w.add_control(CheckBox(name="x"), "sidebar")


# -- plugin ----------------------------------------------------------------------------------
def test_manifest_widgets_menus_and_sample_data(qtbot, viewer):
    import npe2

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
    manifest = npe2.PluginManager.instance().get_manifest("napari-dip")
    assert manifest.display_name == "Deep Image Prior"
    in_menu = {item.command for item in manifest.contributions.menus["napari/layers/filter"]}
    assert in_menu == {w.command for w in manifest.contributions.widgets}


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


# -- presets and starting weights ------------------------------------------------------------
def test_presets_default_to_auto_and_list_only_what_applies(viewer):
    from napari_dip.widgets import DenoiseWidget, InpaintWidget, SuperResolveWidget

    for cls, has_pretrained in ((DenoiseWidget, True), (InpaintWidget, True), (SuperResolveWidget, False)):
        w = cls(viewer)
        choices = list(w.preset.choices)
        assert w.preset.value == "auto" and choices[0] == "auto"
        assert ("pretrained" in choices) is has_pretrained and w.weights.native.isHidden() is not has_pretrained
        w.device.value = "cpu"
        w.preset.value = "fast"  # the cap follows the preset while the user has not set one
        assert w.iterations.value == 3000 if cls is not SuperResolveWidget else 2000
        w.iterations.value = 777
        w.preset.value = "paper"
        assert w.iterations.value == 777
    # 'auto' on a CPU: the cap of what it resolves to for the chosen image
    w = DenoiseWidget(viewer)
    w.device.value = "cpu"
    w.image.value = viewer.add_image(np.zeros((16, 16), np.float32), name="gray")
    assert w.iterations.value == 1000  # 'pretrained'
    from napari_dip.core.weights import builtin_path

    w.image.value = viewer.add_image(np.zeros((16, 16, 3), np.float32), name="colour", rgb=True)
    assert w.iterations.value == (1000 if builtin_path(3).is_file() else 3000)  # no RGB weights: 'fast'


def test_auto_on_a_cpu_fits_from_the_chosen_weights_and_records_them(qtbot, viewer, tmp_path):
    from napari_dip.core.networks import build_network
    from napari_dip.core.settings import get_settings
    from napari_dip.core.weights import save_weights
    from napari_dip.widgets import DenoiseWidget

    s = get_settings("pretrained", "denoise")
    path = save_weights(tmp_path / "mine.pt", build_network(s.network, 2, 1, **s.network_kwargs), network=s.network,
                        network_kwargs=s.network_kwargs, in_channels=2, out_channels=1, input_kind="masked")
    layer = viewer.add_image(noisy_cells((32, 32), seed=1)[1].astype(np.float32), name="cells")
    w = make_widget(DenoiseWidget, viewer, layer, iterations=3, preview_every=0, preset="auto")
    w.weights.value = path
    out = start_and_wait(qtbot, w, timeout=FIT_TIMEOUT)
    meta = out.metadata["napari_dip"]
    assert meta["preset"] == "pretrained"  # 'auto' on a CPU
    assert meta["history"][0]["weights"] == str(path)
    w.weights.value = None
    w.preset.value = "fast"
    out = start_and_wait(qtbot, w, timeout=FIT_TIMEOUT)
    assert out.metadata["napari_dip"]["preset"] == "fast" and out.metadata["napari_dip"]["history"][0]["weights"] is None
