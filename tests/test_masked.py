"""Masked fits: the network sees the image with hidden pixels; loss and average on hidden pixels only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import add_noise, smooth_gray
from napari_dip.core.fit import Fitter, fit
from napari_dip.core.masking import CORRELATED_NOISE_RATIO, WHITE_NOISE_RATIO, check_mask_ratio, hide
from napari_dip.core.networks import DIPNet
from napari_dip.core.operators import Downsampler, Mask
from napari_dip.core.restore import Restoration
from napari_dip.core.settings import Settings, get_settings, presets_for, resolve_preset
from napari_dip.core.weights import builtin_path
from napari_dip.samples import psnr

MASKED = get_settings("pretrained", "denoise", weights=None)  # random start: no shipped file needed


def _t(img: np.ndarray) -> torch.Tensor:
    arr = img if img.ndim == 3 else img[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].float()


class CopyVisible(DIPNet):
    """Outputs the visible part of its input (0 at hidden pixels) and records the visibility maps."""

    size_multiple = 1
    min_cells = 1
    name = "copy"

    def __init__(self, channels: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = channels + 1, channels
        self.w = nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x[:, :-1] + 0 * self.w


def test_masked_fit_denoises_from_random_weights():
    clean = smooth_gray(64)
    noisy = add_noise(clean, 0.1, seed=2)
    res = fit(_t(noisy), settings=MASKED, iterations=150, device="cpu")
    assert psnr(res.image[..., 0], clean, 1.0) > psnr(noisy, clean, 1.0) + 5


def test_average_uses_only_predictions_made_while_the_pixel_was_hidden():
    # the copy net returns the pixel's own noisy value wherever it is visible: an average that took
    # visible pixels would be > 0; one built from hidden-pixel predictions only is exactly 0
    y = _t(0.2 + 0.6 * smooth_gray(32))
    net = CopyVisible()
    fitter = Fitter(y, settings=MASKED.replace(mask_ratio=0.3), iterations=40, net=net, device="cpu")
    res = fitter.steps()
    for _ in res:
        pass
    steps = fitter._ema_steps[0, 0]
    assert bool((steps > 0).all())  # every pixel was hidden at least once in 40 iterations
    assert float(fitter.ema.abs().max()) == 0.0
    # and the hidden share per iteration follows mask_ratio
    shares = [1 - float(x[0, -1].mean()) for x in net.seen]
    assert 0.2 < np.mean(shares) < 0.4


def test_held_out_and_unknown_pixels_are_never_shown():
    rng = np.random.default_rng(0)
    img = (0.2 + 0.6 * smooth_gray(32)).astype(np.float32)
    known = torch.from_numpy(rng.random((32, 32)) > 0.2)[None, None]
    target = _t(img) * known
    net = CopyVisible()
    settings = MASKED.replace(stop_rule="holdout", holdout_fraction=0.1, holdout_min_values=0, min_iterations=1,
                              stop_patience=1000, iterations=25)
    fitter = Fitter(target, Mask(known), settings, iterations="auto", net=net, device="cpu")
    for _ in fitter.steps():
        pass
    held = fitter.rules[0].held_out[0, 0] > 0
    unknown = ~known[0, 0]
    assert held.any() and unknown.any()
    for x in net.seen:
        visible, source = x[0, -1] > 0, x[0, 0]
        assert not bool(visible[held].any()) and not bool(visible[unknown].any())
        assert float(source[held].abs().max()) == 0.0 and float(source[unknown].abs().max()) == 0.0


def test_loss_covers_only_hidden_known_pixels():
    y = _t(smooth_gray(16))
    fitter = Fitter(y, settings=MASKED, iterations=1, device="cpu")
    hidden = torch.zeros(1, 1, 16, 16)
    hidden[..., :4, :] = 1
    out = y.clone()
    out[..., 4:, :] += 1.0  # wrong only where the pixels are visible: no loss
    assert float(fitter._loss(out, hidden)) == 0.0
    out[..., :4, :] += 0.5  # wrong by 0.5 on the hidden rows
    assert float(fitter._loss(out, hidden)) == pytest.approx(0.25)


def _correlated(size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth image plus white noise smoothed by [1, 2, 1] / 4 along x and y (band-limited, as FMD wide-field)."""
    n = np.random.default_rng(seed).normal(0, 1, (size + 2, size + 2))
    n = (n[:-2] + 2 * n[1:-1] + n[2:]) / 4
    n = (n[:, :-2] + 2 * n[:, 1:-1] + n[:, 2:]) / 4
    return (0.2 + 0.6 * smooth_gray(size) + 0.08 * n / n.std()).astype(np.float32)


