"""Pixel fusion: a masked fit's blind estimate combined with each pixel's own noisy value
(core/fusion.py), and how the engine, the CLI and the records use it."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_dip.core.fusion import FusionPlan, fuse, plan_fusion, threshold
from napari_dip.core.noise import NoiseModelWarning, estimate_noise
from napari_dip.core.restore import Restoration
from napari_dip.core.settings import Settings, get_settings

SMALL = dict(network_kwargs={"channels_down": (8, 8), "channels_up": (8, 8), "channels_skip": (4, 4)},
             weights=None)


def scene(size: int = 96, seed: int = 0) -> np.ndarray:
    """Soft blobs on a dark background, 10..210."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.full((size, size), 10.0)
    for _ in range(10):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(size / 12, size / 5)
        img += rng.uniform(30, 120) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2))
    return np.clip(img, 0, 210)


def mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - b) ** 2))


# -- the fusion itself ---------------------------------------------------------------------------
def test_fusion_trusts_the_pixel_where_the_prediction_is_wrong_and_the_prediction_where_it_is_right():
    """A blind estimate exact in one half and off by a structure much larger than the noise in the
    other: the fused image keeps the exact half (weight ~0) and follows the noisy pixels where the
    estimate is wrong, for a lower error overall."""
    rng = np.random.default_rng(0)
    clean = scene(128)
    noisy = clean + rng.normal(0, 5, clean.shape)
    estimate = clean.copy()
    estimate[:, 64:] += 20 * np.sin(np.arange(64) * 1.3)[None, :] * np.cos(np.arange(128) * 0.9)[:, None]
    fused = fuse(noisy, estimate, lambda mu: np.full_like(mu, 25.0))
    assert mse(fused.image[:, :50], clean[:, :50]) < 0.3  # the exact half is kept (noise variance 25)
    assert mse(fused.image[:, 70:], clean[:, 70:]) < 0.2 * mse(estimate[:, 70:], clean[:, 70:])
    assert mse(fused.image, clean) < mse(estimate, clean)
    assert 0 < fused.mean_weight < 1


def test_a_blind_estimate_of_real_quality_gains_and_white_noise_variance_sets_the_weight():
    """Shot noise on a scene, a blind estimate with an independent error: fusing with the measured
    noise line lowers the error; with a noise variance assumed 100x too large it changes nothing."""
    rng = np.random.default_rng(1)
    clean = scene(128, seed=2)
    noisy = rng.poisson(clean).astype(np.float64)  # variance = intensity
    estimate = clean + rng.normal(0, 4, clean.shape)  # error variance 16, independent of the noise
    line = estimate_noise(noisy)
    fused = fuse(noisy, estimate, line.variance)
    assert mse(fused.image, clean) < 0.9 * mse(estimate, clean)
    huge = fuse(noisy, estimate, lambda mu: 100 * np.maximum(mu, 1))
    assert huge.mean_weight < 0.01
    np.testing.assert_allclose(huge.image, estimate, atol=0.5)


