"""Poisson-Gaussian noise: the estimator, the stabilising transform and its inverse, the choice of
model, and how fits, stopping rules, the API and the CLI use them (core/noise.py)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from napari_dip.core import noise as nz
from napari_dip.core.fit import Fitter
from napari_dip.core.noise import (
    NoiseEstimationError,
    NoiseModelWarning,
    PoissonGaussian,
    choose_noise_model,
    clip_levels,
    estimate_noise,
    plan_noise,
)
from napari_dip.core.restore import Restoration
from napari_dip.core.settings import Settings, get_settings
from napari_dip.core.stopping import Discrepancy


def scene(size: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth 'specimen' in [0, 1]: a dark background with soft blobs of several brightnesses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.full((size, size), 0.03)
    for _ in range(14):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(size / 14, size / 6)
        img += rng.uniform(0.15, 0.9) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2))
    return np.clip(img, 0, 1)


def camera(clean: np.ndarray, gain: float, read_sd: float, offset: float, photons: float, seed: int = 1,
           bits: int | None = None) -> np.ndarray:
    """``gain * Poisson(clean * photons) + N(offset, read_sd**2)``, optionally rounded and clipped to ``bits``."""
    rng = np.random.default_rng(seed)
    z = gain * rng.poisson(clean * photons) + rng.normal(offset, read_sd, clean.shape)
    if bits is not None:
        z = np.clip(np.round(z), 0, 2 ** bits - 1)
    return z


# -- the transform and its inverse -------------------------------------------------------------
@pytest.mark.parametrize("sigma2", [0.0, 0.5, 4.0])
def test_the_transform_makes_the_noise_unit_variance(sigma2):
    model = PoissonGaussian(gain=3.0, read_variance=sigma2 * 9.0, offset=100.0)
    rng = np.random.default_rng(0)
    for photons in (5.0, 20.0, 200.0):
        z = 3.0 * rng.poisson(photons, 200_000) + rng.normal(100.0, math.sqrt(sigma2) * 3.0, 200_000)
        assert model.stabilise(z).var() == pytest.approx(1.0, abs=0.06)
    # and it undoes the gain: the raw variance was about 3 * z
    assert model.variance(100.0 + 3 * 20.0) == pytest.approx(3.0 * 60.0 + sigma2 * 9.0)


@pytest.mark.parametrize("sigma2", [0.0, 0.3, 2.0])
def test_the_inverse_is_unbiased_where_the_algebraic_one_is_not(sigma2):
    """E[f(z)] mapped back gives the true mean, down to a fraction of a photon; the algebraic inverse
    of f is off by about a quarter photon and more at low counts."""
    model = PoissonGaussian(gain=2.0, read_variance=sigma2 * 4.0, offset=10.0)
    rng = np.random.default_rng(1)
    for photons in (0.5, 2.0, 10.0, 60.0, 300.0):
        z = 2.0 * rng.poisson(photons, 400_000) + rng.normal(10.0, math.sqrt(sigma2) * 2.0, 400_000)
        mean_f = model.stabilise(z).mean()
        exact = (model.inverse(mean_f) - 10.0) / 2.0
        algebraic = (mean_f / 2) ** 2 - 0.375 - sigma2
        assert exact == pytest.approx(photons, abs=0.02 + 0.003 * photons)
        if photons <= 10:
            assert abs(algebraic - photons) > 0.1
    # exact expectation: a deterministic check of the table against the quadrature
    ys = np.array([0.0, 0.1, 1.0, 7.0, 50.0])
    assert (model.inverse(model.expected(ys)) - 10.0) / 2.0 == pytest.approx(ys, abs=1e-3)


def test_the_exact_table_meets_the_closed_form_at_its_end():
    for sigma2 in (0.0, 1.0, 9.0):
        model = PoissonGaussian(1.0, sigma2)
        top = nz.EXACT_INVERSE_PHOTONS
        d = model.expected(np.array([top * 0.98, top, top * 1.02]))
        closed = nz._anscombe_inverse_cf(d) - sigma2
        # the closed form is within 0.02 photons (2e-4 relative, 1/500 of the noise's sd) of the exact
        assert closed == pytest.approx([top * 0.98, top, top * 1.02], abs=0.02)
        # across the junction the inverse is continuous and increasing
        grid = np.linspace(d[0], d[2], 41)
        back = model.inverse(grid)
        assert np.all(np.diff(back) > 0)
        assert np.max(np.diff(back)) < 3 * np.median(np.diff(back))


def test_values_below_zero_photons_map_to_the_offset_and_the_transform_is_monotone():
    model = PoissonGaussian(2.0, 0.0, 5.0)
    assert model.inverse(np.array([0.0, 0.5]))[0] == pytest.approx(5.0)
    z = np.linspace(0, 400, 500)
    assert np.all(np.diff(model.stabilise(z)) >= 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(gain=0.0), "gain must be a positive"),
    (dict(gain=-1.0), "gain must be a positive"),
    (dict(gain=float("nan")), "gain must be a positive"),
    (dict(gain=1.0, read_variance=-0.1), "read-noise variance must be a number >= 0"),
    (dict(gain=1.0, offset=float("inf")), "offset must be a finite"),
    (dict(gain="two"), "must be numbers"),
])
def test_bad_parameters_get_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PoissonGaussian(**kwargs)


# -- the estimator -----------------------------------------------------------------------------
@pytest.mark.parametrize("gain, read_sd, offset, photons", [(4.0, 2.0, 0.0, 60.0), (100.0, 60.0, 100.0, 30.0),
                                                             (1.0, 0.5, 0.0, 400.0)])
def test_the_estimate_finds_the_camera(gain, read_sd, offset, photons):
    clean = scene(192)
    z = camera(clean, gain, read_sd, offset, photons)
    est = estimate_noise(z)
    assert est.gain == pytest.approx(gain, rel=0.12)
    truth = PoissonGaussian(gain, read_sd ** 2, offset)
    bright = offset + gain * photons * 0.5
    assert est.variance(bright) == pytest.approx(truth.variance(bright), rel=0.1)
    assert est.poissonian and choose_noise_model(est) == "poisson-gaussian"
    assert est.correlation_factor == 1.0


def test_the_estimate_ignores_clipped_pixels():
    """An 8-bit frame saturated on its brightest blobs: the saturated pixels (variance 0) would pull
    the bright bins down; they are found and left out."""
    clean = scene(192)
    z = camera(clean, 4.0, 1.5, 3.0, 90.0, bits=8)
    low, high = clip_levels(z)
    assert high == 255 and (z == 255).mean() > 0.01
    est = estimate_noise(z)
    assert est.clipped[1] == 255
    assert est.gain == pytest.approx(4.0, rel=0.12)


def test_clip_levels_sees_pile_ups_only():
    rng = np.random.default_rng(0)
    smooth = rng.normal(100, 10, 10_000)
    assert clip_levels(smooth) == (None, None)  # continuous values: nothing piles up
    assert clip_levels(np.clip(np.round(smooth), 95, 120)) == (95.0, 120.0)
    ints = np.round(rng.normal(100, 10, 10_000))
    assert clip_levels(ints) == (None, None)  # integer values thin out at their extremes


def test_gaussian_noise_is_not_taken_for_shot_noise():
    clean = scene(192) * 200 + 20
    rng = np.random.default_rng(3)
    z = np.clip(clean + rng.normal(0, 12.0, clean.shape), 0, 255)
    est = estimate_noise(z)
    assert abs(est.gain) < 0.1 and est.growth < nz.GROWTH_THRESHOLD
    assert est.variance(120) == pytest.approx(144, rel=0.1)
    assert choose_noise_model(est) == "gaussian"


def test_correlated_noise_is_measured_at_its_full_variance():
    """Noise blurred over neighbouring pixels (like FMD's wide-field frames) hides most of its variance
    from a 3x3 detail; the stride-4 correction recovers it."""
    rng = np.random.default_rng(5)
    white = rng.normal(0, 1, (224, 224))
    k = np.array([0.25, 0.5, 0.25])
    blurred = sum(k[i] * k[j] * np.roll(np.roll(white, i - 1, 0), j - 1, 1) for i in range(3) for j in range(3))
    blurred *= 10.0 / blurred.std()
    clean = scene(224) * 150 + 30
    est = estimate_noise(clean + blurred)
    assert est.correlation_factor > 3
    assert est.variance(100) == pytest.approx(100.0, rel=0.12)
    assert choose_noise_model(est) == "gaussian"


@pytest.mark.parametrize("image, match", [
    (np.full((64, 64), 7.0), "constant"),
    (-np.abs(np.random.default_rng(0).normal(5, 1, (64, 64))) - 1, "no positive values"),
    (np.random.default_rng(0).poisson(5, (12, 12)).astype(float), "too small"),
    (np.where(np.random.default_rng(0).random((64, 64)) < 0.995, 255.0, 200.0), "clipping"),
    (np.full((64, 64), np.nan), "no finite"),
])
def test_images_without_a_noise_estimate_say_why(image, match):
    with pytest.raises(NoiseEstimationError, match=match):
        estimate_noise(image)


def test_structure_the_detail_removes_does_not_count_as_noise():
    """Sharp stripes everywhere: the separable second difference removes anything constant along
    one axis, so the estimate is the noise's (variance 1), not the stripes' contrast."""
    rng = np.random.default_rng(0)
    stripes = np.where((np.arange(96)[None, :] // 2) % 2 == 0, 50.0, 200.0) * np.ones((96, 1))
    est = estimate_noise(stripes + rng.normal(0, 1, stripes.shape))
    assert est.variance(125.0) == pytest.approx(1.0, rel=0.2)
    assert choose_noise_model(est) == "gaussian"


def test_an_image_without_flat_regions_at_enough_levels_cannot_be_measured():
    """Saturated but for a thin noisy band: too few unclipped pixels, or intensity levels, to fit a line."""
    rng = np.random.default_rng(0)
    img = np.full((96, 96), 255.0)
    img[:, 40:52] = np.clip(np.round(120 + rng.normal(0, 5, (96, 12))), 0, 255)
    with pytest.raises(NoiseEstimationError, match="no usable flat region|too few"):
        estimate_noise(img)


# -- plans: the model a fit uses -----------------------------------------------------------------
def test_auto_picks_the_model_by_measuring_the_plane():
    clean = scene(160)
    shot = camera(clean, 4.0, 1.0, 0.0, 80.0)
    flat = clean * 200 + np.random.default_rng(2).normal(0, 10, clean.shape)
    auto = Settings(noise_model="auto")
    assert plan_noise(shot[..., None], auto).model == "poisson-gaussian"
    assert plan_noise(flat[..., None], auto).model == "gaussian"
    assert plan_noise(shot[..., None], Settings(noise_model="gaussian")).estimate is None  # nothing measured
    assert plan_noise(shot[..., None], auto, task="inpaint").model == "gaussian"


def test_a_plane_that_cannot_be_measured_falls_back_to_gaussian_with_a_warning():
    constant = np.full((64, 64, 1), 3.0)
    with pytest.warns(NoiseModelWarning, match="cannot estimate.*constant.*Gaussian model"):
        plan = plan_noise(constant, Settings(noise_model="poisson-gaussian"))
    assert plan.model == "gaussian" and "constant" in plan.note
    assert plan.history()["noise_note"] == [plan.note]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'auto' falls back quietly: Gaussian is its answer there
        assert plan_noise(constant, Settings(noise_model="auto")).model == "gaussian"


def test_flat_variance_asked_for_poisson_gaussian_falls_back_with_a_warning():
    flat = scene(160) * 100 + np.random.default_rng(2).normal(0, 10, (160, 160)) - 10.0  # a gain <= 0
    settings = Settings(noise_model="poisson-gaussian")
    est = estimate_noise(flat)
    if est.gain > 0:
        pytest.skip("the estimate's gain came out positive on this draw")
    with pytest.warns(NoiseModelWarning, match="does not grow"):
        assert plan_noise(flat[..., None], settings).model == "gaussian"


def test_given_parameters_are_used_as_they_are():
    z = camera(scene(96), 4.0, 2.0, 0.0, 50.0)[..., None]
    plan = plan_noise(z, Settings(noise_model="auto", noise_gain=5.0, noise_read_variance=3.0, noise_offset=1.0))
    assert plan.model == "poisson-gaussian" and plan.source == "given" and plan.estimate is None
    m = plan.channels[0]
    assert (m.gain, m.read_variance, m.offset) == (5.0, 3.0, 1.0)
    x01 = plan.normalise(z)
    assert x01.min() == pytest.approx(0.0, abs=1e-6) and x01.max() == pytest.approx(1.0, abs=1e-6)
    assert plan.level == pytest.approx(1.0 / plan.scale ** 2)
    # the way back: the unbiased inverse of the transformed plane stays close to the plane
    back = plan.restore(x01)
    assert np.median(np.abs(back - z)) < 2.0


@pytest.mark.parametrize("changes, match", [
    (dict(noise_model="poisson"), "unknown noise_model"),
    (dict(noise_model="poisson-gaussian", noise_gain=-2.0, noise_read_variance=1.0), "gain must be a positive"),
    (dict(noise_model="poisson-gaussian", noise_gain=0.0, noise_read_variance=1.0), "gain must be a positive"),
    (dict(noise_model="poisson-gaussian", noise_gain=2.0, noise_read_variance=-1.0), "read-noise variance must be a number >= 0"),
    (dict(noise_model="poisson-gaussian", noise_gain=2.0), "give both noise_gain"),
    (dict(noise_model="gaussian", noise_gain=2.0, noise_read_variance=1.0), "give noise_model='poisson-gaussian'"),
    (dict(noise_gain=2.0, noise_read_variance=1.0), "give noise_model='poisson-gaussian'"),  # the default
])
def test_restoration_refuses_bad_noise_settings_before_fitting(changes, match):
    with pytest.raises(ValueError, match=match):
        Restoration("denoise", np.ones((32, 32)), **changes)


def test_poisson_gaussian_is_for_denoising_only():
    with pytest.raises(ValueError, match="denoising only"):
        Restoration("super_resolve", np.ones((16, 16)), factor=2, noise_model="poisson-gaussian")
    Restoration("super_resolve", np.ones((16, 16)), factor=2)  # 'auto' is fine: Gaussian there


# -- fits --------------------------------------------------------------------------------------
FAST = dict(preset="fast", network_kwargs=dict(channels_down=(8, 8), channels_up=(8, 8), channels_skip=(2, 2)))


def test_a_fit_in_the_stabilised_domain_comes_back_in_the_input_units_and_records_the_model():
    clean = scene(64)
    z = camera(clean, 40.0, 30.0, 100.0, 30.0, bits=12).astype(np.uint16)
    job = Restoration("denoise", z, iterations=30, noise_model="poisson-gaussian", **FAST)
    out = job.run()
    plan = job.noise[0]
    assert plan.stabilised and plan.source == "estimated"
    hist = job.history()[0]
    assert hist["noise_model"] == ["poisson-gaussian"] and hist["noise_model_requested"] == ["poisson-gaussian"]
    assert hist["noise_gain"][0] == pytest.approx(40.0, rel=0.3)
    json.dumps(hist)  # the CLI log and the widget's record hold it
    # input units: the result's mean is the image's, not the [0, 1] or stabilised one
    assert abs(float(out.mean()) - float(z.mean())) < 0.05 * float(z.mean())
    assert z.dtype == np.uint16 and out.dtype == np.float32


def test_the_default_is_the_gaussian_model_and_measures_nothing():
    """Until the Poisson-Gaussian model is measured to restore better, the engine's default stays as
    it was: a plain squared error in the input's units, with no estimate made (nor its cost paid)."""
    assert Settings().noise_model == "gaussian"
    z = camera(scene(64), 4.0, 1.0, 0.0, 60.0)  # shot noise: 'auto' would pick the other model
    for preset in ("auto", "fast", "pretrained", "paper"):
        assert get_settings(preset, "denoise").noise_model == "gaussian"
    job = Restoration("denoise", z, iterations=2, **FAST)
    plan = job.noise_plan(0)
    assert plan.model == "gaussian" and plan.estimate is None and not plan.stabilised
    assert job.settings.noise_model == "gaussian"


def test_the_gaussian_model_leaves_the_fit_as_it_was():
    """'auto' on Gaussian noise, 'gaussian' and the default fit exactly what the engine fitted before."""
    rng = np.random.default_rng(0)
    img = (scene(48) * 200 + rng.normal(0, 15, (48, 48))).astype(np.float32)
    outs = [Restoration("denoise", img, iterations=12, seed=3, noise_model=m, **FAST).run() for m in ("auto", "gaussian")]
    default = Restoration("denoise", img, iterations=12, seed=3, **FAST).run()
    before = Restoration("denoise", img, iterations=12, seed=3, **FAST)
    before.noise = [nz.NoisePlan("gaussian", "gaussian")]  # what the engine did before the noise models
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], default)
    np.testing.assert_array_equal(outs[0], before.run())


