"""The paper's other applications: blind restoration, enhancement, flash/no-flash, pre-images,
activation maximisation, the architecture study, and their command-line subcommands.

Fits are tiny (small crops, small nets, tens of iterations) so the file runs in about a minute on
one CPU thread; every test checks an effect that is absent without the method.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import read_png
from napari_dip.applications import (
    ARCHITECTURES,
    FLASH_SETTINGS,
    JPEG_SETTINGS,
    activation_maximisation,
    architecture_study,
    blockiness,
    enhance,
    flash_no_flash,
    laplacian_energy,
    load_model,
    make_case,
    pre_image,
    restore_blind,
)
from napari_dip.applications.preimage import FeatureExtractor
from napari_dip.core.api import denoise

CPU = dict(device="cpu")
TINY_SKIP = dict(channels_down=(16, 32, 64), channels_up=(16, 32, 64), channels_skip=(4, 4, 4))
TINY_PRE = dict(network_kwargs=dict(TINY_SKIP, kernel_down=3, kernel_up=3, downsample="avg", pad="zero"),
                input_channels=8)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = np.asarray(x, np.float64)
    return gaussian_filter(x, (sigma, sigma, 0) if x.ndim == 3 else sigma)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _feature_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())


# -- blind restoration -----------------------------------------------------------------------------
def test_blockiness_measure_sees_an_8x8_grid():
    rng = np.random.default_rng(0)
    smooth = _blur(rng.random((64, 64)), 2.0)
    blocks = np.kron(rng.random((8, 8)), np.ones((8, 8)))  # constant 8x8 blocks: steps only at the grid
    assert abs(blockiness(smooth) - 1.0) < 0.1
    assert blockiness(smooth + 0.2 * blocks) > 2.0


def test_restore_blind_reduces_jpeg_blockiness(shared_data):
    snail = read_png(shared_data / "dip" / "denoising" / "snail.jpg")[64:128, 160:224]  # grid-aligned crop
    before = blockiness(snail)
    out = restore_blind(snail, iterations=150, **CPU)
    assert out.shape == snail.shape and out.dtype == np.float32
    assert before > 1.4  # the crop is visibly blocky
    assert blockiness(out) < before - 0.3
    assert np.abs(out - snail).mean() < 25  # still the same picture (units: uint8 grey levels)


def test_jpeg_settings_are_the_papers():
    s = JPEG_SETTINGS
    assert s.network_kwargs["channels_down"] == (8, 16, 32, 64, 128)
    assert s.network_kwargs["channels_skip"] == (0, 0, 0, 4, 4)
    assert (s.input_channels, s.lr, s.iterations, s.ema > 0) == (3, 0.01, 2400, True)
    assert s.reg_noise_std == pytest.approx(1 / 30)


# -- enhancement -----------------------------------------------------------------------------------
def test_enhance_sharpens_and_coarse_is_smooth(shared_data):
    kate = read_png(shared_data / "dip" / "inpainting" / "kate.png")[200:248, 40:88]
    res = enhance(kate, alpha=1.5, iterations=100, preset=JPEG_SETTINGS, ema=0.9, clip=False, **CPU)
    x0 = kate.astype(np.float32)
    assert res.enhanced.shape == res.coarse.shape == kate.shape
    np.testing.assert_allclose(res.detail, x0 - res.coarse, atol=1e-3)
    np.testing.assert_allclose(res.enhanced, x0 + 1.5 * res.detail, atol=1e-3)
    l_in, l_coarse, l_enh = laplacian_energy(x0), laplacian_energy(res.coarse), laplacian_energy(res.enhanced)
    assert l_coarse < 0.6 * l_in  # the short fit has not reached the fine detail
    assert l_enh > 1.5 * l_in  # local contrast goes up
    assert abs(_blur(res.enhanced, 3).mean() - _blur(x0, 3).mean()) < 3  # brightness is kept


def test_enhance_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        enhance(np.zeros((8, 8)), alpha=float("nan"))


# -- flash / no-flash ------------------------------------------------------------------------------
def test_flash_no_flash_keeps_target_colours_and_flash_detail(shared_data):
    folder = shared_data / "dip" / "flash_no_flash"
    flash = read_png(folder / "cave01_00_flash.jpg")[150:198, 180:244]  # a painted jug: flash detail
    no_flash = read_png(folder / "cave01_01_noflash.jpg")[150:198, 180:244]
    kw = dict(network_kwargs=dict(TINY_SKIP, upsample="nearest"))
    out = flash_no_flash(flash, no_flash, iterations=60, **kw, **CPU)
    plain = denoise(no_flash, iterations=60, preset=FLASH_SETTINGS.replace(**kw), **CPU)  # random code
    assert out.shape == no_flash.shape and out.dtype == np.float32

    def low_err(x):
        return float(np.abs(_blur(x, 3) - _blur(no_flash, 3)).mean())

    def detail(x):
        g = np.asarray(x, np.float64).mean(-1)
        return g - _blur(g, 1.5)

    # colours/lighting: those of the no-flash target, not of the flash image
    assert low_err(out) < 0.25 * low_err(flash)
    # detail: the flash image's edges come through, much more than in a plain denoise
    assert _corr(detail(out), detail(flash)) > _corr(detail(plain), detail(flash)) + 0.2


def test_flash_no_flash_needs_matching_images():
    with pytest.raises(ValueError, match="same, aligned scene"):
        flash_no_flash(np.zeros((16, 16, 3)), np.ones((16, 20, 3)), iterations=1, **CPU)


# -- pre-image and activation maximisation ---------------------------------------------------------
@pytest.fixture(scope="module")
def monkey_crop() -> np.ndarray:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "dip" / "feature_inversion" / "monkey.jpg"
    if path.exists():
        return read_png(path)[80:112, 90:122]
    # a stand-in when the real data is absent: smooth blobs with sharp edges (clipped), which a
    # conv net's prior favours like a natural image; white-ish noise blurred by only 1 px is not
    rng = np.random.default_rng(0)
    return (255 * np.clip(_blur(rng.random((32, 32, 3)), 2.0) * 4 - 1.5, 0, 1)).astype(np.uint8)


def test_pre_image_matches_features_and_beats_tv_in_pixels(monkey_crop):
    net = _feature_net()
    dip = pre_image(monkey_crop, net, "4", iterations=100, lr=0.01, **TINY_PRE, **CPU)
    tv = pre_image(monkey_crop, net, "4", method="tv", iterations=100, **CPU)
    assert dip.image.shape == monkey_crop.shape and dip.image.dtype == np.float32
    assert dip.objective < 0.05 * dip.initial  # the features are matched
    assert tv.objective < 0.05 * tv.initial
    # at equal steps the deep image prior's pre-image is much closer to the original image than the
    # TV baseline's (which matches the features at least as well, with less natural pixels)
    x0 = monkey_crop.astype(np.float64)
    assert np.abs(dip.image - x0).mean() < 0.6 * np.abs(tv.image - x0).mean()
    assert not any(p.requires_grad is False for p in net.parameters())  # the user's model is restored


def test_pre_image_from_torchscript_file_equals_module(tmp_path, monkey_crop):
    net = _feature_net()
    path = tmp_path / "features.pt"
    torch.jit.script(net).save(str(path))
    a = pre_image(monkey_crop, net, "4", iterations=5, lr=0.01, **TINY_PRE, **CPU)
    b = pre_image(monkey_crop, path, "4", iterations=5, lr=0.01, **TINY_PRE, **CPU)
    np.testing.assert_allclose(a.image, b.image, atol=1e-4)
    assert b.objective == pytest.approx(a.objective, rel=1e-4)


@torch.no_grad()
def test_feature_extractor_layers_and_errors(tmp_path):
    net = _feature_net()
    x = torch.rand(1, 3, 16, 16)
    np.testing.assert_allclose(FeatureExtractor(net, "4")(x), net[:5](x))
    np.testing.assert_allclose(FeatureExtractor(net, None)(x), net(x))
    with pytest.raises(ValueError, match="no layer 'classifier'.*layers: 0, 1"):
        FeatureExtractor(net, "classifier")

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _feature_net()

        def forward(self, x):
            return self.body(x) + 1

    nested = torch.jit.script(nn.Sequential(net[:3], net[3:]))  # TorchScript: run Sequential by Sequential
    np.testing.assert_allclose(FeatureExtractor(nested, "1.4")(x), net[:5](x), atol=1e-6)
    with pytest.raises(ValueError, match="is a Branchy, not a Sequential"):
        FeatureExtractor(torch.jit.script(Branchy()), "body.1")
    np.testing.assert_allclose(FeatureExtractor(Branchy(), "body.1")(x), net[:2](x), atol=1e-6)  # hooks


def test_load_model_weights_only_state_dict_and_bad_names(tmp_path):
    src, dst = _feature_net(), _feature_net()
    for p in dst.parameters():
        nn.init.zeros_(p)
    path = tmp_path / "weights.pth"
    torch.save(src.state_dict(), path)
    loaded, is_tv = load_model(dst, weights=path)
    assert not is_tv and not loaded.training
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x), src.eval()(x))
    with pytest.raises(ValueError, match="no such model file"):
        load_model(tmp_path / "missing.pt")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="torchvision"):
            load_model("alexnet")


def test_activation_maximisation_excites_the_unit(tmp_path):
    net = _feature_net()
    path = tmp_path / "features.pt"
    torch.jit.script(net).save(str(path))
    dip = activation_maximisation(path, "6", 5, size=32, iterations=60, lr=0.01, **TINY_PRE, **CPU)
    tv = activation_maximisation(net, "6", 5, size=32, iterations=60, method="tv", **CPU)
    assert dip.image.shape == (32, 32, 3) and 0 <= dip.image.min() and dip.image.max() <= 1
    rand = net(torch.rand(1, 3, 32, 32))[:, 5].mean().item()
    for res in (dip, tv):  # several times the start's and a random image's activation
        assert res.objective > 3 * max(res.initial, rand, 1e-3)
    with pytest.raises(ValueError, match="out of range"):
        activation_maximisation(net, "6", 99, size=16, iterations=1, **CPU)


# -- architecture study ----------------------------------------------------------------------------
def _library_case(shared_data):
    folder = shared_data / "dip" / "inpainting"
    return make_case(read_png(folder / "library.png"), read_png(folder / "library_mask.png"), scale=4,
                     box=(16, 48, 64, 96))


def test_make_case_hides_the_library_hole(shared_data):
    image, hole = _library_case(shared_data)
    assert image.shape == (64, 96, 3) and hole.shape == (64, 96)
    assert 0.1 < hole.mean() < 0.5


def test_architecture_study_table(shared_data):
    image, hole = _library_case(shared_data)
    chosen = {k: ARCHITECTURES[k] for k in ("hourglass depth 2", "hourglass depth 6", "UNet depth 5")}
    rows = architecture_study(image, hole, architectures=chosen, iterations=8, **CPU)
    assert [r["architecture"] for r in rows] == list(chosen)
    for r in rows:
        assert np.isfinite(r["psnr_hole"]) and np.isfinite(r["psnr_image"])
        assert r["psnr_image"] > r["psnr_hole"]  # the known pixels are exact
        assert 5 < r["psnr_hole"] < 40 and r["parameters"] > 0
    assert rows[1]["parameters"] > rows[0]["parameters"]


# -- command line ----------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    from napari_dip.cli.applications import register

    parser = argparse.ArgumentParser(prog="napari-dip")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture()
def small_png(tmp_path, smooth_rgb):
    import imageio.v3 as iio

    path = tmp_path / "in.png"
    iio.imwrite(path, (smooth_rgb[:32, :40] * 255).astype(np.uint8))
    return path


def test_cli_blind_enhance_flash(tmp_path, small_png):
    import imageio.v3 as iio

    from napari_dip.cli import CLIError

    out = tmp_path / "blind.tif"
    assert _cli(["blind", str(small_png), "-o", str(out), "--iterations", "3", "--device", "cpu", "--quiet"]) == 0
    assert iio.imread(out).shape == (32, 40, 3)
    with pytest.raises(CLIError, match="exists"):
        _cli(["blind", str(small_png), "-o", str(out), "--iterations", "3", "--quiet"])
    with pytest.raises(CLIError, match="input"):
        _cli(["blind", str(small_png), "-o", str(small_png), "--iterations", "3", "--quiet", "--overwrite"])
    enh, coarse = tmp_path / "enh.tif", tmp_path / "coarse.tif"
    assert _cli(["enhance", str(small_png), "-o", str(enh), "--coarse", str(coarse), "--iterations", "3",
                 "--preset", "fast", "--alpha", "2", "--device", "cpu", "--quiet"]) == 0
    assert enh.exists() and coarse.exists()
    flash = tmp_path / "flash.tif"
    assert _cli(["flash", str(small_png), str(small_png), "-o", str(flash), "--iterations", "2",
                 "--device", "cpu", "--quiet"]) == 0
    assert iio.imread(flash).shape == (32, 40, 3)
    before = small_png.read_bytes()
    assert small_png.read_bytes() == before


def test_cli_preimage_actmax_and_study(tmp_path, small_png, shared_data, capsys):
    import imageio.v3 as iio

    model = tmp_path / "net.pt"
    torch.jit.script(_feature_net()).save(str(model))
    out = tmp_path / "pre.tif"
    assert _cli(["preimage", str(small_png), "-o", str(out), "--model", str(model), "--layer", "4",
                 "--iterations", "3", "--method", "tv", "--device", "cpu", "--quiet"]) == 0
    assert iio.imread(out).shape == (32, 40, 3)
    act = tmp_path / "act.png"
    assert _cli(["actmax", "-o", str(act), "--model", str(model), "--layer", "6", "--unit", "2", "--size", "24",
                 "--iterations", "3", "--device", "cpu"]) == 0
    assert iio.imread(act).shape == (24, 24, 3)
    folder = shared_data / "dip" / "inpainting"
    js = tmp_path / "study.json"
    assert _cli(["architecture-study", str(folder / "library.png"), "--mask", str(folder / "library_mask.png"),
                 "--quick", "--iterations", "2", "--device", "cpu", "--quiet", "--json", str(js)]) == 0
    table = capsys.readouterr().out
    assert table.count("| hourglass depth") == 4 and "| ResNet 8 blocks |" in table
    assert len(json.loads(js.read_text())["rows"]) == len(ARCHITECTURES)
