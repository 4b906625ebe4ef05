"""stop_rule='auto': the noise-correlation estimate and the rule it picks."""

import numpy as np
import pytest
import torch

from conftest import smooth_gray
from napari_dip.core.fit import Fitter, drain
from napari_dip.core.operators import Downsampler, Identity, Mask
from napari_dip.core.settings import STOP_RULES, get_settings
from napari_dip.core.stopping import (
    CORRELATED_NOISE_THRESHOLD,
    MAX_HOLDOUT_FRACTION,
    Discrepancy,
    HoldOut,
    StopCheck,
    WindowedVariance,
    averaging_lag,
    choose_rule,
    holdout_fraction_for,
    noise_correlation,
    noise_variance,
)

FAST = get_settings("fast", "denoise")


def _white(size: int = 64, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, sigma, (size, size))


def _correlated(size: int = 64, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    """White noise smoothed by [1, 2, 1] / 4 along x and y (lag-1 correlation 0.67, lag-2 0.17)."""
    n = np.random.default_rng(seed).normal(0, 1, (size + 2, size + 2))
    n = (n[:-2] + 2 * n[1:-1] + n[2:]) / 4
    n = (n[:, :-2] + 2 * n[:, 1:-1] + n[:, 2:]) / 4
    return sigma * n / n.std()


def _image(noise: np.ndarray, channels: int = 1) -> torch.Tensor:
    img = smooth_gray(noise.shape[0])[None] + noise[None].astype(np.float32)
    return torch.from_numpy(np.repeat(img, channels, 0).astype(np.float32))[None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_correlation_separates_white_from_correlated_noise(seed):
    white = noise_correlation(_image(_white(seed=seed)))
    correlated = noise_correlation(_image(_correlated(seed=seed)))
    assert abs(white) < 0.15 < CORRELATED_NOISE_THRESHOLD < correlated, (white, correlated)
    # the estimate is about the noise, not the level or the offset
    assert noise_correlation(3 * _image(_correlated(seed=seed)) + 1) == pytest.approx(correlated, abs=1e-6)


def test_noise_correlation_without_evidence_is_zero():
    assert noise_correlation(torch.zeros(1, 1, 32, 32)) == 0.0  # constant: no noise at all
    assert noise_correlation(torch.rand(1, 1, 5, 40)) == 0.0  # smaller than one tile
    with pytest.raises(ValueError):
        noise_correlation(torch.rand(1, 1, 32, 32), keep=0)


def test_choose_rule():
    assert choose_rule(_image(_white()))[0] == "holdout"
    rule, corr = choose_rule(_image(_correlated()))
    assert rule == "discrepancy" and corr > CORRELATED_NOISE_THRESHOLD
    assert choose_rule(_image(_correlated()), denoising=False) == ("holdout", None)


def test_auto_rule_in_the_fitter():
    white = Fitter(_image(_white()), settings=FAST.replace(stop_rule="auto"), iterations="auto", device="cpu")
    assert white.stop_rules == ["holdout"] and isinstance(white.rules[0], HoldOut)
    assert white.history["stop_rule"] == ["holdout"] and abs(white.history["noise_correlation"][0]) < 0.15
    corr = Fitter(_image(_correlated()), settings=FAST.replace(stop_rule="auto"), iterations="auto", device="cpu")
    assert corr.stop_rules == ["discrepancy"] and isinstance(corr.rules[0], Discrepancy)
    assert bool((corr.weight == 1).all())  # no pixel is held out of the loss
    # inpainting and super-resolution keep the hold-out whatever the noise
    settings = get_settings("fast", "inpaint", stop_rule="auto")
    mask = Mask(torch.ones(1, 1, 64, 64))
    assert Fitter(_image(_correlated()), mask, settings, iterations="auto", device="cpu").stop_rules == ["holdout"]
    settings = get_settings("fast", "super_resolve", stop_rule="auto")
    sr = Fitter(_image(_correlated(32)), Downsampler(2), settings, iterations="auto", device="cpu")
    assert sr.stop_rules == ["holdout"]
    # a fixed-count fit has no rule to choose and fits every pixel
    fixed = Fitter(_image(_correlated()), settings=FAST.replace(stop_rule="auto"), iterations=10, device="cpu")
    assert fixed.rules == [] and "stop_rule" not in fixed.history


def test_auto_rule_is_chosen_per_image_in_a_batch():
    images = [_image(_white(48)), _image(_correlated(48, seed=1))]
    settings = FAST.replace(stop_rule="auto", iterations=30, min_iterations=5, stop_patience=10, stop_window=10)
    batch = Fitter(torch.cat(images, 1), settings=settings, iterations="auto", device="cpu", groups=2)
    assert batch.stop_rules == ["holdout", "discrepancy"]
    assert bool((batch.weight[:, 1] == 1).all()) and not bool((batch.weight[:, 0] == 1).all())
    for g, img in enumerate(images):
        single = Fitter(img, settings=settings, iterations="auto", device="cpu")
        assert single.stop_rules == [batch.stop_rules[g]]
        torch.testing.assert_close(single.weight, batch.weight[:, g:g + 1])


def test_unknown_stop_rule_lists_the_valid_ones():
    assert "auto" in STOP_RULES
    with pytest.raises(ValueError, match="'auto', 'holdout', 'wmv', 'discrepancy', 'none'"):
        Fitter(_image(_white()), settings=FAST.replace(stop_rule="bogus"), iterations="auto", device="cpu")


def test_averaging_lag_is_the_time_constant():
    assert averaging_lag(0.0) == 0 and averaging_lag(0.9) == 10 and averaging_lag(0.99) == 100
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="ema must be in"):
            averaging_lag(bad)


def test_delayed_capture_follows_the_latest_minimum_and_holds_the_stop():
    rule = WindowedVariance(window=10, patience=10, every=5, min_iterations=0, delay=15)
    signals = {5: 3.0, 10: 2.0, 15: 2.5, 20: 1.0, 25: 1.5, 30: 1.6, 35: 1.7, 40: 1.8, 45: 1.9}
    checks = {it: rule._check(it, v) for it, v in signals.items()}
    # the minimum at 10 is superseded at 20 before its capture (25) comes due
    assert [it for it, c in checks.items() if c.improved] == [5, 10, 20]
    assert [it for it, c in checks.items() if c.capture] == [35]
    # patience ran out at 30, but the stop waits for the capture
    assert [it for it, c in checks.items() if c.stop] == [35, 40, 45]
    immediate = WindowedVariance(window=10, patience=10, every=5, min_iterations=0)
    assert [it for it, v in signals.items() if immediate._check(it, v).capture] == [5, 10, 20]
    with pytest.raises(ValueError, match="delay"):
        WindowedVariance(delay=-1)


def test_wmv_fit_keeps_the_average_from_after_the_variance_minimum():
    settings = FAST.replace(stop_rule="wmv", iterations=200, stop_window=20, stop_every=5, stop_patience=40,
                            min_iterations=20)
    fitter = Fitter(_image(_correlated(48)), settings=settings, iterations="auto", device="cpu", preview_every=5)
    averages = {}
    res = drain(fitter.steps(), lambda snap: averages.__setitem__(snap.iteration, snap.ema))
    delay = averaging_lag(settings.ema)
    minimum = res.history["signal_iteration"][int(np.argmin(res.history["signal"]))]
    assert res.best_iteration == min(minimum + delay, res.iterations) > minimum
    np.testing.assert_array_equal(res.image, averages[res.best_iteration])  # that very average, not the latest
    assert not np.array_equal(res.image, averages[res.iterations]) or res.best_iteration == res.iterations


def test_holdout_fraction_is_raised_on_small_images_only():
    assert holdout_fraction_for(512 * 512, 0.05, 500) == 0.05  # 13107 values held out already
    assert holdout_fraction_for(64 * 64, 0.05, 500) == pytest.approx(500 / 4096)
    assert holdout_fraction_for(64 * 64 * 3, 0.05, 500) == 0.05  # RGB: 614 values at 5 %
    assert holdout_fraction_for(24 * 24, 0.05, 500) == MAX_HOLDOUT_FRACTION  # capped
    assert holdout_fraction_for(64 * 64, 0.3, 500) == 0.3  # never below the asked fraction
    assert holdout_fraction_for(64 * 64, 0.05, 0) == 0.05  # 0 disables the raise
    with pytest.raises(ValueError, match="holdout_min_values"):
        holdout_fraction_for(100, 0.05, -1)
    with pytest.raises(ValueError, match="holdout fraction"):
        holdout_fraction_for(100, 1.5, 500)


@pytest.mark.parametrize(("size", "channels", "expected"), [(64, 1, 500 / 4096), (64, 3, 0.05), (160, 1, 0.05)])
def test_fitter_holds_out_at_least_the_minimum_count(size, channels, expected):
    fitter = Fitter(_image(_white(size), channels), settings=FAST.replace(stop_rule="holdout"), iterations="auto",
                    device="cpu")
    held = float((fitter.weight[:, :1] == 0).float().mean())
    assert held == pytest.approx(expected, abs=0.015)
    assert fitter.rules[0].count == pytest.approx(held * size * size * channels)
    # inpainting keeps the plain fraction of its known pixels (more unfitted pixels cost more there)
    mask = torch.ones(1, 1, size, size)
    mask[..., ::2] = 0
    settings = get_settings("fast", "inpaint", stop_rule="holdout")
    inpaint = Fitter(_image(_white(size), channels), Mask(mask), settings, iterations="auto", device="cpu")
    assert inpaint.rules[0].count / (channels * size * size / 2) == pytest.approx(0.05, abs=0.015)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_variance_from_the_noisy_image(seed):
    sigma2 = 0.1 ** 2
    white = noise_variance(_image(_white(seed=seed)))
    assert 0.85 * sigma2 < white < 1.05 * sigma2  # the tile planes take 3 of 64 degrees of freedom
    assert noise_variance(_image(_white(seed=seed), channels=3)) == pytest.approx(white)
    # correlated noise loses some low-frequency power to the planes, but stays of the right size
    assert 0.6 * sigma2 < noise_variance(_image(_correlated(seed=seed))) < sigma2
    assert noise_variance(torch.zeros(1, 1, 32, 32)) == 0.0  # no evidence


def test_discrepancy_keeps_the_first_average_at_the_noise_level():
    target = torch.zeros(1, 1, 8, 8)
    rule = Discrepancy(Identity(), target, torch.ones_like(target), level=0.25, every=5, min_iterations=10)
    far, near = torch.ones_like(target), torch.full_like(target, 0.5)  # residuals 1.0 and 0.25
    assert rule.update(3, far, far) == StopCheck()  # not a signal iteration
    assert rule.update(5, near, near).stop is False  # before min_iterations
    check = rule.update(10, far, far)
    assert check.signal == pytest.approx(1.0) and not check.stop
    check = rule.update(15, far, near)  # judged on the average (estimate), not the raw output
    assert check.stop and check.capture and check.signal == pytest.approx(0.25) and rule.best_iteration == 15
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="discrepancy level"):
            Discrepancy(Identity(), target, torch.ones_like(target), level=bad)


