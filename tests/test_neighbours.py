"""Neighbouring planes as extra inputs of a masked fit (``neighbour_planes``, ``Fitter(context=...)``)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from conftest import add_noise, smooth_gray
from napari_dip.cli import main as _main
from napari_dip.core.fit import Fitter
from napari_dip.core.networks import build_network, widen_inputs
from napari_dip.core.restore import Restoration
from napari_dip.core.settings import get_settings


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


def test_a_widened_network_computes_what_the_original_did():
    s = get_settings("pretrained", "denoise", weights=None)
    torch.manual_seed(0)
    small = build_network(s.network, 2, 1, **s.network_kwargs).eval()
    wide = build_network(s.network, 4, 1, **s.network_kwargs).eval()
    wide.load_state_dict(widen_inputs(small.state_dict(), wide))
    x = torch.rand(1, 2, 64, 64)
    extra = torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        assert torch.allclose(small(x), wide(torch.cat([x, extra], 1)), atol=1e-6)
    # weights that already fit are kept as they are
    same = widen_inputs(wide.state_dict(), wide)
    assert all(torch.equal(same[k], v) for k, v in wide.state_dict().items())


def test_neighbours_stay_in_their_stack_and_never_are_the_plane_itself():
    rng = np.random.default_rng(0)
    five = Restoration("denoise", rng.random((5, 32, 32), dtype=np.float32), neighbour_planes=2, device="cpu")
    assert five.neighbours(0) == [1, 1, 2, 2]  # past the first plane: the same distance on the other side
    assert five.neighbours(2) == [1, 3, 0, 4]
    assert five.neighbours(4) == [3, 3, 2, 2]
    for depth in range(2, 6):
        for k in range(1, 5):  # also more neighbours than the stack has planes
            job = Restoration("denoise", rng.random((2, depth, 32, 32), dtype=np.float32), neighbour_planes=k,
                              device="cpu")
            for s in range(2 * depth):  # a (T, Z) stack: neighbours along Z, within the same time point
                picks = job.neighbours(s)
                assert len(picks) == 2 * k and s not in picks and {p // depth for p in picks} == {s // depth}


def _stack(planes: int = 3, size: int = 48, sigma: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    clean = np.stack([np.roll(smooth_gray(size), k, axis=1) for k in range(planes)]).astype(np.float32)
    noisy = np.stack([add_noise(c, sigma, seed=10 + k) for k, c in enumerate(clean)]).astype(np.float32)
    return clean, noisy


def test_neighbour_planes_restore_a_stack_better():
    # a fine texture, the same in every plane, with independent noise: within the plane a hidden pixel is
    # hard to predict, and its neighbours up and down are two more looks at it
    grain = np.random.default_rng(0).random((48, 48))
    texture = sum(np.roll(grain, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # 3x3 blur
    texture = 0.2 + 0.6 * (texture - texture.min()) / (texture.max() - texture.min())
    clean = np.stack([texture] * 3).astype(np.float32)
    noisy = (clean + np.random.default_rng(1).normal(0, 0.1, clean.shape)).astype(np.float32)
    before = noisy.copy()
    out = {k: Restoration("denoise", noisy, neighbour_planes=k, iterations=60, device="cpu").run() for k in (0, 1)}
    gain = _psnr(out[1], clean) - _psnr(out[0], clean)
    assert gain > 1.0, gain  # measured +2.41 dB (23.48 -> 25.89)
    assert np.array_equal(noisy, before)


def test_warm_starts_carry_the_widened_network():
    clean, noisy = _stack()
    job = Restoration("denoise", noisy, neighbour_planes=1, warm_start=True, iterations=5, device="cpu")
    job.run()
    first = job._state["body.skip.0.0.weight"]
    assert first.shape[1] == 4 and float(first[:, 2:].abs().sum()) > 0  # the neighbours' weights were learnt


def test_neighbour_planes_refuse_what_they_cannot_do():
    clean, noisy = _stack()
    with pytest.raises(ValueError, match="at least 2 planes"):
        Restoration("denoise", noisy[0], neighbour_planes=1)
    with pytest.raises(ValueError, match="needs a masked fit"):
        Restoration("denoise", noisy, neighbour_planes=1, preset="fast")
    with pytest.raises(ValueError, match="denoising only"):
        Restoration("inpaint", noisy, mask=np.eye(48, dtype=bool), neighbour_planes=1)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="whole number >= 0"):
            Restoration("denoise", noisy, neighbour_planes=bad)
    target = torch.from_numpy(noisy[:1])[None]
    masked = get_settings("pretrained", "denoise")
    with pytest.raises(ValueError, match=r"context must be a \(1, K, 48, 48\)"):
        Fitter(target, settings=masked, context=torch.zeros(1, 2, 40, 48), device="cpu")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Fitter(target, settings=masked, context=torch.full((1, 2, 48, 48), float("nan")), device="cpu")
    with pytest.raises(ValueError, match="needs a masked fit"):
        Fitter(target, settings=get_settings("fast", "denoise"), context=torch.zeros(1, 2, 48, 48), device="cpu")


def test_auto_uses_one_neighbour_plane_where_it_applies():
    from napari_dip.distributed import StackJob

    clean, noisy = _stack()
    assert Restoration("denoise", noisy, device="cpu").neighbour_planes == 1  # the default: 'auto'
    assert Restoration("denoise", noisy, neighbour_planes="auto", preset="pretrained").neighbour_planes == 1
    assert Restoration("denoise", noisy[0], device="cpu").neighbour_planes == 0  # one plane
    assert Restoration("denoise", noisy, preset="fast").neighbour_planes == 0  # no input to show them in
    assert Restoration("inpaint", noisy, mask=np.eye(48, dtype=bool)).neighbour_planes == 0
    assert Restoration("denoise", noisy, batch_size=2).neighbour_planes == 0  # planes fitted together
    assert Restoration("denoise", noisy, neighbour_planes=0).neighbour_planes == 0
    with pytest.raises(ValueError, match="batch_size=2"):
        Restoration("denoise", noisy, neighbour_planes=1, batch_size=2)
    StackJob("denoise", noisy, neighbour_planes="auto")  # 'auto' is 0 for jobs that fit planes independently


def _cli(argv: list[str]) -> int:
    try:
        return _main(argv)
    except SystemExit as stop:
        return int(stop.code)


def test_cli_neighbour_planes(tmp_path, capsys):
    clean, noisy = _stack()
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, noisy)
    out = tmp_path / "out.tif"
    assert _cli(["denoise", str(src), "-o", str(out), "--neighbour-planes", "1", "--iterations", "3", "--quiet"]) == 0
    assert tifffile.imread(out).shape == noisy.shape
    assert _cli(["denoise", str(src), "-o", str(tmp_path / "o.zarr"), "--neighbour-planes", "1"]) == 2
    assert "--neighbour-planes" in capsys.readouterr().err and not (tmp_path / "o.zarr").exists()
    assert _cli(["denoise", str(src), "-o", str(tmp_path / "o2.tif"), "--neighbour-planes", "-1"]) == 2
    assert "'auto' or a whole number >= 0" in capsys.readouterr().err


def test_cli_warm_start_and_its_patience_and_floor(tmp_path, capsys, monkeypatch):
    from napari_dip.core import restore

    clean, noisy = _stack()
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, noisy)
    seen = {}
    real = restore.Restoration.__init__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(restore.Restoration, "__init__", spy)
    out = tmp_path / "out.tif"
    assert _cli(["denoise", str(src), "-o", str(out), "--neighbour-planes", "1", "--warm-start",
                 "--warm-stop-patience", "10", "--warm-min-iterations", "20", "--iterations", "3", "--quiet"]) == 0
    assert seen["warm_start"] is True and seen["warm_stop_patience"] == 10 and seen["warm_min_iterations"] == 20
    assert seen["neighbour_planes"] == 1 and tifffile.imread(out).shape == noisy.shape
    seen.clear()  # without the option: the engine's default ('auto')
    assert _cli(["denoise", str(src), "-o", str(tmp_path / "auto.tif"), "--iterations", "3", "--quiet"]) == 0
    assert "neighbour_planes" not in seen
    assert _cli(["denoise", str(src), "-o", str(tmp_path / "auto2.tif"), "--neighbour-planes", "auto",
                 "--iterations", "3", "--quiet"]) == 0
    assert "neighbour_planes" not in seen
    assert _cli(["denoise", str(src), "-o", str(tmp_path / "o.tif"), "--warm-stop-patience", "10"]) == 2
    assert "add --warm-start" in capsys.readouterr().err
    assert _cli(["denoise", str(src), "-o", str(tmp_path / "o.tif"), "--warm-start", "--warm-min-iterations", "0"]) == 2
    assert "whole number >= 1" in capsys.readouterr().err
    assert _cli(["denoise", str(src), "-o", str(tmp_path / "o.zarr"), "--warm-start"]) == 2
    assert "--warm-start chains" in capsys.readouterr().err and not (tmp_path / "o.zarr").exists()
