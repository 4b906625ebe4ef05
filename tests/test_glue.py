"""The glue layer without Qt: layer reading, output placement, run options, the worker generator."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dip.glue import (
    RunError,
    RunOptions,
    build_restoration,
    finished_output,
    iterate_steps,
    output_layer_kwargs,
    output_name,
    read_image_layer,
    read_mask_layer,
    super_resolved_placement,
)

layers = pytest.importorskip("napari.layers")


def test_output_names():
    assert output_name("cells", "denoise") == "cells denoised"
    assert output_name("cells", "inpaint") == "cells inpainted"
    assert output_name("cells", "super_resolve", 4) == "cells x4 super-resolved"
    with pytest.raises(ValueError, match="unknown task"):
        output_name("cells", "deblur")


def test_read_image_layer_copies_data_and_placement():
    data = np.arange(2 * 6 * 8, dtype=np.uint16).reshape(2, 6, 8)
    layer = layers.Image(data, name="raw", scale=(3, 0.5, 0.25), translate=(1, 2, 3), units=("um", "nm", "nm"),
                         axis_labels=("z", "y", "x"), contrast_limits=(5, 60))
    inp = read_image_layer(layer)
    assert inp.name == "raw" and not inp.rgb and inp.ndim == 3
    assert inp.scale == (3, 0.5, 0.25) and inp.translate == (1, 2, 3)
    assert inp.display["contrast_limits"] == [5, 60]
    assert not np.shares_memory(inp.data, layer.data)
    inp.data[...] = 0
    assert layer.data.max() == data.max()  # the layer is untouched
    kwargs = output_layer_kwargs(inp, "denoise")
    out = layers.Image(np.zeros(data.shape, np.float32), **kwargs)
    assert out.name == "raw denoised" and tuple(out.axis_labels) == ("z", "y", "x")
    assert [str(u) for u in out.units] == [str(u) for u in layer.units]
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)


def test_read_rgb_and_missing_layers():
    rgb = layers.Image(np.zeros((5, 6, 3), np.uint8), rgb=True)
    inp = read_image_layer(rgb)
    assert inp.rgb and inp.ndim == 2 and "colormap" not in inp.display
    with pytest.raises(ValueError, match="no image layer selected"):
        read_image_layer(None)
    with pytest.raises(ValueError, match="no mask selected"):
        read_mask_layer(None)
    with pytest.raises(ValueError, match="not an Image layer"):
        read_image_layer(layers.Labels(np.zeros((4, 4), np.uint8)))
    labels = layers.Labels(np.eye(4, dtype=np.uint8))
    mask = read_mask_layer(labels)
    mask[...] = 0
    assert labels.data.sum() == 4


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_super_resolution_pixels_tile_the_input_pixels(factor):
    scale, translate = super_resolved_placement((7.0, 2.0, 3.0), (1.0, 10.0, 20.0), factor)
    assert scale == (7.0, 2.0 / factor, 3.0 / factor)
    assert translate[0] == 1.0  # the stack axis is left alone
    for s_in, t_in, s_out, t_out in zip((2.0, 3.0), (10.0, 20.0), scale[1:], translate[1:]):
        # the first output pixel's outer edge is the first input pixel's outer edge
        assert t_out - s_out / 2 == pytest.approx(t_in - s_in / 2)
        # the mean of the output pixel centres covering input pixel 0 is that pixel's centre
        assert np.mean([t_out + j * s_out for j in range(factor)]) == pytest.approx(t_in)


def test_super_resolution_shift_follows_rotation():
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees
    scale, translate = super_resolved_placement((2.0, 2.0), (0.0, 0.0), 2, rotate=rot)
    # unrotated the shift is (-0.5, -0.5); rotated it becomes (0.5, -0.5)
    np.testing.assert_allclose(translate, rot @ np.array([-0.5, -0.5]))
    assert scale == (1.0, 1.0)


def test_output_kwargs_for_super_resolution():
    inp = read_image_layer(layers.Image(np.zeros((4, 6)), name="lo", scale=(2, 2), translate=(10, 20)))
    kwargs = output_layer_kwargs(inp, "super_resolve", 4)
    assert kwargs["name"] == "lo x4 super-resolved"
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["translate"] == (9.25, 19.25)


def test_build_restoration_auto_and_fixed_iterations():
    inp = read_image_layer(layers.Image(np.random.default_rng(0).random((16, 16)).astype(np.float32)))
    job = build_restoration("denoise", inp, RunOptions(iterations=77, auto_stop=True, preset="fast", device="cpu"))
    assert job.iterations == "auto" and job.settings.iterations == 77
    job = build_restoration("denoise", inp, RunOptions(iterations=5, auto_stop=False, preset="fast", device="cpu"))
    assert job.iterations == 5 and job.precision == "auto"
    job = build_restoration("denoise", inp, RunOptions(iterations=2, auto_stop=False, preset="fast", device="cpu",
                                                       precision="bf16"))
    assert job.precision == "bf16" and np.isfinite(job.run()).all()
    job = build_restoration("super_resolve", inp, RunOptions(factor=3, kernel="bicubic", device="cpu"))
    assert job.factor == 3 and job.kernel == "bicubic" and job.output.shape == (48, 48)
    with pytest.raises(ValueError, match="mask is empty"):
        build_restoration("inpaint", inp, RunOptions(device="cpu"), mask=np.zeros((16, 16)))
    with pytest.raises((ValueError, RuntimeError)):
        build_restoration("denoise", inp, RunOptions(device="cuda:99"))


def test_iterate_steps_yields_snapshots_returns_output_and_wraps_runtime_errors():
    inp = read_image_layer(layers.Image(np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)))
    job = build_restoration("denoise", inp, RunOptions(iterations=2, auto_stop=False, preset="fast",
                                                       device="cpu"))
    gen = iterate_steps(job)
    snaps = []
    with pytest.raises(StopIteration) as stop:
        while True:
            snaps.append(next(gen))
    assert [(s.slice_index, s.iteration) for s in snaps] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert stop.value.value.shape == (2, 16, 16)
    out, planes = finished_output(job, cancelled=False)
    assert planes == 2 and np.isfinite(out).all()

    class Broken:
        def steps(self):
            yield 1
            raise RuntimeError("CUDA error: device-side assert")

    gen = iterate_steps(Broken())
    assert next(gen) == 1
    with pytest.raises(RunError, match="device-side assert"):
        next(gen)


def test_finished_output_after_cancel_zeroes_planes_not_reached():
    inp = read_image_layer(layers.Image(np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)))
    job = build_restoration("denoise", inp, RunOptions(iterations=50, auto_stop=False, preset="fast",
                                                       device="cpu"))
    gen = iterate_steps(job)
    for _ in range(3):
        next(gen)  # three iterations of plane 0, then "cancel"
    out, planes = finished_output(job, cancelled=True)
    assert planes == 1 and np.isfinite(out).all()
    assert np.abs(out[0]).max() > 0 and not out[1:].any()


# -- the run driver (worker side), its words, and the convergence evidence ---------------------
def _job(planes: int = 3, iterations: int = 6, shape=(16, 16), **overrides):
    from napari_dip.samples import noisy_cells

    stack = np.stack([noisy_cells(shape, photons=20, seed=i)[1] for i in range(planes)]).astype(np.float32)
    data = stack if planes > 1 else stack[0]
    inp = read_image_layer(layers.Image(data))
    return build_restoration("denoise", inp, RunOptions(iterations=iterations, auto_stop=False, preset="fast",
                                                        device="cpu", preview_every=1, overrides=overrides))


def _drain(gen):
    updates = []
    while True:
        try:
            updates.append(next(gen))
        except StopIteration as stop:
            return updates, stop.value


class FakeClock:
    """A clock that advances 0.25 s per reading: every iteration looks 0.25 s apart (at least)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 0.25
        return self.t