def test_discrepancy_compares_through_the_operator_on_measured_values_only():
    # super-resolution: the output is 2x the measurement's size; the residual is taken after A
    lr = _image(_correlated(32))
    settings = get_settings("fast", "super_resolve", stop_rule="discrepancy", iterations=30, min_iterations=5)
    res = drain(Fitter(lr, Downsampler(2), settings, iterations="auto", device="cpu").steps())
    assert res.history["estimate_delay"] == [0] and len(res.history["signal"]) == 6
    # inpainting: values at unknown pixels do not count
    known = torch.ones(1, 1, 8, 8)
    known[..., :4] = 0
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4] = 100.0  # garbage where unknown
    rule = Discrepancy(Mask(known), target, known, level=0.25, every=1, min_iterations=0)
    check = rule.update(1, target, torch.full_like(target, 0.5))
    assert check.signal == pytest.approx(0.25) and check.stop
    with pytest.raises(ValueError, match="no measured value"):
        Discrepancy(Identity(), target, torch.zeros_like(target), level=0.25)


def test_auto_fit_on_correlated_noise_stops_at_the_noise_level():
    clean = smooth_gray(64)[None, None].astype(np.float32)
    noisy = torch.from_numpy(clean) + torch.from_numpy(_correlated(64, 0.1)[None, None].astype(np.float32))
    settings = FAST.replace(stop_rule="auto", iterations=1500)
    fitter = Fitter(noisy, settings=settings, iterations="auto", device="cpu")
    res = drain(fitter.steps())
    assert res.history["stop_rule"] == ["discrepancy"] and res.stopped_early
    level = noise_variance(noisy)
    kept = torch.from_numpy(np.asarray(res.image, dtype=np.float32)).reshape(noisy.shape)
    assert float(((kept - noisy) ** 2).mean()) <= level * 1.001  # the kept average is at the noise level
    assert res.best_iteration == res.iterations  # it stops where it keeps
    mse = lambda a: float(((a - torch.from_numpy(clean)) ** 2).mean())  # noqa: E731
    assert mse(kept) < 0.5 * mse(noisy)  # and it denoised