def test_fusion_keeps_its_inputs_and_the_channel_layout():
    rng = np.random.default_rng(3)
    noisy = rng.normal(100, 5, (40, 48, 3)).astype(np.float32)
    estimate = np.full_like(noisy, 100.0)
    before = noisy.copy(), estimate.copy()
    out = fuse(noisy, estimate, lambda mu: np.full_like(mu, 25.0))
    np.testing.assert_array_equal(noisy, before[0])
    np.testing.assert_array_equal(estimate, before[1])
    assert out.image.shape == noisy.shape and out.image.dtype == np.float32
    assert fuse(noisy[..., 0], estimate[..., 0], lambda mu: np.full_like(mu, 25.0)).image.shape == (40, 48)


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimate=np.zeros((8, 9))), "differ in shape"),
    (dict(sigma=0), "sigma must be > 0"),
    (dict(z=-1), "z >= 0"),
])
def test_bad_fusion_arguments_get_a_clear_error(kwargs, match):
    args = dict(noisy=np.zeros((8, 8)), estimate=np.zeros((8, 8)), variance=lambda mu: mu + 1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fuse(args.pop("noisy"), args.pop("estimate"), args.pop("variance"), **args)


def test_the_threshold_is_one_standard_error_of_the_local_variance():
    assert threshold(5.0, 1.0) == pytest.approx(1 + (2 / (4 * np.pi * 25)) ** 0.5)
    assert threshold(5.0, 0.0) == 1.0


# -- where it applies ----------------------------------------------------------------------------
def test_auto_fuses_masked_denoising_fits_only():
    img = scene(64)[..., None]
    masked = get_settings("pretrained", "denoise")
    assert masked.pixel_fusion == "auto" and Settings().pixel_fusion == "auto"
    assert plan_fusion(img, masked, "denoise").on
    assert not plan_fusion(img, get_settings("fast", "denoise"), "denoise").on  # it saw its pixels
    assert not plan_fusion(img, masked.replace(pixel_fusion=False), "denoise").on
    assert not plan_fusion(img, get_settings("pretrained", "inpaint"), "inpaint").on


def test_auto_leaves_correlated_noise_alone_and_says_why():
    """With noise shared between neighbours the estimate is not blind to a pixel's noise."""
    rng = np.random.default_rng(5)
    white = rng.normal(0, 1, (160, 160))
    k = np.array([0.25, 0.5, 0.25])
    blurred = sum(k[i] * k[j] * np.roll(np.roll(white, i - 1, 0), j - 1, 1) for i in range(3) for j in range(3))
    img = (scene(160) + 10 * blurred / blurred.std())[..., None]
    masked = get_settings("pretrained", "denoise")
    plan = plan_fusion(img, masked, "denoise")
    assert not plan.on and "correlated" in plan.note
    assert plan_fusion(img, masked.replace(pixel_fusion=True), "denoise").on  # asked for: done


def test_a_plane_without_a_noise_estimate_is_not_fused_and_says_why():
    flat = np.full((64, 64, 1), 7.0)
    masked = get_settings("pretrained", "denoise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'auto': said in the record, not warned
        plan = plan_fusion(flat, masked, "denoise")
    assert not plan.on and "cannot measure" in plan.note
    with pytest.warns(NoiseModelWarning, match="cannot measure"):
        assert not plan_fusion(flat, masked.replace(pixel_fusion=True), "denoise").on


def test_given_camera_parameters_are_the_fusions_noise():
    masked = get_settings("pretrained", "denoise", noise_model="poisson-gaussian", noise_gain=2.0,
                          noise_read_variance=3.0)
    plan = plan_fusion(scene(48)[..., None], masked, "denoise")
    assert plan.on and plan.source == "given"
    assert plan.variances[0](np.array([10.0])) == pytest.approx(23.0)


@pytest.mark.parametrize("changes, match", [
    (dict(pixel_fusion="yes"), "'auto', True or False"),
    (dict(pixel_fusion=True, preset="fast"), "needs a masked fit"),
])
def test_restoration_refuses_bad_fusion_settings_before_fitting(changes, match):
    with pytest.raises(ValueError, match=match):
        Restoration("denoise", scene(32), iterations=2, **changes)


def test_pixel_fusion_is_for_denoising_only():
    mask = np.zeros((32, 32), bool)
    mask[10:14, 10:14] = True
    with pytest.raises(ValueError, match="for denoising"):
        Restoration("inpaint", scene(32), mask=mask, iterations=2, preset="pretrained", pixel_fusion=True)


# -- in the engine -------------------------------------------------------------------------------
def test_the_engine_keeps_the_fused_estimate_and_records_it():
    """The same fit with and without fusion: the kept output is exactly the unfused estimate fused
    with the noisy plane, every preview's estimate is fused too, and the history says so."""
    rng = np.random.default_rng(7)
    noisy = rng.poisson(scene(64)).astype(np.float32)
    before = noisy.copy()
    common = dict(iterations=12, seed=1, preset="pretrained", device="cpu", preview_every=4, **SMALL)
    off = Restoration("denoise", noisy, pixel_fusion=False, **common)
    plain = off.run()
    previews = []
    on = Restoration("denoise", noisy, **common)
    fused = on.run(lambda snap: previews.append(snap.ema) if snap.ema is not None else None)
    expected = on.fusion_plan(0).apply(noisy[..., None], plain[..., None]).image[..., 0]
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-4)
    assert not np.allclose(fused, plain)
    np.testing.assert_allclose(np.squeeze(previews[-1]), fused, rtol=1e-5, atol=1e-4)
    h = on.history()[0]
    assert h["pixel_fusion"] == [True] and h["pixel_fusion_source"] == ["estimated"]
    assert 0 < h["pixel_fusion_weight"][0] < 1
    assert off.history()[0]["pixel_fusion"] == [False]
    np.testing.assert_array_equal(noisy, before)  # the input is never modified


def test_a_cancelled_plane_keeps_a_fused_estimate():
    rng = np.random.default_rng(8)
    noisy = rng.poisson(scene(48)).astype(np.float32)
    job = Restoration("denoise", noisy, iterations=30, preset="pretrained", device="cpu", **SMALL)
    gen = job.steps()
    for _ in range(6):
        next(gen)
    gen.close()
    kept = job.result(cancelled=True)
    raw = job.current.result(cancelled=True).image
    expected = job.fusion_plan(0).apply(noisy[..., None], raw).image[..., 0]
    np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-4)


def test_the_cli_takes_pixel_fusion_and_logs_it(tmp_path):
    import tifffile

    from napari_dip.cli import main as cli_main

    rng = np.random.default_rng(9)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, rng.poisson(scene(48)).astype(np.float32))
    for choice, expected in (("off", [False]), (None, [True])):
        log = tmp_path / f"{choice}.json"
        extra = [] if choice is None else ["--pixel-fusion", choice]
        status = cli_main(["denoise", str(src), "-o", str(tmp_path / f"{choice}.tif"), "--iterations", "3",
                           "--preset", "pretrained", "--quiet", "--log", str(log), *extra])
        assert status == 0
        assert json.loads(log.read_text())["slices"][0]["pixel_fusion"] == expected


def test_the_fusion_plan_of_an_unfused_plane_returns_the_estimate():
    est = np.ones((4, 4, 1), np.float32)
    out = FusionPlan(False).apply(np.zeros_like(est), est)
    np.testing.assert_array_equal(out.image, est)
    assert out.mean_weight == 0.0