def test_drive_sends_throttled_updates_and_returns_every_plane():
    from napari_dip.glue import drive

    job = _job(planes=3, iterations=6)
    updates, outcome = _drain(drive(job, interval=1e9))  # no time-based updates: events only
    # one update per new fit and one at each plane's last iteration, not one per iteration
    assert [(u.plane, u.snapshot.iteration) for u in updates] == [(0, 1), (0, 6), (1, 1), (1, 6), (2, 1), (2, 6)]
    assert [len(u.losses) for u in updates] == [1, 5, 1, 5, 1, 5]  # no loss point is lost
    assert [s for u in updates for s, _img in u.done] == [0, 1]  # finished planes, with their estimates
    assert outcome.state == "finished" and outcome.fitted == [0, 1, 2] and np.isfinite(outcome.data).all()
    assert [r.ending for r in outcome.records] == ["fixed"] * 3 and all(r.iterations == 6 for r in outcome.records)
    assert updates[-1].fit == 3 and {u.planes for u in updates} == {3}


def test_drive_cancel_right_after_a_plane_keeps_only_finished_planes():
    from napari_dip.glue import RunControl, drive

    job = _job(planes=3, iterations=5)
    control = RunControl()
    gen = drive(job, control, interval=0.0)
    while True:
        u = next(gen)
        if u.plane == 1 and u.snapshot.iteration >= 2:  # plane 2 has begun
            control.cancel()
            break
    _rest, outcome = _drain(gen)
    assert outcome.state == "cancelled" and outcome.fitted == [0] and outcome.in_data == [0]
    assert outcome.partial is not None and outcome.partial[0] == 1 and not outcome.partial_kept
    assert np.isfinite(outcome.data[0]).all() and np.isnan(outcome.data[1:]).all()
    partial = outcome.records[-1]
    assert partial.ending == "cancelled" and not partial.converged and partial.fit_iteration == 2


