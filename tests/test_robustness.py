"""Robustness (issue 8): bad inputs, faults and cancellation through the API, the CLI and the widgets.

Every case checks its own documented behaviour (the error text, or the result), that the input
array/file/layer is byte-identical afterwards, that no thread or worker is left running, and that a
result exists only when there is one. The list, with each behaviour, is in docs/robustness.md.

Fits are tiny (at most 32x32 pixels, the 'fast' preset, at most 20 iterations) on the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_widget
from napari_dip import denoise, inpaint, super_resolve
from napari_dip.cli import main as cli_main
from napari_dip.core.fit import DIPMemoryError
from napari_dip.core.networks import SkipNet
from napari_dip.core.restore import Restoration

fitmod = importlib.import_module("napari_dip.core.fit")  # the package re-exports a function named fit
FAST = dict(preset="fast", device="cpu")
REPO = Path(__file__).resolve().parents[1]


def rand(shape, dtype=np.float32, seed=0, scale=1.0, offset=0.0):
    return (np.random.default_rng(seed).random(shape) * scale + offset).astype(dtype)


def digest(arr) -> tuple:
    a = np.asarray(arr)
    return a.dtype.str, a.shape, hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture()
def no_new_threads():
    """The Python thread count is back to its start value when the test ends."""
    start = threading.active_count()
    yield
    deadline = time.monotonic() + 5
    while threading.active_count() > start and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= start, [t.name for t in threading.enumerate()]


def fail_forward(monkeypatch, error: BaseException, at_call: int = 1, delay: float = 0.0):
    """Make the 'fast' network raise ``error`` on its ``at_call``-th forward pass (1-based);
    ``delay`` slows every pass (to cancel a fit deterministically mid-way)."""
    original = SkipNet.forward
    calls = {"n": 0}

    def forward(self, z):
        calls["n"] += 1
        if delay:
            time.sleep(delay)
        if at_call and calls["n"] >= at_call:
            raise error
        return original(self, z)

    monkeypatch.setattr(SkipNet, "forward", forward)
    return calls


# =============================================================================================
# API
# =============================================================================================
@pytest.mark.parametrize(("name", "image", "error", "message"), [
    ("nan", np.where(np.eye(8, dtype=bool), np.nan, 0.5), ValueError,
     r"image contains 8 NaN or Inf values; replace them, or mark them as pixels to fill in with inpainting"),
    ("inf", np.where(np.eye(8, dtype=bool)[:, ::-1], np.inf, 0.5)[:, :5], ValueError,
     r"image contains 5 NaN or Inf values"),
    ("-inf", np.full((4, 4), -np.inf), ValueError, r"image contains 16 NaN or Inf values"),
    ("bool", np.ones((8, 8), bool), TypeError, r"unsupported dtype bool; use an integer or real float array"),
    ("complex", np.ones((8, 8), np.complex64), TypeError, r"unsupported dtype complex64"),
    ("object", np.array([[None, 1], [2, 3]], dtype=object), TypeError, r"unsupported dtype object"),
    ("1d", np.ones(8, np.float32), ValueError, r"at least 2 dimensions \(Y, X\), got shape \(8,\)"),
    ("empty", np.ones((0, 8), np.float32), ValueError, r"image is empty \(shape \(0, 8\)\)"),
])
def test_api_rejects_bad_images(no_new_threads, name, image, error, message):
    before = digest(image)
    with pytest.raises(error, match=message):
        denoise(image, iterations=2, **FAST)
    assert digest(image) == before


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 5), (33, 17)])
def test_api_tiny_and_odd_sizes_keep_their_shape(no_new_threads, shape):
    """Sizes not divisible by 2**depth (and single pixels) are padded for the network, cropped back."""
    image = rand(shape, seed=1)
    before = digest(image)
    out = denoise(image, iterations=3, **FAST)
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert digest(image) == before


def test_api_constant_image_stays_constant(no_new_threads):
    image = np.full((16, 16), 7, np.uint16)
    out = denoise(image, iterations=5, **FAST)
    assert out.shape == image.shape and np.isfinite(out).all()
    # a flat image maps to 0.5 in [0, 1] (reachable by the sigmoid), i.e. back to 7 +- a fraction
    assert np.abs(out - 7).max() < 0.5
    assert (image == 7).all()


@pytest.mark.parametrize(("name", "image", "kwargs", "layout"), [
    ("uint16", rand((16, 16), np.float64, scale=60000).astype(np.uint16), {}, (1, 1, False)),
    ("int16 negative", rand((16, 16), scale=-300).astype(np.int16), {}, (1, 1, False)),
    ("float64", rand((16, 16), np.float64, scale=1e-3, offset=-5), {}, (1, 1, False)),
    ("big-endian", rand((16, 16), ">f4", scale=3), {}, (1, 1, False)),
    ("rgba", rand((16, 16, 4), scale=255).astype(np.uint8), {}, (1, 4, True)),
    ("2 channels", rand((16, 16, 2)), {"channel_axis": -1}, (1, 2, False)),
    ("2 channels default", rand((16, 16, 2)), {}, (16, 1, False)),  # documented: a stack of 16x2 planes
])
def test_api_dtypes_and_channels(no_new_threads, name, image, kwargs, layout):
    before = digest(image)
    job = Restoration("denoise", image, iterations=3, **FAST, **kwargs)
    assert (job.n_slices, job.layout.channels, job.layout.rgb) == layout
    out = job.run()
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    lo, hi = float(image.min()), float(image.max())
    margin = 0.05 * (hi - lo)
    assert lo - margin <= out.min() and out.max() <= hi + margin  # in the input's own units
    assert digest(image) == before


@pytest.mark.parametrize(("name", "mask", "error", "message"), [
    ("empty", np.zeros((8, 8), np.uint8), ValueError, r"the mask is empty: there are no pixels to fill in"),
    ("full", np.ones((8, 8), bool), ValueError, r"the mask covers every pixel of slice 0: there is no known pixel"),
    ("wrong shape", np.ones((8, 9), np.uint8), ValueError,
     r"mask shape \(8, 9\) fits neither one plane \(8, 8\) nor the whole stack"),
    ("3D labels for a 2D image", np.ones((2, 8, 8), np.uint8), ValueError, r"mask shape \(2, 8, 8\) fits neither"),
    ("NaN", np.full((8, 8), np.nan), ValueError, r"mask contains NaN values"),
    ("strings", np.full((8, 8), "x"), TypeError, r"mask has unsupported dtype <U1"),
])
def test_api_rejects_bad_masks(no_new_threads, name, mask, error, message):
    image = rand((8, 8))
    before, mask_before = digest(image), digest(mask)
    with pytest.raises(error, match=message):
        inpaint(image, mask, iterations=2, **FAST)
    assert digest(image) == before and digest(mask) == mask_before


def test_api_non_binary_mask_fills_every_nonzero_label(no_new_threads):
    image = rand((12, 12), seed=2)
    mask = np.zeros((12, 12), np.int32)
    mask[2:4, 2:4], mask[6, 6], mask[9, 1:5] = 7, -1, 255
    out = inpaint(image, mask, iterations=3, **FAST)
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])  # known pixels kept exactly
    assert not np.allclose(out[mask != 0], image[mask != 0])  # every label was filled in


def test_api_nan_pixels_under_the_mask_are_filled_and_outside_refused(no_new_threads):
    image = rand((10, 10), np.float64, seed=3)
    image[4, 4] = np.nan
    mask = np.zeros((10, 10), bool)
    mask[4, 4] = True
    out = inpaint(image, mask, iterations=3, **FAST)
    assert np.isfinite(out).all() and np.isnan(image[4, 4])  # input untouched, hole filled
    with pytest.raises(ValueError, match=r"1 NaN or Inf values outside the mask; add them to the mask"):
        inpaint(image, np.roll(mask, 1), iterations=3, **FAST)


def test_api_2d_mask_applies_to_every_plane_of_a_stack(no_new_threads):
    image = rand((2, 8, 8), seed=4)
    mask = np.zeros((8, 8), bool)
    mask[3:5, 3:5] = True
    out = inpaint(image, mask, iterations=2, **FAST)
    assert out.shape == (2, 8, 8)
    np.testing.assert_array_equal(out[:, ~mask], image[:, ~mask])


@pytest.mark.parametrize(("factor", "message"), [
    (1, r"factor must be an integer >= 2, got 1$"),
    (0, r"got 0$"),
    (-2, r"got -2$"),
    (2.5, r"got 2\.5$"),
    ("two", r"got 'two'$"),
    (True, r"got True$"),
    (None, r"super-resolution needs a factor \(an integer >= 2\)"),
])
def test_api_rejects_bad_factors(factor, message):
    with pytest.raises(ValueError, match=message):
        super_resolve(rand((8, 8)), factor, iterations=2, **FAST)


def test_api_integral_float_factor_is_accepted(no_new_threads):
    assert super_resolve(rand((6, 5)), 2.0, iterations=2, **FAST).shape == (12, 10)


@pytest.mark.parametrize(("iterations", "message"), [
    (0, r"got 0$"), (-5, r"got -5$"), (2.5, r"got 2\.5$"), ("many", r"got 'many'$"), (True, r"got True$"),
])
def test_api_rejects_bad_iterations(iterations, message):
    with pytest.raises(ValueError, match=r"iterations must be a positive integer or 'auto', " + message):
        denoise(rand((8, 8)), iterations=iterations, **{**FAST})


@pytest.mark.parametrize(("device", "error", "message"), [
    ("banana", ValueError, r"unknown device 'banana'; use one of \['auto', 'cpu'"),
    ("", ValueError, r"unknown device ''"),
    ("cuda", RuntimeError, r"device 'cuda' was requested but torch finds no CUDA GPU .*; use 'cpu' or 'auto'"),
    ("cuda:3", RuntimeError, r"device 'cuda:3'"),
])
def test_api_rejects_unknown_or_missing_devices(device, error, message):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(error, match=message):
        denoise(rand((8, 8)), iterations=2, preset="fast", device=device)


def test_api_out_of_memory_says_what_to_change_and_keeps_the_partial_result(no_new_threads, monkeypatch):
    fail_forward(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), at_call=4)
    image = rand((16, 16))
    before = digest(image)
    job = Restoration("denoise", image, iterations=10, **FAST)
    with pytest.raises(DIPMemoryError) as info:
        job.run()
    text = str(info.value)
    assert isinstance(info.value, MemoryError)
    for hint in ("out of memory on cpu", "a smaller image or crop", "tiling", "another device",
                 "Tried to allocate 2.00 GiB"):
        assert hint in text, text
    partial = job.result(cancelled=True)  # the 3 iterations that ran are not lost
    assert partial.shape == image.shape and np.isfinite(partial).all()
    assert digest(image) == before


def test_api_out_of_memory_while_setting_up_a_fit_is_a_dip_memory_error(monkeypatch):
    def no_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(fitmod, "make_input", no_memory)
    with pytest.raises(DIPMemoryError, match="another device"):
        denoise(rand((8, 8)), iterations=2, **FAST)


def test_api_result_after_a_failure_inside_the_first_iteration(monkeypatch):
    fail_forward(monkeypatch, KeyboardInterrupt(), at_call=1)
    job = Restoration("denoise", rand((2, 8, 8)), iterations=3, **FAST)
    with pytest.raises(KeyboardInterrupt):
        job.run()
    out = job.result(cancelled=True)
    assert out.shape == (2, 8, 8) and np.isnan(out).all()


def test_api_exception_in_a_callback_propagates_and_loses_nothing(no_new_threads):
    image = rand((8, 8))
    before = digest(image)
    job = Restoration("denoise", image, iterations=5, **FAST)

    def callback(snap):
        if snap.iteration == 2:
            raise ZeroDivisionError("callback bug")

    with pytest.raises(ZeroDivisionError, match="callback bug"):
        job.run(callback)
    assert np.isfinite(job.result(cancelled=True)).all() and digest(image) == before


def test_api_too_large_for_memory_is_refused_with_the_size_that_fits(no_new_threads):
    from napari_dip.core.memory import estimate_fit_bytes
    from napari_dip.core.settings import get_settings

    image = rand((160, 160))  # refused before any fit: nothing is allocated for the network
    budget = estimate_fit_bytes(get_settings("fast", "denoise"), 1, 100, 100)  # room for about 100x100
    before = digest(image)
    with pytest.raises(DIPMemoryError, match=r"a 160x160 output needs about [\d.]+ MiB with these settings on cpu, "
                                             r"[\d.]+ MiB is available: the largest square that fits is about "
                                             r"(\d+)x\1 input pixels\. Use tiling \(tile='auto'\)") as info:
        Restoration("denoise", image, iterations=1, max_memory=budget, tile=None, **FAST)
    side = int(re.search(r"about (\d+)x", str(info.value)).group(1))
    assert 64 <= side < 160
    with pytest.raises(DIPMemoryError, match=r"not even a small tile fits"):
        Restoration("denoise", image, iterations=1, max_memory=1, tile="auto", **FAST)
    assert digest(image) == before


def test_api_too_large_for_memory_is_tiled(no_new_threads):
    from napari_dip.core.memory import estimate_fit_bytes
    from napari_dip.core.settings import get_settings

    image = rand((100, 100), seed=5)  # one iteration per tile: still a tiny amount of work
    budget = estimate_fit_bytes(get_settings("fast", "denoise"), 1, 96, 96)
    before = digest(image)
    job = Restoration("denoise", image, iterations=1, max_memory=budget, tile="auto", **FAST)
    assert job.tile_side is not None and len(job.regions()) > 1
    out = job.run()
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert digest(image) == before


def test_api_memory_estimate_and_largest_side_agree():
    from napari_dip.core.memory import estimate_fit_bytes, largest_fitting_side
    from napari_dip.core.settings import get_settings

    s = get_settings("fast", "denoise")
    for side in (64, 128):
        assert largest_fitting_side(s, 1, estimate_fit_bytes(s, 1, side, side)) == side


# =============================================================================================
# Loading models and weights safely
# =============================================================================================
class _Payload:
    """Unpickling this creates ``marker``: proof that code in a file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_in_a_weights_file_is_refused(tmp_path, no_new_threads):
    from napari_dip.applications.preimage import load_model

    marker, weights = tmp_path / "pwned", tmp_path / "evil.pt"
    with open(weights, "wb") as f:
        pickle.dump({"conv.weight": _Payload(marker)}, f)
    before = file_digest(weights)
    with pytest.raises(ValueError, match=r"evil\.pt: refused: not a plain state dict of tensors"):
        load_model(torch.nn.Conv2d(1, 1, 1), weights=weights)
    assert not marker.exists() and file_digest(weights) == before
    # a real state dict still loads
    net = torch.nn.Conv2d(1, 1, 1)
    torch.save(net.state_dict(), tmp_path / "good.pt")
    loaded, _ = load_model(torch.nn.Conv2d(1, 1, 1), weights=tmp_path / "good.pt")
    assert torch.equal(loaded.weight, net.weight)


