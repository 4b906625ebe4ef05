"""Smoke tests of the quality benchmark's machinery (benchmarks/quality.py) on tiny synthetic data."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _write_png(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


def _pattern(size: int, seed: int, rgb: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    base = 0.5 + 0.3 * np.sin(5 * xx + seed) * np.cos(4 * yy)
    img = np.stack([base, 0.2 + 0.6 * xx, 0.8 - 0.5 * yy], axis=-1) if rgb else base
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_psnr_known_values(quality):
    ref = np.zeros((4, 4))
    assert quality.psnr(ref + 255.0, ref) == pytest.approx(0.0)
    assert quality.psnr(ref + 25.5, ref) == pytest.approx(20.0)
    assert math.isinf(quality.psnr(ref, ref))


def test_rgb_to_y_bt601(quality):
    white = np.full((2, 2, 3), 255.0)
    black = np.zeros((2, 2, 3))
    red = np.zeros((1, 1, 3))
    red[..., 0] = 255
    assert np.allclose(quality.rgb_to_y(white), 235.0, atol=1e-3)
    assert np.allclose(quality.rgb_to_y(black), 16.0)
    assert quality.rgb_to_y(red)[0, 0] == pytest.approx(16 + 65.481)
    gray = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(quality.rgb_to_y(gray), gray)


def test_center_crop_and_shave(quality):
    img = np.arange(10 * 7).reshape(10, 7)
    crop = quality.center_crop(img, 4)
    assert crop.shape == (4, 4) and crop[0, 0] == img[3, 1]
    assert quality.center_crop(img, 6, multiple=4).shape == (4, 4)
    assert quality.center_crop(img, None).shape == (10, 7)
    assert quality.shave(img, 2).shape == (6, 3) and quality.shave(img, 2)[0, 0] == img[2, 2]
    with pytest.raises(ValueError):
        quality.center_crop(img, 3, multiple=4)


def test_sr_evaluation_uses_shaved_y(quality):
    clean = np.full((12, 12, 3), 128.0)
    est = clean.copy()
    est[:4] += 50  # differs from the clean image only in the 4 px border that the evaluation drops
    assert quality.evaluation_view("sr", est).shape == (4, 4)
    assert math.isinf(quality.measure("sr", est, clean)[0])
    est[5, 5] = 0.0
    assert np.isfinite(quality.measure("sr", est, clean)[0])
    assert np.isfinite(quality.measure("denoise", est, clean)[0])


def test_noise_is_seeded_and_clipped(quality):
    img = np.full((32, 32, 3), 128.0)
    a = quality.add_gaussian_noise(img, 25, seed=0, name="x")
    assert np.array_equal(a, quality.add_gaussian_noise(img, 25, seed=0, name="x"))
    assert not np.array_equal(a, quality.add_gaussian_noise(img, 25, seed=0, name="y"))
    assert a.min() >= 0 and a.max() <= 255
    assert quality.psnr(a, img) == pytest.approx(20.17, abs=0.3)


def test_harness_end_to_end(quality, tmp_path):
    data = tmp_path / "data"
    for i, name in enumerate(["house", "lena"]):
        _write_png(data / "paper" / "denoising_color9" / f"{name}_GT.png", _pattern(40, i, rgb=True))
    gt = _pattern(32, 3, rgb=False)
    rng = np.random.default_rng(0)
    masked = np.where(rng.random(gt.shape) < 0.5, 0, gt).astype(np.uint8)
    _write_png(data / "paper" / "inpainting_table1" / "house_GT.png", gt)
    _write_png(data / "paper" / "inpainting_table1" / "house_masked.png", masked)
    out = tmp_path / "report.md"
    rows = quality.main(["--data", str(data), "--tasks", "denoise", "inpaint", "sr", "--preset", "fast",
                         "--device", "cpu", "--stop-rule", "holdout", "wmv", "--max-iterations", "12",
                         "--preview-every", "4", "--set", "min_iterations=5", "stop_patience=5",
                         "--out", str(out), "--json", str(tmp_path / "rows.json")])
    assert [(r.task, r.image, r.rule) for r in rows] == [
        ("denoise", "house", "holdout"), ("denoise", "house", "wmv"),
        ("denoise", "lena", "holdout"), ("denoise", "lena", "wmv"),
        ("inpaint", "house", "holdout"), ("inpaint", "house", "wmv")]
    for r in rows:
        assert np.isfinite(r.psnr) and np.isfinite(r.input_psnr) and r.oracle_psnr >= r.psnr
        assert 1 <= r.iterations <= 12 and r.curve
    assert rows[4].paper == 39.16  # the inpainting table's per-image figure
    text = out.read_text()
    assert "| house | holdout |" in text and "| lena | wmv |" in text
    assert "**mean** (2) | holdout" in text and "**mean** (1) | wmv" in text
    assert "29.22" in text and "39.16" in text  # the paper's mean and per-image figures
    assert "## Summary" in text and "cpu" in text
    assert (tmp_path / "rows.json").is_file()


def test_replay_patience(quality):
    signal = [(5, 3.0), (10, 2.0), (15, 2.5), (20, 1.0), (25, 1.5), (30, 1.6)]
    curve = [(10, 20.0), (20, 25.0), (30, 24.0)]
    assert quality.replay_patience(signal, curve, patience=5, min_iterations=0) == (10, 20.0)
    assert quality.replay_patience(signal, curve, patience=10, min_iterations=0) == (20, 25.0)
    # ES-WMV keeps the average `delay` iterations after the minimum, at most the last checkpoint
    assert quality.replay_patience(signal, curve, patience=5, min_iterations=0, delay=10) == (20, 25.0)
    assert quality.replay_patience(signal, curve, patience=10, min_iterations=0, delay=50) == (30, 24.0)
    rows = [{"task": "denoise", "rule": "holdout", "signal": signal, "curve": curve, "oracle_psnr": 25.0}]
    table = quality.replay_table(rows, [5, 10], min_iterations=0)
    assert "| denoise | holdout | 5.00 | 0.00 |" in table
    # a replayed delay of 10: the minimum at 10 keeps the average at 20, the one at 20 that at 30
    assert "| denoise | holdout | 0.00 | 1.00 |" in quality.replay_table(rows, [5, 10], min_iterations=0, delay=10)


def test_missing_data_is_skipped(quality, tmp_path, capsys):
    assert quality.main(["--data", str(tmp_path / "absent")]) == []
    assert "not found" in capsys.readouterr().err