def test_the_discrepancy_rule_stops_at_unit_noise_in_the_stabilised_domain():
    z = camera(scene(64), 4.0, 1.0, 0.0, 60.0)
    job = Restoration("denoise", z, iterations="auto", max_iterations=40, stop_rule="discrepancy",
                      noise_model="poisson-gaussian", min_iterations=5, **FAST)
    steps = job.steps()
    next(steps)
    rule = job.current.rules[0]
    assert isinstance(rule, Discrepancy)
    assert rule.level == pytest.approx(1.0 / job.noise[0].scale ** 2)
    # the tile estimate of the stabilised target agrees with it (the transform worked) ...
    from napari_dip.core.stopping import noise_variance
    assert noise_variance(job.current.target) == pytest.approx(rule.level, rel=0.3)
    # ... while in the input's units the tile estimate is far from any single level: shot noise
    steps.close()


def test_fitter_uses_a_given_noise_level_for_the_discrepancy_rule():
    target = torch.rand(1, 1, 32, 32)
    s = get_settings("fast", "denoise", stop_rule="discrepancy", network_kwargs=FAST["network_kwargs"])
    f = Fitter(target, settings=s, iterations="auto", noise_levels=[0.0123])
    assert f.rules[0].level == pytest.approx(0.0123)
    g = Fitter(target, settings=s, iterations="auto", noise_levels=[None])
    assert g.rules[0].level != pytest.approx(0.0123)