def test_auto_mask_ratio_follows_the_noise_correlation():
    white = Fitter(_t(add_noise(smooth_gray(96), 0.08)), settings=MASKED, iterations=1, device="cpu")
    corr = Fitter(_t(_correlated()), settings=MASKED, iterations=1, device="cpu")
    assert white.mask_ratio == WHITE_NOISE_RATIO and white.average_weight == MASKED.ema
    assert corr.mask_ratio == CORRELATED_NOISE_RATIO and corr.average_weight >= 0.99
    fixed = Fitter(_t(_correlated()), settings=MASKED.replace(mask_ratio=0.5), iterations=1, device="cpu")
    assert fixed.mask_ratio == 0.5


def test_masked_fits_reject_what_they_cannot_do():
    y = _t(smooth_gray(32))
    with pytest.raises(ValueError, match="denoising and inpainting only"):
        Fitter(y, Downsampler(2), MASKED, iterations=1)
    with pytest.raises(ValueError, match="one image at a time"):
        Fitter(torch.cat([y, y], 1), settings=MASKED, iterations=1, groups=2)
    for bad in (0, 1, -0.1, 1.5, "half", None):
        with pytest.raises(ValueError, match="mask_ratio"):
            check_mask_ratio(bad)
        with pytest.raises(ValueError, match="mask_ratio"):
            Fitter(y, settings=MASKED.replace(mask_ratio=bad), iterations=1)


def test_hide_is_reproducible_and_respects_always_hidden():
    never = torch.zeros(1, 1, 8, 8)
    never[..., 0, :] = 1
    a = hide((1, 1, 8, 8), 0.5, torch.Generator().manual_seed(3), always_hidden=never)
    b = hide((1, 1, 8, 8), 0.5, torch.Generator().manual_seed(3), always_hidden=never)
    assert torch.equal(a, b) and float(a[..., 0, :].sum()) == 0


def test_auto_preset_resolves_by_device_and_task():
    assert resolve_preset("auto", "denoise", "cpu") == "pretrained"
    assert resolve_preset("auto", "inpaint", torch.device("cpu")) == "pretrained"
    assert resolve_preset("auto", "super_resolve", "cpu") == "fast"
    assert resolve_preset("auto", "denoise", "cuda:1") == "paper"
    assert resolve_preset("auto", "super_resolve", torch.device("mps")) == "paper"
    assert resolve_preset("fast", "denoise", "cuda") == "fast"
    # the light masked net only where weights ship for the image's channel count
    assert resolve_preset("auto", "denoise", "cpu", channels=1) == "pretrained"
    assert resolve_preset("auto", "denoise", "cpu", channels=2) == "fast"  # no 2-channel weights
    rgb = builtin_path(3) is not None and builtin_path(3).is_file()
    assert resolve_preset("auto", "denoise", "cpu", channels=3) == ("pretrained" if rgb else "fast")
    # colour inpainting stays 'fast' (the RGB weights filled holes worse than it: docs/performance.md)
    assert resolve_preset("auto", "inpaint", "cpu", channels=3) == "fast"
    assert resolve_preset("auto", "inpaint", "cpu", channels=1) == "pretrained"
    assert resolve_preset("pretrained", "inpaint", "cpu", channels=3) == "pretrained"  # asked for by name
    assert resolve_preset("auto", "denoise", "cuda", channels=2) == "paper"
    job = Restoration("denoise", np.zeros((2, 16, 16), np.float32), channel_axis=0, device="cpu")
    assert job.resolved_preset == "fast" and job.settings.input_kind == "noise"
    assert Restoration("denoise", np.zeros((16, 16), np.float32), device="cpu").settings.input_kind == "masked"
    assert "pretrained" not in presets_for("super_resolve") and "pretrained" in presets_for("denoise")
    with pytest.raises(ValueError, match="no settings for 'super_resolve'"):
        get_settings("pretrained", "super_resolve")
    with pytest.raises(ValueError, match="unknown preset"):
        get_settings("turbo", "denoise")


def test_a_tolerant_hold_out_stops_on_a_creeping_signal_but_keeps_the_latest_minimum():
    from napari_dip.core.stopping import HoldOut

    y = torch.zeros(1, 1, 4, 4)
    held = torch.ones(1, 1, 4, 4)
    strict = HoldOut(lambda x: x, y, held, patience=20, every=1, min_iterations=1)
    tolerant = HoldOut(lambda x: x, y, held, patience=20, every=1, min_iterations=1, tolerance=0.02)
    stops = {}
    for it in range(1, 200):
        value = 1.0 if it < 10 else 0.9 * (1 - 0.0002 * (it - 10))  # one real drop, then a 0.02 % creep
        est = torch.full((1, 1, 4, 4), value ** 0.5)
        for name, rule in (("strict", strict), ("tolerant", tolerant)):
            check = rule.update(it, est, est)
            if name == "tolerant" and it > 10:
                assert check.capture  # every new minimum is still kept as the estimate
            if check.stop and name not in stops:
                stops[name] = it
    assert stops.get("tolerant") == 30 and "strict" not in stops