def test_pickle_payload_as_a_model_file_is_refused(tmp_path):
    from napari_dip.applications.preimage import load_model

    marker, model = tmp_path / "pwned", tmp_path / "evil.pt"
    with open(model, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(ValueError, match=r"evil\.pt: not a TorchScript model"):
        load_model(str(model))
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in (REPO / "src" / "napari_dip").rglob("*.py"):
        for m in re.finditer(r"torch\.load\((.*?)\)\s*$", path.read_text(), re.MULTILINE):
            calls.append((path.name, m.group(1)))
    assert calls, "expected at least the weights loader"
    assert all("weights_only=True" in args for _, args in calls), calls
    for path in (REPO / "src" / "napari_dip").rglob("*.py"):  # and no unpickling of files at all
        assert not re.search(r"pickle\.loads?\(|dill\.|joblib\.load", path.read_text()), path


# =============================================================================================
# CLI
# =============================================================================================
def cli(*args) -> tuple[int, str]:
    """Run ``napari-dip`` in this process; returns (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli_main([str(a) for a in args])
        except SystemExit as exit_:
            rc = exit_.code
    return rc, err.getvalue()


QUICK = ["--iterations", "3", "--preset", "fast", "--device", "cpu", "--quiet"]


@pytest.fixture()
def files(tmp_path):
    """A folder of good and bad input files; yields (folder, digests of everything in it)."""
    import imageio.v3 as iio
    import tifffile

    g = rand((16, 16), scale=255).astype(np.uint8)
    iio.imwrite(tmp_path / "gray.png", g)
    iio.imwrite(tmp_path / "la.png", np.stack([g, np.full_like(g, 255)], -1))
    iio.imwrite(tmp_path / "rgba.png", np.stack([g, g[::-1], g.T, np.full_like(g, 200)], -1))
    iio.imwrite(tmp_path / "u16.png", (g.astype(np.uint16) * 250))
    tifffile.imwrite(tmp_path / "gray.tif", g)
    tifffile.imwrite(tmp_path / "bigendian.tif", rand((16, 16), ">f4", scale=10), byteorder=">")
    tifffile.imwrite(tmp_path / "pages.tif", rand((3, 12, 12)))
    tifffile.imwrite(tmp_path / "signed.tif", rand((16, 16), scale=-500, offset=100).astype(np.int16))
    tifffile.imwrite(tmp_path / "f64.tif", rand((16, 16), np.float64, scale=1e-6))
    tifffile.imwrite(tmp_path / "complex.tif", np.ones((8, 8), np.complex64))
    tifffile.imwrite(tmp_path / "bool.tif", np.ones((8, 8), bool))
    (tmp_path / "text.tif").write_text("hello")
    (tmp_path / "text.png").write_text("this is not a PNG")
    (tmp_path / "empty.tif").write_bytes(b"")
    whole = (tmp_path / "gray.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "folder.tif").mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    tifffile.imwrite(tmp_path / "mask_empty.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "mask_full.tif", np.ones((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "mask_3d.tif", np.ones((2, 16, 16), np.uint8))
    (tmp_path / "existing.tif").write_bytes(b"keep me")
    digests = {p.name: file_digest(p) for p in tmp_path.iterdir() if p.is_file()}
    return tmp_path, digests


def unchanged(folder: Path, digests: dict, new: set[str] = frozenset()) -> None:
    """Every input file is byte-identical, and the only new files are ``new``."""
    now = {p.name for p in folder.iterdir() if p.name != "folder.tif"}
    assert now == set(digests) | set(new), now ^ (set(digests) | set(new))
    for name, d in digests.items():
        assert file_digest(folder / name) == d, name


@pytest.mark.parametrize(("name", "message"), [
    ("missing.tif", r"missing\.tif: no such file"),
    ("folder.tif", r"folder\.tif: is a folder, not an image file"),
    ("text.tif", r"text\.tif: cannot read as an image: the file is damaged or not a TIFF image \(TiffFileError"),
    ("text.png", r"text\.png: cannot read as an image: the file is damaged or not a PNG, JPEG or BMP image"),
    ("empty.tif", r"empty\.tif: cannot read as an image: the file is damaged or not a TIFF image"),
    ("truncated.tif", r"truncated\.tif: cannot read as an image"),
    ("complex.tif", r"complex\.tif: not an image \(dtype complex64, shape \(8, 8\)\)"),
    ("bool.tif", r"image has unsupported dtype bool"),
])
def test_cli_unreadable_inputs_exit_2_with_a_message(files, no_new_threads, name, message):
    folder, digests = files
    rc, err = cli("denoise", folder / name, "-o", folder / "out.tif", *QUICK)
    assert rc == 2, err
    assert re.search(message, err), err
    assert err.startswith("napari-dip: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one clear line, not a list of plugins to install
    unchanged(folder, digests)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without permission")
def test_cli_file_without_read_permission(files):
    folder, digests = files
    path = folder / "gray.tif"
    path.chmod(0)
    try:
        rc, err = cli("denoise", path, "-o", folder / "out.tif", *QUICK)
    finally:
        path.chmod(0o644)
    assert rc == 2 and "gray.tif: cannot read as an image" in err and "PermissionError" in err
    unchanged(folder, digests)


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "existing.tif"], r"output .*existing\.tif exists; pass --overwrite to replace it"),
    (["-o", "gray.tif", "--overwrite"], r"output .*gray\.tif is the input file .*gray\.tif: refusing to overwrite"),
    (["-o", "./sub/../gray.tif", "--overwrite"], r"is the input file"),
    (["-o", "folder.tif"], r"output .*folder\.tif is a folder; give a file name"),
    (["-o", "nowhere/out.tif"], r"output folder .*nowhere does not exist"),
    (["-o", "out.xyz"], r"unsupported format '\.xyz'; use \.tif, \.tiff, \.png or \.jpg"),
    (["-o", "out.tif", "--log", "gray.tif", "--overwrite"], r"log .*gray\.tif is the same path as .*gray\.tif"),
    (["-o", "out.tif", "--log", "existing.tif"], r"log .*existing\.tif exists; pass --overwrite"),
    (["-o", "out.tif", "--log", "nowhere/log.json"], r"log folder .*nowhere does not exist"),
])
def test_cli_refuses_unsafe_outputs(files, args, message):
    folder, digests = files
    (folder / "sub").mkdir()
    args = [str(folder / a) if a.endswith((".tif", ".json", ".xyz")) else a for a in args]
    rc, err = cli("denoise", folder / "gray.tif", *args, *QUICK)
    assert rc == 2, err
    assert re.search(message, err), err
    (folder / "sub").rmdir()
    unchanged(folder, digests)


def test_cli_refuses_the_mask_as_output(files):
    folder, digests = files
    rc, err = cli("inpaint", folder / "gray.tif", "--mask", folder / "mask.tif", "-o", folder / "mask.tif",
                  "--overwrite", *QUICK)
    assert rc == 2 and re.search(r"mask\.tif is the input file .*mask\.tif", err), err
    unchanged(folder, digests)


@pytest.mark.parametrize(("mask", "message"), [
    ("mask_empty.tif", "the mask is empty: there are no pixels to fill in"),
    ("mask_full.tif", "the mask covers every pixel of slice 0"),
    ("mask_3d.tif", r"mask shape \(2, 16, 16\) fits neither one plane \(16, 16\)"),
    ("text.tif", r"text\.tif: cannot read as an image"),
])
def test_cli_bad_masks(files, mask, message):
    folder, digests = files
    rc, err = cli("inpaint", folder / "gray.tif", "--mask", folder / mask, "-o", folder / "out.tif", *QUICK)
    assert rc == 2 and re.search(message, err), err
    unchanged(folder, digests)


@pytest.mark.parametrize(("args", "message"), [
    (["super-resolve", "--factor", "1"], r"argument --factor: factor must be an integer >= 2, got '1'"),
    (["super-resolve", "--factor", "1.5"], r"argument --factor: factor must be an integer >= 2, got '1\.5'"),
    (["super-resolve", "--factor", "-4"], r"argument --factor: factor must be an integer >= 2, got '-4'"),
    (["super-resolve", "--factor", "x2"], r"argument --factor: factor must be an integer >= 2, got 'x2'"),
    (["denoise", "--iterations", "0"], r"argument --iterations: iterations must be a positive integer or 'auto', "
                                       r"got 0"),
    (["denoise", "--iterations", "-3"], r"argument --iterations: .* got -3"),
    (["denoise", "--device", "banana"], r"napari-dip: error: unknown device 'banana'; use one of"),
    (["denoise", "--device", "cuda"], r"napari-dip: error: device 'cuda' was requested but torch finds no CUDA GPU"),
])
def test_cli_bad_options_exit_2(files, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    folder, digests = files
    command, *options = args
    defaults = ["--iterations", "3", "--preset", "fast", "--quiet"] + (["--device", "cpu"] if "--device" not in
                                                                        options else [])
    rc, err = cli(command, folder / "gray.tif", "-o", folder / "out.tif", *defaults, *options)
    assert rc == 2, err
    assert re.search(message, err), err
    assert "Traceback" not in err
    unchanged(folder, digests)


@pytest.mark.parametrize(("name", "shape", "slices"), [
    ("bigendian.tif", (16, 16), 1),
    ("pages.tif", (3, 12, 12), 3),
    ("rgba.png", (16, 16, 4), 1),
    ("u16.png", (16, 16), 1),
    ("la.png", (16, 16, 2), 1),  # grey + alpha: one 2-channel image, not 16 images 2 pixels wide
    ("signed.tif", (16, 16), 1),
    ("f64.tif", (16, 16), 1),
])
def test_cli_unusual_but_valid_files(files, no_new_threads, name, shape, slices):
    import json

    import tifffile

    folder, digests = files
    rc, err = cli("denoise", folder / name, "-o", folder / "out.tif", "--log", folder / "log.json", *QUICK)
    assert rc == 0, err
    out = tifffile.imread(folder / "out.tif")
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert len(json.loads((folder / "log.json").read_text())["slices"]) == slices
    unchanged(folder, digests, {"out.tif", "log.json"})


def test_cli_out_of_memory_exits_1_with_advice_and_writes_nothing(files, monkeypatch):
    folder, digests = files
    fail_forward(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"), at_call=2)
    rc, err = cli("denoise", folder / "gray.tif", "-o", folder / "out.tif", *QUICK)
    assert rc == 1, err
    assert re.search(r"napari-dip: error: out of memory on cpu .*use a smaller image or crop, tiling, a lighter preset",
                     err)
    unchanged(folder, digests)


def test_cli_raw_out_of_memory_is_an_error_line_not_a_traceback(files, monkeypatch):
    """An OOM the core did not convert (here: while a plane's problem is prepared) still gets advice."""
    folder, digests = files

    def no_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(Restoration, "_problem", no_memory)
    rc, err = cli("denoise", folder / "gray.tif", "-o", folder / "out.tif", *QUICK)
    assert rc == 1, err
    assert "out of memory (CUDA out of memory. Tried to allocate 9.00 GiB); use '--preset fast'" in err
    unchanged(folder, digests)


def test_cli_ctrl_c_at_the_first_iteration_writes_the_best_so_far(files, monkeypatch):
    import tifffile

    import napari_dip.cli.restore as cli_module

    folder, digests = files

    class Interrupt:
        def __init__(self, **_kwargs):
            pass

        def __call__(self, snap):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "Progress", Interrupt)
    rc, err = cli("denoise", folder / "pages.tif", "-o", folder / "out.tif", *QUICK)
    assert rc == 130 and "interrupted: writing the best result so far" in err, err
    out = tifffile.imread(folder / "out.tif")
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()  # plane 0 estimate; others never reached
    unchanged(folder, digests, {"out.tif"})


def test_cli_ctrl_c_inside_the_first_iteration_still_exits_130(files, monkeypatch):
    import tifffile

    folder, digests = files
    fail_forward(monkeypatch, KeyboardInterrupt(), at_call=1)
    rc, err = cli("denoise", folder / "gray.tif", "-o", folder / "out.tif", *QUICK)
    assert rc == 130, err
    assert "Traceback" not in err and "no iteration has run yet" not in err
    assert np.isnan(tifffile.imread(folder / "out.tif")).all()  # nothing fitted: NaN, as documented
    unchanged(folder, digests, {"out.tif"})


def test_cli_writes_only_the_named_output_and_log(files, tmp_path_factory):
    """In a subprocess with its own empty working folder: nothing appears but OUT and the log."""
    folder, digests = files
    cwd = tmp_path_factory.mktemp("cwd")
    outdir = tmp_path_factory.mktemp("outdir")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "napari_dip", "inpaint", str(folder / "gray.tif"), "--mask",
                        str(folder / "mask.tif"), "-o", str(outdir / "out.tif"), "--log", str(outdir / "log.json"),
                        *QUICK], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in outdir.iterdir()) == ["log.json", "out.tif"]
    unchanged(folder, digests)