def test_masked_fits_keep_the_hold_out_in_the_stabilised_domain():
    z = camera(scene(64), 4.0, 1.0, 0.0, 60.0)
    job = Restoration("denoise", z, iterations="auto", preset="pretrained", noise_model="poisson-gaussian",
                      weights=None, max_iterations=20)
    steps = job.steps()
    next(steps)
    assert job.noise[0].stabilised and job.current.stop_rules == ["holdout"]
    steps.close()


def test_multichannel_planes_get_one_model_per_channel_rgb_one_for_all():
    clean = scene(128)
    two = np.stack([camera(clean, 4.0, 1.0, 0.0, 60.0, seed=1), camera(clean, 9.0, 1.0, 0.0, 30.0, seed=2)], -1)
    plan = plan_noise(two, Settings(noise_model="poisson-gaussian"))
    assert [m.gain for m in plan.channels] == pytest.approx([4.0, 9.0], rel=0.15)
    rgb = plan_noise(np.repeat(two[..., :1], 3, axis=-1), Settings(noise_model="poisson-gaussian"), rgb=True)
    assert len(rgb.channels) == 1


def test_the_api_passes_the_noise_model_through():
    import napari_dip

    z = camera(scene(48), 4.0, 1.0, 0.0, 60.0)
    out = napari_dip.denoise(z, iterations=3, noise_model="poisson-gaussian", **FAST)
    assert out.shape == z.shape
    with pytest.raises(ValueError, match="unknown noise_model"):
        napari_dip.denoise(z, iterations=3, noise_model="poison")