def test_masked_fits_on_correlated_noise_use_the_tolerant_hold_out():
    white = Fitter(_t(add_noise(smooth_gray(96), 0.08)), settings=MASKED, iterations="auto", device="cpu")
    corr = Fitter(_t(_correlated()), settings=MASKED, iterations="auto", device="cpu")
    assert white.stop_rules == corr.stop_rules == ["holdout"]
    assert white.rules[0].tolerance == 0.0 and corr.rules[0].tolerance == 1.0


def test_full_tolerance_stops_patience_after_the_floor_however_the_signal_falls():
    from napari_dip.core.stopping import HoldOut

    y = torch.zeros(1, 1, 4, 4)
    held = torch.ones(1, 1, 4, 4)
    rule = HoldOut(lambda x: x, y, held, patience=10, every=1, min_iterations=5, tolerance=1.0, floor=5)
    stop = None
    for it in range(1, 100):
        est = torch.full((1, 1, 4, 4), 0.8 ** it)  # falls 36 % an iteration: a network learning the noise
        check = rule.update(it, est, est)
        if it >= 5:
            assert check.capture  # the minimum is still followed
        if check.stop:
            stop = it
            break
    assert stop == 15  # the first signal (at the floor) starts the patience, no later drop restarts it
    with pytest.raises(ValueError, match=r"tolerance must be in \[0, 1\]"):
        HoldOut(lambda x: x, y, held, tolerance=1.5)


def test_a_masked_fit_takes_no_estimate_before_its_floor():
    from napari_dip.core.stopping import HoldOut

    y = torch.zeros(1, 1, 4, 4)
    held = torch.ones(1, 1, 4, 4)
    rule = HoldOut(lambda x: x, y, held, patience=10, every=1, min_iterations=20, floor=20)
    values = {it: torch.full((1, 1, 4, 4), 0.01 * it if it < 20 else 0.5) for it in range(1, 40)}
    checks = {it: rule.update(it, v, v) for it, v in values.items()}
    assert not any(c.capture or c.improved for it, c in checks.items() if it < 20)  # lowest error at it 1: ignored
    assert checks[20].capture and rule.best_iteration == 20 and checks[30].stop
    # a warm plane of a masked fit: its first iterations have the lowest hold-out error, the estimate comes later
    rng = np.random.default_rng(0)
    stack = (np.stack([smooth_gray(32)] * 2) + 0.05 * rng.standard_normal((2, 32, 32))).astype(np.float32)
    job = Restoration("denoise", stack, preset="pretrained", weights=None, iterations="auto", max_iterations=200,
                      device="cpu", warm_start=True, stop_patience=20, warm_stop_patience=10, min_iterations=30)
    job.run()
    assert all(f.best_iteration >= 30 for f in job.fits)


def _fit_with_averages(noisy: np.ndarray, settings) -> tuple:
    """A fit's result and its running average at every iteration (exported as the result is)."""
    fitter = Fitter(_t(noisy), settings=settings, iterations="auto", device="cpu", preview_every=1)
    averages, steps = {}, fitter.steps()
    while True:
        try:
            snap = next(steps)
        except StopIteration as stop:
            return stop.value, averages
        if snap.ema is not None:
            averages[snap.iteration] = np.array(snap.ema)


def test_keep_estimate_stop_keeps_the_average_when_the_rule_stops():
    noisy = add_noise(smooth_gray(48), 0.1, seed=1)
    base = MASKED.replace(stop_patience=20, min_iterations=20, iterations=400, keep_estimate="minimum")
    low, low_averages = _fit_with_averages(noisy, base)  # the engine's default: the average at the minimum
    last, last_averages = _fit_with_averages(noisy, base.replace(keep_estimate="stop"))
    assert Settings().keep_estimate == "minimum" and MASKED.keep_estimate == "stop"  # the masked preset's
    inpaint = get_settings("pretrained", "inpaint")  # measured for denoising only (docs/engine.md)
    assert (inpaint.keep_estimate, inpaint.stop_patience, inpaint.lr) == ("minimum", 100, 1e-3)
    assert last.stopped_early and last.iterations == low.iterations  # the same fit and rule: the same stop
    assert last.best_iteration == last.iterations and low.best_iteration < low.iterations
    np.testing.assert_array_equal(last.image, last_averages[last.iterations])
    np.testing.assert_array_equal(low.image, low_averages[low.best_iteration])
    assert not np.array_equal(last.image, low.image)
    with pytest.raises(ValueError, match="keep_estimate must be 'minimum'"):
        Fitter(_t(noisy), settings=base.replace(keep_estimate="last"), iterations="auto", device="cpu")