def test_cli_preimage_with_a_pickle_model_is_refused(files):
    folder, digests = files
    marker = folder / "pwned"
    with open(folder / "evil.pt", "wb") as f:
        pickle.dump(_Payload(marker), f)
    digests["evil.pt"] = file_digest(folder / "evil.pt")
    rc, err = cli("preimage", folder / "gray.png", "--model", folder / "evil.pt", "-o", folder / "out.tif",
                  "--iterations", "2", "--device", "cpu", "--quiet")
    assert rc == 2 and "not a TorchScript model" in err, err
    assert not marker.exists()
    unchanged(folder, digests)


# =============================================================================================
# Widgets (napari, under Xvfb)
# =============================================================================================
FIT_TIMEOUT = 60_000


@pytest.fixture()
def gui(make_napari_viewer, qtbot):
    """(viewer, error notifications); at the end: no worker thread left in Qt's pool."""
    pytest.importorskip("pytestqt")
    from napari.utils.notifications import NotificationSeverity, notification_manager
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer()
    seen: list[str] = []

    def record(notification):
        if notification.severity == NotificationSeverity.ERROR:
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield viewer, seen
    notification_manager.notification_ready.disconnect(record)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=10_000)


def widget(kind: str, viewer, layer, iterations: int = 3, **values):
    from napari_dip import widgets

    return make_widget(getattr(widgets, kind), viewer, layer, iterations, **{"preview_every": 1, **values})


