"""``napari-dip pretrain`` and ``--weights``: a prior from the user's own stack, and clear refusals."""

from __future__ import annotations

import numpy as np
import tifffile

from conftest import add_noise, smooth_gray
from napari_dip.cli import main as _main
from napari_dip.core.weights import load_weights


def main(argv: list[str]) -> int:
    """The CLI in this process; its exit status (``parser.exit`` raises SystemExit on errors)."""
    try:
        return _main(argv)
    except SystemExit as stop:
        return int(stop.code)


def _stack(path, planes=3, size=64):
    stack = np.stack([add_noise(np.roll(smooth_gray(size), 3 * k, axis=1), 0.05, seed=k) for k in range(planes)])
    tifffile.imwrite(path, (stack * 1000).astype(np.uint16))
    return path


def test_pretrain_on_own_stack_then_denoise_with_it(tmp_path, capsys):
    stack = _stack(tmp_path / "stack.tif")
    out = tmp_path / "mine.pt"
    assert main(["pretrain", str(stack), "-o", str(out), "--from", "none", "--steps", "6", "--batch", "2",
                 "--quiet"]) == 0
    w = load_weights(out)
    assert w.meta["images"] == 3 and w.meta["synthetic_noise"] is False and w.meta["started_from"] is None
    assert w.meta["command"].startswith("napari-dip pretrain ") and "--steps 6" in w.meta["command"]
    before = out.read_bytes()
    assert main(["pretrain", str(stack), "-o", str(out), "--from", "none", "--steps", "2"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before
    den = tmp_path / "den.tif"
    assert main(["denoise", str(stack), "-o", str(den), "--weights", str(out), "--iterations", "3", "--quiet"]) == 0
    assert tifffile.imread(den).shape == (3, 64, 64)


def test_pretrain_refuses_bad_images_and_weights_by_name(tmp_path, capsys):
    out = tmp_path / "w.pt"
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.random.default_rng(0).random((20, 20)).astype(np.float32))
    assert main(["pretrain", str(small), "-o", str(out), "--from", "none", "--steps", "1"]) == 2
    assert "small.tif: 20x20 pixels is smaller than the 64 px" in capsys.readouterr().err
    nan = tmp_path / "nan.tif"
    arr = smooth_gray(64)
    arr[5, 5] = np.nan
    tifffile.imwrite(nan, np.stack([smooth_gray(64), arr]))
    assert main(["pretrain", str(nan), "-o", str(out), "--from", "none", "--steps", "1"]) == 2
    assert "nan.tif plane 1: contains NaN" in capsys.readouterr().err
    assert main(["pretrain", "-o", str(out)]) == 2
    assert "give training images, or --builtin-data" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    stack = _stack(tmp_path / "s.tif")
    assert main(["pretrain", str(stack), "-o", str(out), "--from", str(bad), "--steps", "1"]) == 2
    assert "bad.pt is corrupt" in capsys.readouterr().err
    den = tmp_path / "den.tif"
    assert main(["denoise", str(stack), "-o", str(den), "--weights", str(bad)]) == 2
    assert "bad.pt is corrupt" in capsys.readouterr().err and not den.exists()
    assert main(["denoise", str(stack), "-o", str(den), "--weights", str(tmp_path / "gone.pt")]) == 2
    assert "gone.pt does not exist" in capsys.readouterr().err and not den.exists()
    assert not out.exists()


def test_weights_of_another_network_are_refused_before_fitting(tmp_path, capsys):
    from napari_dip.core.networks import build_network
    from napari_dip.core.settings import get_settings
    from napari_dip.core.weights import save_weights

    s = get_settings("fast", "denoise")
    net = build_network(s.network, s.input_channels, 1, **s.network_kwargs)
    path = save_weights(tmp_path / "fast.pt", net, network=s.network, network_kwargs=s.network_kwargs,
                        in_channels=s.input_channels, out_channels=1, input_kind="noise")
    stack = _stack(tmp_path / "s.tif", planes=1)
    den = tmp_path / "den.tif"
    before = path.read_bytes()
    assert main(["denoise", str(stack), "-o", str(den), "--weights", str(path), "--iterations", "2"]) == 2
    err = capsys.readouterr().err
    assert "fast.pt does not match this fit: its network_kwargs" in err and not den.exists()
    assert path.read_bytes() == before


def test_pretraining_from_a_file_goes_on_with_its_network(tmp_path):
    from napari_dip.core.networks import build_network
    from napari_dip.core.settings import get_settings
    from napari_dip.core.weights import save_weights

    s = get_settings("pretrained", "denoise", weights=None)
    kwargs = {**s.network_kwargs, "channels_down": (4, 4), "channels_up": (4, 4), "channels_skip": (2, 2)}
    start = save_weights(tmp_path / "older.pt", build_network("skip", 2, 1, **kwargs), network="skip",
                         network_kwargs=kwargs, in_channels=2, out_channels=1, input_kind="masked")
    stack, out = _stack(tmp_path / "stack.tif"), tmp_path / "more.pt"
    assert main(["pretrain", str(stack), "-o", str(out), "--from", str(start), "--steps", "2", "--batch", "2",
                 "--quiet"]) == 0
    w = load_weights(out)
    assert w.network_kwargs["channels_down"] == [4, 4] and w.meta["started_from"] == str(start)
    den = tmp_path / "den.tif"
    assert main(["denoise", str(stack), "-o", str(den), "--weights", str(out), "--iterations", "2"]) == 0
    assert den.exists()
