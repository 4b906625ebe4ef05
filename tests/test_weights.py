"""Weights files and pre-training: round trips, clear errors for bad files and images, fits from weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import add_noise, smooth_gray
from napari_dip.core.fit import Fitter
from napari_dip.core.networks import build_network
from napari_dip.core.pretrain import check_training_images, drain_pretraining, pretrain_steps
from napari_dip.core.settings import get_settings
from napari_dip.core.weights import (
    BUILTIN,
    WeightsError,
    builtin_path,
    load_weights,
    resolve_weights,
    save_weights,
)

MASKED = get_settings("pretrained", "denoise", weights=None)
TINY = MASKED.replace(network_kwargs={**MASKED.network_kwargs, "channels_down": (4, 4), "channels_up": (4, 4),
                                      "channels_skip": (2, 2)})


def _t(img):
    return torch.from_numpy(np.ascontiguousarray(img))[None, None].float()


def _save(path, settings=TINY, channels=1, **kw):
    net = build_network(settings.network, channels + 1, channels, **settings.network_kwargs)
    return net, save_weights(path, net, network=settings.network, network_kwargs=settings.network_kwargs,
                             in_channels=channels + 1, out_channels=channels, input_kind="masked", **kw)


def test_round_trip_and_a_fit_starts_from_the_file(tmp_path):
    net, path = _save(tmp_path / "w.pt", meta={"trained_on": "nothing"})
    loaded = load_weights(path)
    assert loaded.meta == {"trained_on": "nothing"} and loaded.in_channels == 2
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict[k], v)
    fitter = Fitter(_t(smooth_gray(32)), settings=TINY.replace(weights=str(path)), iterations=1, device="cpu")
    for k, v in net.state_dict().items():
        assert torch.equal(fitter.net.state_dict()[k].cpu(), v), k
    for _ in fitter.steps():
        pass
    assert fitter.result().weights == str(path)
    # a random start differs from the file
    other = Fitter(_t(smooth_gray(32)), settings=TINY, iterations=1, device="cpu", seed=5)
    assert any(not torch.equal(other.net.state_dict()[k].cpu(), v) for k, v in net.state_dict().items()
               if v.is_floating_point())


def test_mismatched_corrupt_missing_and_foreign_files_get_clear_errors(tmp_path):
    _net, path = _save(tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"w\.pt does not match this fit: its network_kwargs"):
        Fitter(_t(smooth_gray(32)), settings=MASKED.replace(weights=str(path)), iterations=1)
    rgb = np.stack([smooth_gray(32)] * 3)[None]
    with pytest.raises(WeightsError, match="in_channels is 2, the fit needs 4"):
        Fitter(torch.from_numpy(rgb).float(), settings=TINY.replace(weights=str(path)), iterations=1)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="corrupt.pt is corrupt"):
        load_weights(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"a": torch.zeros(2)}, foreign)
    with pytest.raises(WeightsError, match="not a napari-dip weights file"):
        load_weights(foreign)
    with pytest.raises(WeightsError, match="missing.pt does not exist"):
        Fitter(_t(smooth_gray(32)), settings=TINY.replace(weights=str(tmp_path / "missing.pt")), iterations=1)
    with pytest.raises(WeightsError, match="is not a file"):
        resolve_weights(tmp_path, 1)
    newer = tmp_path / "newer.pt"
    raw = torch.load(path, weights_only=True)
    torch.save({**raw, "version": 99}, newer)
    with pytest.raises(WeightsError, match="upgrade napari-dip"):
        load_weights(newer)


def test_a_weights_file_brings_its_network_unless_one_is_given(tmp_path):
    net, path = _save(tmp_path / "w.pt")  # the TINY net, not the preset's
    settings = get_settings("pretrained", "denoise", weights=str(path))
    assert settings.network_kwargs["channels_down"] == [4, 4]
    fitter = Fitter(_t(smooth_gray(32)), settings=settings, iterations=1, device="cpu")
    assert fitter.weights_file == str(path)
    for k, v in net.state_dict().items():
        assert torch.equal(fitter.net.state_dict()[k].cpu(), v), k
    # a network given with the file is kept, and the fit says how they differ
    given = get_settings("pretrained", "denoise", weights=str(path), network_kwargs=MASKED.network_kwargs)
    with pytest.raises(WeightsError, match=r"w\.pt does not match this fit: its network_kwargs"):
        Fitter(_t(smooth_gray(32)), settings=given, iterations=1)
    # a file for another kind of input does not change the network (the fit refuses it by name)
    other = get_settings("fast", "denoise", weights=str(path))
    assert other.network_kwargs == get_settings("fast", "denoise").network_kwargs
    with pytest.raises(WeightsError, match="missing.pt does not exist"):
        get_settings("pretrained", "denoise", weights=str(tmp_path / "missing.pt"))


def test_existing_files_are_kept_without_overwrite(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        _save(path)
    assert path.read_bytes() == b"precious"
    _save(path, overwrite=True)
    assert load_weights(path).network == "skip"
    assert not list(tmp_path.glob(".*partial"))


def test_builtin_names_resolve_per_channel_count():
    assert resolve_weights(None, 1) is None
    assert resolve_weights(BUILTIN, 2) is None  # no shipped file for 2-channel images: random start
    for channels in (1, 3):
        path = builtin_path(channels)
        assert resolve_weights(BUILTIN, channels) == (path if path.is_file() else None)


def test_shipped_weights_load_and_match_the_pretrained_preset():
    for channels in (1, 3):
        path = builtin_path(channels)
        if not path.is_file():
            pytest.skip(f"{path} is not built")
        w = load_weights(path)
        w.check(MASKED.network, MASKED.network_kwargs, channels + 1, channels, "masked")
        assert "steps" in w.meta and "command" in w.meta


def test_colour_images_get_the_patience_measured_for_the_rgb_weights():
    from napari_dip.core.restore import Restoration
    from napari_dip.core.settings import CHANNEL_SETTINGS

    rgb = CHANNEL_SETTINGS[("pretrained", "denoise", 3)]["stop_patience"]
    gray = get_settings("pretrained", "denoise").stop_patience
    assert rgb > gray
    assert get_settings("pretrained", "denoise", channels=3).stop_patience == rgb
    assert get_settings("pretrained", "denoise", channels=1).stop_patience == gray
    assert get_settings("pretrained", "denoise", channels=3, stop_patience=40).stop_patience == 40  # yours wins
    assert get_settings("pretrained", "inpaint", channels=3).stop_patience == 100  # measured for denoising only
    assert get_settings("fast", "denoise", channels=3).stop_patience == get_settings("fast").stop_patience
    image = np.zeros((32, 32, 3), np.float32)
    job = Restoration("denoise", image, preset="pretrained", device="cpu")
    assert job.settings.stop_patience == rgb
    assert Restoration("denoise", image[..., 0], preset="pretrained", device="cpu").settings.stop_patience == gray


def test_pretraining_learns_and_is_reproducible():
    rng = np.random.default_rng(0)
    images = [smooth_gray(48) * rng.uniform(0.5, 1.0) for _ in range(3)]
    kw = dict(steps=60, batch=4, patch=32, seed=1, report_every=20)
    reports = []
    net = drain_pretraining(pretrain_steps(images, TINY, **kw), reports.append)
    again = drain_pretraining(pretrain_steps(images, TINY, **kw))
    assert [r.step for r in reports] == [20, 40, 60]
    assert reports[-1].loss < reports[0].loss
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    # noisy images without clean versions: the loss compares hidden pixels with the image itself
    noisy = [add_noise(i, 0.05, seed=k) for k, i in enumerate(images)]
    drain_pretraining(pretrain_steps(noisy, TINY, synthetic_noise=False, steps=5, batch=2, patch=32))


def test_bad_training_images_are_named():
    good = smooth_gray(40)
    with pytest.raises(ValueError, match="no training images"):
        check_training_images([], 1, 32)
    with pytest.raises(ValueError, match="tiny.tif: 16x40 pixels is smaller than the 32 px"):
        check_training_images([good, good[:16]], 1, 32, names=["a.tif", "tiny.tif"])
    nan = good.copy()
    nan[3, 3] = np.nan
    with pytest.raises(ValueError, match="image 1: contains NaN"):
        check_training_images([good, nan], 1, 32)
    with pytest.raises(ValueError, match="image 0: is constant"):
        check_training_images([np.ones((40, 40))], 1, 32)
    with pytest.raises(ValueError, match=r"expected a \(Y, X\) or \(Y, X, 3\) image"):
        check_training_images([good], 3, 32)
    with pytest.raises(ValueError, match="input_kind='masked'"):
        next(pretrain_steps([good], get_settings("fast", "denoise"), steps=1))
    with pytest.raises(ValueError, match="multiple of 32 and at least 64 pixels"):
        next(pretrain_steps([np.random.default_rng(0).random((64, 64))], MASKED, steps=1, patch=40))