def test_the_cli_takes_the_noise_model_and_the_camera(tmp_path, capsys):
    import tifffile

    from napari_dip.cli import main as cli_main

    z = camera(scene(48), 4.0, 1.0, 2.0, 60.0).astype(np.float32)
    src, out, log = tmp_path / "in.tif", tmp_path / "out.tif", tmp_path / "log.json"
    tifffile.imwrite(src, z)
    status = cli_main(["denoise", str(src), "-o", str(out), "--iterations", "3", "--preset", "fast", "--quiet",
                       "--noise-model", "poisson-gaussian", "--noise-gain", "4", "--noise-read-variance", "1",
                       "--noise-offset", "2", "--log", str(log)])
    assert status == 0 and out.exists()
    record = json.loads(log.read_text())["slices"][0]
    assert record["noise_model"] == ["poisson-gaussian"] and record["noise_source"] == ["given"]
    assert (record["noise_gain"], record["noise_read_variance"], record["noise_offset"]) == ([4.0], [1.0], [2.0])
    with pytest.raises(SystemExit):  # a bad gain is refused before anything is written
        cli_main(["denoise", str(src), "-o", str(tmp_path / "bad.tif"), "--quiet", "--noise-model",
                  "poisson-gaussian", "--noise-gain", "0", "--noise-read-variance", "1"])
    assert "gain must be a positive" in capsys.readouterr().err
    assert not (tmp_path / "bad.tif").exists()