def test_drive_cancel_during_the_only_plane_keeps_it_flagged():
    from napari_dip.glue import RunControl, drive

    job = _job(planes=1, iterations=1000)
    control = RunControl()
    gen = drive(job, control, interval=0.0)
    while next(gen).snapshot.iteration < 3:
        pass
    control.cancel()
    _rest, outcome = _drain(gen)
    assert outcome.partial_kept and outcome.in_data == [0] and outcome.not_converged == [0]
    assert np.isfinite(outcome.data).all()


def test_drive_stop_after_plane_and_plane_selection():
    from napari_dip.glue import RunControl, drive

    job = _job(planes=4, iterations=4)
    control = RunControl()
    gen = drive(job, control, planes=[1, 3], interval=0.0)
    first = next(gen)
    assert first.plane == 1 and first.plane_number == 1 and first.planes == 2
    control.stop_after_plane()
    _rest, outcome = _drain(gen)
    assert outcome.state == "stopped_after_plane" and outcome.fitted == [1] and outcome.selected == [1, 3]
    assert np.isnan(outcome.data[[0, 2, 3]]).all() and np.isfinite(outcome.data[1]).all()
    with pytest.raises(ValueError, match="outside the stack"):
        _drain(drive(_job(planes=2), planes=[5]))


def test_drive_reports_a_failure_with_what_was_finished(monkeypatch):
    import importlib

    from napari_dip.glue import drive

    fit = importlib.import_module("napari_dip.core.fit")
    original = fit.Fitter.steps
    calls = {"n": 0}

    def failing(self):
        calls["n"] += 1
        if calls["n"] == 1:
            return (yield from original(self))
        gen = original(self)
        yield next(gen)
        raise RuntimeError("device lost")

    monkeypatch.setattr(fit.Fitter, "steps", failing)
    _updates, outcome = _drain(drive(_job(planes=3, iterations=4), interval=0.0))
    assert outcome.state == "failed" and "device lost" in str(outcome.error)
    assert outcome.fitted == [0] and np.isfinite(outcome.data[0]).all() and np.isnan(outcome.data[2]).all()


def test_drive_records_the_rule_that_stopped_a_plane_and_the_cap():
    from napari_dip.glue import drive

    data = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    inp = read_image_layer(layers.Image(data))
    job = build_restoration("denoise", inp, RunOptions(iterations=2000, auto_stop=True, preset="fast", device="cpu",
                                                       overrides={"stop_patience": 10, "min_iterations": 10}))
    _u, outcome = _drain(drive(job, interval=1e9))
    rec = outcome.records[0]
    assert rec.ending == "rule" and rec.rule == "holdout" and rec.iterations < 2000 and rec.evidence is not None
    job = build_restoration("denoise", inp, RunOptions(iterations=8, auto_stop=True, preset="fast", device="cpu"))
    _u, outcome = _drain(drive(job, interval=1e9))
    assert outcome.records[0].ending == "cap" and outcome.records[0].iterations == 8