def wait_done(qtbot, w, worker):
    qtbot.waitUntil(lambda: not w.running and not worker.is_running, timeout=FIT_TIMEOUT)


@pytest.mark.parametrize(("case", "kind", "mask", "device", "message"), [
    ("no image layer", "DenoiseWidget", None, "cpu", "Denoising: no image layer selected"),
    ("NaN pixels", "DenoiseWidget", None, "cpu", "Denoising: image contains 8 NaN or Inf values"),
    ("3D labels, 2D image", "InpaintWidget", np.ones((2, 8, 8), np.uint8), "cpu",
     r"Inpainting: mask shape (2, 8, 8) fits neither one plane (8, 8)"),
    ("empty labels", "InpaintWidget", np.zeros((8, 8), np.uint8), "cpu", "Inpainting: the mask is empty"),
    ("full labels", "InpaintWidget", np.full((8, 8), 3, np.uint8), "cpu", "Inpainting: the mask covers every pixel"),
    ("no labels", "InpaintWidget", None, "cpu", "Inpainting: no mask selected"),
    ("CUDA without CUDA", "DenoiseWidget", None, "cuda", "Denoising: device 'cuda' was requested but torch finds no"),
    ("unknown device", "SuperResolveWidget", None, "tpu", "Super-resolution: unknown device 'tpu'"),
])
def test_widget_bad_inputs_are_refused_before_any_layer_is_made(gui, case, kind, mask, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    viewer, errors = gui
    layer = None
    if case == "no image layer":
        pass
    elif case == "NaN pixels":
        layer = viewer.add_image(np.where(np.eye(8, dtype=bool), np.nan, 1.0).astype(np.float32), name="nan")
    else:
        layer = viewer.add_image(rand((8, 8)), name="img")
    before = None if layer is None else digest(layer.data)
    labels = None if mask is None else viewer.add_labels(mask, name="mask")
    w = widget(kind, viewer, layer)
    if kind == "InpaintWidget":
        w.mask.value = labels
    if device not in w.device.choices:  # a stale device list (e.g. the GPU went away)
        w.device.choices = [*w.device.choices, device]
    w.device.value = device
    n_layers = len(viewer.layers)
    assert w.run() is None
    assert message in w.status.value and len(errors) == 1 and message in errors[0], (w.status.value, errors)
    assert len(viewer.layers) == n_layers and w.output_layer is None and w.worker is None
    assert w.run_button.enabled and not w.running
    if layer is not None:
        assert digest(layer.data) == before
    if labels is not None:
        assert digest(labels.data) == digest(mask)


def test_widget_spin_boxes_refuse_zero_iterations_and_factor_one(gui):
    from napari_dip.widgets import SuperResolveWidget

    viewer, _ = gui
    w = SuperResolveWidget(viewer)
    for box, bad in ((w.iterations, 0), (w.iterations, -5), (w.factor, 1), (w.factor, 0)):
        good = box.value
        with pytest.raises(ValueError):
            box.value = bad
        assert box.value == good
    assert w.iterations.min == 1 and w.factor.min == 2


@pytest.mark.parametrize(("name", "data", "rgb"), [
    ("1x1", np.ones((1, 1), np.float32), False),
    ("1x9", rand((1, 9)), False),
    ("7x5", rand((7, 5), np.float64), False),
    ("RGBA uint8", rand((8, 8, 4), scale=255).astype(np.uint8), True),
    ("8x8x4 not RGB", rand((8, 8, 4), scale=255).astype(np.uint8), False),  # napari's guess: 8 planes of 8x4
    ("uint16", rand((8, 8), scale=60000).astype(np.uint16), False),
    ("int16 negative", rand((8, 8), scale=-900).astype(np.int16), False),
    ("big-endian", rand((8, 8), ">f4", scale=5), False),
])
def test_widget_unusual_images_give_a_result_layer(gui, qtbot, name, data, rgb):
    viewer, errors = gui
    layer = viewer.add_image(data, name="in", rgb=rgb)
    before = digest(layer.data)
    w = widget("DenoiseWidget", viewer, layer)
    worker = w.run()
    assert worker is not None, w.status.value
    wait_done(qtbot, w, worker)
    out = w.output_layer
    # 3 iterations: the name may carry ' (not converged)' (issue 14's honest flag)
    assert out is not None and out in viewer.layers and out.name.startswith("in denoised")
    assert out.data.shape == data.shape and out.rgb == rgb and np.isfinite(out.data).all()
    assert "Denoising done" in w.status.value and not errors
    assert digest(layer.data) == before and layer.data.dtype == data.dtype


def test_widget_2d_labels_apply_to_every_plane_of_a_stack(gui, qtbot):
    viewer, errors = gui
    image = viewer.add_image(rand((2, 8, 8), seed=6), name="stack")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 9
    labels = viewer.add_labels(mask, name="holes")
    before = digest(image.data)
    w = widget("InpaintWidget", viewer, image, mask=labels)
    worker = w.run()
    assert worker is not None, w.status.value
    wait_done(qtbot, w, worker)
    out = w.output_layer.data
    assert out.shape == (2, 8, 8)
    np.testing.assert_array_equal(out[:, mask == 0], image.data[:, mask == 0])
    assert digest(image.data) == before and digest(labels.data) == digest(mask) and not errors


def test_widget_cancel_before_the_first_iteration_leaves_no_layer(gui, qtbot, monkeypatch):
    """Cancel clicked before the worker thread got to run (its start is held back here)."""
    base = importlib.import_module("napari_dip.widgets.base")
    real_start = base.start_worker
    monkeypatch.setattr(base, "start_worker", lambda job, connect, **kw: real_start(job, connect=connect, start=False,
                                                                                     **kw))
    viewer, errors = gui
    layer = viewer.add_image(rand((8, 8)), name="in")
    before = digest(layer.data)
    w = widget("DenoiseWidget", viewer, layer, iterations=20)
    worker = w.run()
    assert w.output_layer in viewer.layers  # the live output layer exists while running
    w.cancel()
    worker.start()
    wait_done(qtbot, w, worker)
    assert w.output_layer is None and list(viewer.layers) == [layer]
    assert w.status.value.startswith("Denoising cancelled before the first iteration")
    assert digest(layer.data) == before and not errors and w.run_button.enabled


def test_widget_cancel_at_the_first_iteration_keeps_that_estimate(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, RuntimeError("unused"), at_call=0, delay=0.05)
    layer = viewer.add_image(rand((8, 8)), name="in")
    before = digest(layer.data)
    w = widget("DenoiseWidget", viewer, layer, iterations=20)
    worker = w.run()
    worker.yielded.connect(lambda u: w.cancel() if u.snapshot.iteration == 1 else None)  # a fit's first update
    wait_done(qtbot, w, worker)
    out = w.output_layer
    meta = out.metadata["napari_dip"]
    assert meta["cancelled"] and meta["planes_done"] == 1 and meta["history"][0] is None
    assert w.job is None and worker.is_running is False
    assert "cancelled at iteration" in w.status.value and np.isfinite(out.data).all() and np.abs(out.data).max() > 0
    assert digest(layer.data) == before and not errors


def test_widget_cancel_during_a_stack_keeps_the_planes_done(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, RuntimeError("unused"), at_call=0, delay=0.02)
    layer = viewer.add_image(rand((3, 8, 8), seed=7), name="stack")
    before = digest(layer.data)
    w = widget("DenoiseWidget", viewer, layer, iterations=5)
    worker = w.run()
    worker.yielded.connect(lambda u: w.cancel() if u.plane == 1 and u.snapshot.iteration == 1 else None)
    wait_done(qtbot, w, worker)
    out = w.output_layer.data
    meta = w.output_layer.metadata["napari_dip"]
    # plane 2's few-iteration estimate is not presented as done (issue 14): left out, NaN (transparent)
    assert meta["cancelled"] and meta["planes_done"] == 1 and meta["partial_plane"] == 1
    assert np.abs(out[0]).min() > 0 and np.isnan(out[1:]).all()
    assert "Kept 1 of 3 planes (1); the others are empty" in w.status.value
    assert digest(layer.data) == before and not errors


def test_widget_exception_inside_the_worker_is_reported(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, ValueError("injected fault"), at_call=4)
    layer = viewer.add_image(rand((8, 8)), name="in")
    before = digest(layer.data)
    w = widget("DenoiseWidget", viewer, layer, iterations=10)
    worker = w.run()
    wait_done(qtbot, w, worker)
    assert w.status.value.startswith("Denoising failed at iteration 4: injected fault")
    assert errors == [w.status.value]
    assert w.output_layer is not None and np.isfinite(w.output_layer.data).all()  # iterations 1-3 kept
    assert w.run_button.enabled and not w.cancel_button.enabled
    assert digest(layer.data) == before


def test_widget_exception_in_the_first_iteration_leaves_no_layer(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, ValueError("broken at once"), at_call=1)
    layer = viewer.add_image(rand((8, 8)), name="in")
    before = digest(layer.data)
    w = widget("DenoiseWidget", viewer, layer)
    worker = w.run()
    wait_done(qtbot, w, worker)
    assert w.status.value.startswith("Denoising failed: broken at once") and errors == [w.status.value]
    assert w.output_layer is None and list(viewer.layers) == [layer]
    assert w.run_button.enabled and digest(layer.data) == before


def test_widget_out_of_memory_says_what_to_change(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB"), at_call=3)
    layer = viewer.add_image(rand((8, 8)), name="in")
    before = digest(layer.data)
    w = widget("SuperResolveWidget", viewer, layer, factor=2)
    worker = w.run()
    wait_done(qtbot, w, worker)
    assert len(errors) == 1 and errors[0].startswith("Super-resolution failed at iteration 3: out of memory on cpu")
    for hint in ("a smaller image or crop", "tiling", "another device"):
        assert hint in errors[0]
    assert w.output_layer is not None and w.output_layer.data.shape == (16, 16)  # 2 iterations kept
    assert digest(layer.data) == before


def test_widget_removing_the_input_layer_during_the_run_finishes_normally(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, RuntimeError("unused"), at_call=0, delay=0.02)
    data = rand((8, 8))
    layer = viewer.add_image(data.copy(), name="in")
    w = widget("DenoiseWidget", viewer, layer, iterations=10)
    worker = w.run()
    worker.yielded.connect(lambda u: viewer.layers.remove(layer)
                           if u.snapshot.iteration >= 2 and layer in viewer.layers else None)
    wait_done(qtbot, w, worker)
    assert layer not in viewer.layers and digest(layer.data) == digest(data)
    out = w.output_layer
    assert out is not None and out.name.startswith("in denoised") and not out.metadata["napari_dip"]["cancelled"]
    assert "Denoising done" in w.status.value and not errors


def test_widget_removing_the_output_layer_during_the_run_cancels_it(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, RuntimeError("unused"), at_call=0, delay=0.02)
    layer = viewer.add_image(rand((8, 8)), name="in")
    w = widget("DenoiseWidget", viewer, layer, iterations=20)
    worker = w.run()
    worker.yielded.connect(lambda u: viewer.layers.remove(w.output_layer)
                           if u.snapshot.iteration >= 2 and w.output_layer in viewer.layers else None)
    wait_done(qtbot, w, worker)
    assert w.output_layer is None and list(viewer.layers) == [layer]
    assert w.status.value.startswith("Denoising cancelled: the output layer was removed") and not errors


def test_widget_closing_the_viewer_during_a_run_stops_the_worker(make_napari_viewer, qtbot, monkeypatch):
    from qtpy.QtCore import QThreadPool

    fail_forward(monkeypatch, RuntimeError("unused"), at_call=0, delay=0.02)
    viewer = make_napari_viewer()
    layer = viewer.add_image(rand((2, 8, 8)), name="in")
    w = widget("DenoiseWidget", viewer, layer, iterations=20)
    worker = w.run()
    qtbot.waitUntil(lambda: w.job is not None and w.job.current is not None and w.job.current.iteration >= 2,
                    timeout=FIT_TIMEOUT)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=10_000)
    qtbot.waitUntil(lambda: not w.running, timeout=10_000)
    assert w.job is None and w.output_layer is None


def test_widget_second_run_while_running_is_refused(gui, qtbot, monkeypatch):
    viewer, errors = gui
    fail_forward(monkeypatch, RuntimeError("unused"), at_call=0, delay=0.02)
    layer = viewer.add_image(rand((8, 8)), name="in")
    w = widget("DenoiseWidget", viewer, layer, iterations=5)
    worker = w.run()
    n_layers = len(viewer.layers)
    assert w.run() is None and len(viewer.layers) == n_layers
    wait_done(qtbot, w, worker)
    assert "Denoising done" in w.status.value and not errors


def test_widget_image_too_large_for_memory_is_refused(gui, monkeypatch):
    restore = importlib.import_module("napari_dip.core.restore")
    monkeypatch.setattr(restore, "available_bytes", lambda device: 1)  # a machine with no memory to spare
    viewer, errors = gui
    layer = viewer.add_image(rand((32, 32)), name="big")
    w = widget("DenoiseWidget", viewer, layer)
    assert w.run() is None
    assert len(errors) == 1 and "Denoising: a 32x32 output needs about" in errors[0]
    assert list(viewer.layers) == [layer]
