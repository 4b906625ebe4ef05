"""The command line, end to end in subprocesses."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from conftest import add_noise, smooth_gray

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_dip", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


@pytest.fixture()
def noisy_png(tmp_path):
    clean = smooth_gray(32)
    noisy = np.clip(add_noise(clean, 0.1) * 255, 0, 255).astype(np.uint8)
    path = tmp_path / "noisy.png"
    iio.imwrite(path, noisy)
    return path, clean


def test_denoise_png_to_tiff_with_log(noisy_png, tmp_path):
    src, clean = noisy_png
    before = src.read_bytes()
    out, log = tmp_path / "out.tif", tmp_path / "log.json"
    r = cli("denoise", src, "-o", out, "--iterations", 150, "--preset", "fast", "--device", "cpu", "--log", log)
    assert r.returncode == 0, r.stderr
    assert src.read_bytes() == before
    res = tifffile.imread(out)
    assert res.shape == (32, 32) and res.dtype == np.float32
    noisy = iio.imread(src) / 255.0
    err = lambda x: np.mean((x - clean) ** 2)  # noqa: E731
    assert err(res / 255.0) < err(noisy) / 2
    data = json.loads(log.read_text())
    assert data["command"] == "denoise" and data["slices"][0]["iterations"] == 150
    assert len(data["slices"][0]["loss"]) == 150


def test_inpaint_and_super_resolve(tmp_path):
    img = (smooth_gray(32) * 60000).astype(np.uint16)
    mask = np.zeros((32, 32), np.uint8)
    mask[10:14, 5:25] = 255
    tifffile.imwrite(tmp_path / "img.tif", img)
    iio.imwrite(tmp_path / "mask.png", mask)
    r = cli("inpaint", tmp_path / "img.tif", "--mask", tmp_path / "mask.png", "-o", tmp_path / "filled.tif",
            "--iterations", 20, "--preset", "fast", "--quiet")
    assert r.returncode == 0, r.stderr
    filled = tifffile.imread(tmp_path / "filled.tif")
    assert np.array_equal(filled[mask == 0], img[mask == 0].astype(np.float32))
    r = cli("super-resolve", tmp_path / "img.tif", "--factor", 2, "-o", tmp_path / "big.tif", "--iterations", 5,
            "--preset", "fast", "--quiet")
    assert r.returncode == 0, r.stderr
    assert tifffile.imread(tmp_path / "big.tif").shape == (64, 64)


def test_refuses_to_overwrite(noisy_png, tmp_path):
    src, _ = noisy_png
    before = src.read_bytes()
    r = cli("denoise", src, "-o", src, "--iterations", 1, "--overwrite")
    assert r.returncode == 2 and "is the input file" in r.stderr
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"keep me")
    r = cli("denoise", src, "-o", existing, "--iterations", 1)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert existing.read_bytes() == b"keep me" and src.read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["denoise", "missing.png", "-o", "o.tif"], "no such file"),
    (["denoise", "notimage.png", "-o", "o.tif"], "cannot read"),
    (["denoise", "noisy.png", "-o", "o.tif", "--iterations", "0"], "positive integer"),
    (["super-resolve", "noisy.png", "-o", "o.tif", "--factor", "1.5"], "integer >= 2"),
    (["denoise", "noisy.png", "-o", "o.tif", "--device", "tpu"], "unknown device"),
    (["denoise", "noisy.png", "-o", "o.xyz"], "unsupported format"),
])
def test_clear_errors(noisy_png, tmp_path, args, message):
    (tmp_path / "notimage.png").write_text("this is not a PNG")
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "o.tif").exists()


def test_demo_info_version():
    r = cli("demo", "--size", 32, "--iterations", 30, "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and "dB" in r.stdout
    r = cli("info")
    assert r.returncode == 0 and "2,217,831" in r.stdout
    r = cli("--version")
    assert r.returncode == 0 and "napari-dip" in r.stdout


def test_precision_option(noisy_png, tmp_path):
    src, clean = noisy_png
    out, log = tmp_path / "out.tif", tmp_path / "log.json"
    r = cli("denoise", src, "-o", out, "--iterations", 60, "--preset", "fast", "--device", "cpu",
            "--precision", "bf16", "--log", log, "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(log.read_text())["precision"] == "bf16"
    res = tifffile.imread(out)
    assert res.dtype == np.float32 and np.isfinite(res).all()
    r = cli("denoise", src, "-o", tmp_path / "other.tif", "--precision", "fp8")
    assert r.returncode == 2 and "fp8" in r.stderr and not (tmp_path / "other.tif").exists()