def test_time_estimates_from_timed_iterations_and_finished_fits():
    from napari_dip.glue.driver import TimeEstimator

    est = TimeEstimator(fits_per_plane=1, planes=3, auto=True, min_iterations=10, min_seconds=100.0)
    est.fit_started(0.0)
    for i in range(1, 6):
        est.iteration(float(i), i)  # 1 s per iteration
    assert not est.estimate(5.0, 5, 100, 0, 0).ready  # too few iterations timed
    for i in range(6, 21):
        est.iteration(float(i), i)
    t = est.estimate(20.0, 20, 100, 0, 0)
    assert t.seconds_per_iteration == pytest.approx(1.0)
    # nothing ended yet: the cap bounds everything
    assert t.plane_left == pytest.approx(80) and t.run_left == pytest.approx(280) and not t.from_finished_fits
    est.fit_ended(40)  # plane 1 stopped at iteration 40
    est.fit_started(40.0)
    est.iteration(42.0, 1)  # 2 s: 1 s setup plus the iteration
    t = est.estimate(42.0, 1, 100, 0, 1)
    assert t.from_finished_fits and t.plane_left == pytest.approx(39) and t.plane_max == pytest.approx(99)
    assert t.run_left == pytest.approx(39 + 41) and t.run_max == pytest.approx(99 + 101)
    fixed = TimeEstimator(fits_per_plane=4, planes=2, auto=False, min_iterations=2)
    fixed.fit_started(0.0)
    for i in range(1, 4):
        fixed.iteration(0.5 * i, i)
    t = fixed.estimate(1.5, 3, 10, 1, 0)  # tile 2 of 4 of plane 1 of 2
    assert t.plane_left == pytest.approx(0.5 * 7 + 2 * 5) and t.run_left == pytest.approx(0.5 * 7 + 2 * 5 + 4 * 5)


def test_describe_outcome_states_how_each_run_ended():
    from napari_dip.glue import PlaneRecord, RunOutcome, describe_outcome
    from napari_dip.glue.driver import format_duration

    ev = {"unexplained": 0.8, "converged": False}
    rule = PlaneRecord(0, "rule", 710, 510, rule="holdout", evidence={"unexplained": 0.0, "converged": True})
    capped = PlaneRecord(0, "cap", 3000, 3000, rule="discrepancy", evidence={"unexplained": 0.0, "converged": True})
    data = np.zeros((4, 4), np.float32)
    text, sev = describe_outcome(RunOutcome(data, [rule], [0], "finished", seconds=130), "Denoising", 1, 3000)
    assert text.startswith("Denoising done in 2 min 10 s") and sev == "info"
    assert "Stopped by the hold-out rule at iteration 710; estimate from iteration 510" in text
    text, sev = describe_outcome(RunOutcome(data, [capped], [0], "finished"), "Denoising", 1, 3000)
    assert ("Reached the cap of 3000 iterations before the noise-level (discrepancy) rule fired: consider raising "
            "'max iterations'") in text and sev == "warning"
    blob = PlaneRecord(0, "cancelled", 15, 15, evidence=ev, converged=False, fit_iteration=15)
    text, sev = describe_outcome(RunOutcome(data, [blob], [0], "cancelled", partial=(0, data), partial_kept=True),
                                 "Denoising", 1, 3000, "x denoised (not converged)")
    assert "cancelled at iteration 15" in text and "NOT converged: the estimate misses 80 %" in text
    stack = [PlaneRecord(0, "fixed", 50, 50), PlaneRecord(1, "cancelled", 5, 5, evidence=ev, converged=False,
                                                           fit_iteration=5)]
    text, sev = describe_outcome(RunOutcome(np.zeros((60, 4, 4)), stack, list(range(60)), "cancelled",
                                            partial=(1, data)), "Denoising", 60, 50)
    assert "cancelled at iteration 5 of plane 2" in text and "Kept 1 of 60 planes (1)" in text
    assert "Plane 2 was not converged (misses 80 %) and is left out" in text and sev == "warning"
    assert format_duration(45) == "45 s" and format_duration(3600 * 3 + 300) == "3 h 05 min"


def test_the_noise_model_is_recorded_and_stated():
    from napari_dip.glue import PlaneRecord, RunOutcome, describe_outcome
    from napari_dip.glue.driver import noise_record

    assert noise_record({"loss": [1.0]}) is None and noise_record(None) is None
    history = {"noise_model": ["poisson-gaussian"], "noise_model_requested": ["auto"], "noise_source": ["estimated"],
               "noise_gain": [8.123456789], "noise_read_variance": [12.5], "noise_offset": [0.0],
               "noise_scale": [40.0], "loss": [0.1]}
    rec = noise_record(history)
    assert rec == {"model": "poisson-gaussian", "requested": "auto", "source": "estimated", "gain": 8.123457,
                   "read_variance": 12.5, "offset": 0.0}
    rgb = noise_record({**history, "noise_gain": [2.0, 3.0, 2.0], "noise_read_variance": [1.0, 1.0, 1.0]})
    assert rgb["gain"] == [2.0, 3.0, 2.0] and rgb["read_variance"] == 1.0  # per channel only where they differ
    data = np.zeros((4, 4), np.float32)
    plane = PlaneRecord(0, "rule", 300, 200, rule="holdout", noise=rec)
    assert plane.as_dict()["noise"] == rec
    text, _ = describe_outcome(RunOutcome(data, [plane], [0], "finished"), "Denoising", 1, 3000)
    assert "Fitted with the Poisson-Gaussian noise model (estimated gain 8.12, read-noise variance 12.5)" in text
    fell = {"model": "gaussian", "requested": "auto", "note": "the image has too few flat pixels"}
    text, _ = describe_outcome(RunOutcome(data, [PlaneRecord(0, "rule", 300, 200, noise=fell)], [0], "finished"),
                               "Denoising", 1, 3000)
    assert "Gaussian noise model: the image has too few flat pixels" in text
    plain = PlaneRecord(0, "rule", 300, 200, noise={"model": "gaussian", "requested": "gaussian"})
    text, _ = describe_outcome(RunOutcome(data, [plain], [0], "finished"), "Denoising", 1, 3000)
    assert "noise model" not in text  # the plain model is not worth a sentence
    stack = [PlaneRecord(i, "rule", 300, 200, noise={**rec, "gain": g}) for i, g in enumerate((7.9, 8.4))]
    text, _ = describe_outcome(RunOutcome(np.zeros((2, 4, 4)), stack, [0, 1], "finished"), "Denoising", 2, 3000)
    assert "Poisson-Gaussian noise model on 2 planes (estimated gain 7.9-8.4" in text
    big = PlaneRecord(0, "rule", 300, 200, noise={**rec, "gain": 105.68, "read_variance": 3255.7})
    text, _ = describe_outcome(RunOutcome(data, [big], [0], "finished"), "Denoising", 1, 3000)
    assert "(estimated gain 106, read-noise variance 3256)" in text


def test_convergence_evidence_tells_a_blob_from_a_fit():
    import torch

    from napari_dip.core.convergence import UNEXPLAINED_LIMIT, residual_evidence
    from napari_dip.core.operators import Mask
    from napari_dip.samples import cells

    clean = torch.from_numpy(cells(64, seed=1))[None, None]
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    blob = torch.full_like(clean, float(noisy.mean()))
    fitted = residual_evidence(clean, noisy)
    flat = residual_evidence(blob, noisy)
    assert 0 < fitted.noise < fitted.variance / 2  # a noise level, from the noisy image alone
    assert fitted.unexplained < 0.05 and fitted.converged
    assert flat.unexplained == pytest.approx(1.0, abs=0.1) and not flat.converged
    assert UNEXPLAINED_LIMIT < 0.5
    known = torch.ones_like(clean)
    known[..., 20:40, 20:40] = 0  # the hole does not count
    masked = residual_evidence(torch.where(known > 0, clean, torch.zeros_like(clean)), noisy * known, Mask(known))
    assert masked.converged and masked.as_dict()["converged"] is True
