"""The application widgets (JPEG restoration, enhancement, flash/no-flash, pre-image and activation
maximisation), driven as a user would under Xvfb: set the controls, click Run, wait for the end;
the result layers (shape, placement, metadata, measured figures), bad inputs, and cancel.

Fits are tiny (at most 48x64 pixels, small networks through ``overrides``, tens of iterations) so
the file runs in a few minutes on one CPU thread.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
torch = pytest.importorskip("torch")


from conftest import read_png, smooth_gray, start_and_wait  # noqa: E402

pytestmark = pytest.mark.gui

FIT_TIMEOUT = 120_000  # ms
#: a small skip network for fits of a few seconds
TINY = dict(network_kwargs=dict(channels_down=(8, 16, 16), channels_up=(8, 16, 16), channels_skip=(4, 4, 4),
                                upsample="nearest", pad="reflection"))


def docked(cls, viewer, **values):
    """A docked widget on the CPU with ``values`` set (``name=value``)."""
    w = cls(viewer)
    viewer.window.add_dock_widget(w)
    w.device.value = "cpu"
    for name, value in values.items():
        getattr(w, name).value = value
    return w


def jpeg_of(image: np.ndarray, quality: int = 10) -> np.ndarray:
    """``image`` (uint8) through a JPEG encoder at ``quality``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 scene with a few sharp-edged blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy), 0.3 + 0.5 * xx, 0.7 - 0.4 * yy], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(4, 9)
        img[(np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2 < r * r] *= 0.4
    return (255 * np.clip(img, 0, 1)).astype(np.uint8)


# -- JPEG restoration ------------------------------------------------------------------------------
def test_jpeg_restoration_removes_the_block_grid_into_a_new_layer(qtbot, viewer):
    from napari_dip.applications import blockiness
    from napari_dip.widgets import BlindRestoreWidget

    compressed = jpeg_of(scene(), quality=8)
    layer = viewer.add_image(compressed, name="photo", scale=(0.5, 0.5), translate=(2.0, 3.0))
    before = compressed.copy()
    w = docked(BlindRestoreWidget, viewer, iterations=60, preview_every=20)
    assert w.image.value is layer and w.preset.value == "jpeg" and list(w.preset.choices) == ["jpeg", "fast", "paper"]
    assert w.iterations.value == 60 and not w.auto_stop.value  # the paper's fixed count by default
    w.overrides = {"ema": 0.9}  # a short average, for a short fit
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)

    assert out.name == "photo restored" and out.rgb and out.data.shape == compressed.shape
    assert out.data.dtype == np.float32 and np.isfinite(out.data).all()
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    meta = out.metadata["napari_dip"]
    assert meta["task"] == "denoise" and meta["preset"] == "jpeg" and meta["state"] == "finished"
    assert meta["planes"][0]["ending"] == "fixed" and meta["planes"][0]["iterations"] == 60
    b = meta["blockiness"]
    assert b["input"] == pytest.approx(blockiness(compressed), rel=1e-3)
    assert b["output"] == pytest.approx(blockiness(out.data), rel=1e-3)
    assert b["input"] > 1.2 and b["output"] < b["input"] - 0.15, b  # the 8x8 grid is gone
    assert f"8x8 blockiness {b['input']:.3f} -> {b['output']:.3f}" in w.status.value
    assert layer.data.tobytes() == before.tobytes()


def test_jpeg_restoration_of_the_snail(qtbot, viewer, shared_data):
    """The paper's JPEG example, a grid-aligned 32x48 crop of snail.jpg."""
    from napari_dip.widgets import BlindRestoreWidget

    crop = read_png(shared_data / "dip" / "denoising" / "snail.jpg")[64:96, 128:176]
    viewer.add_image(crop, name="snail", rgb=True)
    w = docked(BlindRestoreWidget, viewer, iterations=60, preview_every=0)
    w.overrides = {"ema": 0.9}
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    b = out.metadata["napari_dip"]["blockiness"]
    assert b["output"] < b["input"], b


# -- enhancement -----------------------------------------------------------------------------------
def test_enhance_shows_the_enhanced_image_and_adds_the_coarse_layer(qtbot, viewer):
    from napari_dip.applications import laplacian_energy
    from napari_dip.widgets import EnhanceWidget

    image = (smooth_gray(40) * 200 + 20 + np.random.default_rng(0).normal(0, 8, (40, 40))).astype(np.float32)
    layer = viewer.add_image(image, name="cells", scale=(0.25, 0.25), units=("um", "um"))
    w = docked(EnhanceWidget, viewer, iterations=40, preview_every=10, alpha=2.0, add_coarse=True)
    assert w.auto_stop.native.isHidden() and w.iterations.value == 40
    w.overrides = TINY
    previews: list[np.ndarray] = []
    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=lambda u: u.preview is not None and previews.append(
        np.array(w.output_layer.data)))

    coarse = w.coarse_layer
    assert out.name == "cells enhanced" and coarse is not None and coarse.name == "cells coarse"
    assert out.data.shape == coarse.data.shape == image.shape
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(coarse.scale, layer.scale)
    expected = np.clip(image + 2.0 * (image - coarse.data), image.min(), image.max())
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-3)
    assert not np.allclose(coarse.data, image, atol=1.0)  # a coarse fit, not the image itself
    # the live preview shows the enhanced image, not the coarse fit: it stays in the input's range
    assert previews and all(np.nanmin(p) >= image.min() - 1e-3 and np.nanmax(p) <= image.max() + 1e-3
                            for p in previews)
    meta = out.metadata["napari_dip"]
    assert meta["alpha"] == 2.0 and meta["clip"] == (float(image.min()), float(image.max()))
    assert meta["planes"][0]["evidence"] is None and meta["planes_not_converged"] == []  # short by design
    contrast = meta["local_contrast"]
    assert contrast["enhanced"] == pytest.approx(laplacian_energy(out.data), rel=1e-3)
    assert contrast["enhanced"] > 1.5 * contrast["input"] > 1.5 * contrast["coarse"]
    assert "Local contrast" in w.status.value and "(not converged)" not in out.name


def test_enhance_a_stack_plane_by_plane_without_clipping(qtbot, viewer):
    from napari_dip.widgets import EnhanceWidget

    stack = np.stack([smooth_gray(24) * (1 + k) for k in range(2)]).astype(np.float32)
    viewer.add_image(stack, name="stack")
    w = docked(EnhanceWidget, viewer, iterations=8, preview_every=0, alpha=-0.5, clip=False)
    w.overrides = TINY
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert out.data.shape == stack.shape and np.isfinite(out.data).all()
    assert out.metadata["napari_dip"]["planes_fitted"] == [0, 1] and out.metadata["napari_dip"]["clip"] is None
    assert w.coarse_layer is None and len(viewer.layers) == 2


# -- flash / no-flash ------------------------------------------------------------------------------
def flash_pair(shared_data=None):
    if shared_data is not None:
        folder = shared_data / "dip" / "flash_no_flash"
        flash = read_png(folder / "cave01_00_flash.jpg")[150:182:2, 180:244:2]  # a painted jug, half size
        no_flash = read_png(folder / "cave01_01_noflash.jpg")[150:182:2, 180:244:2]
        return flash, no_flash
    img = scene(16, 32, seed=1)
    return img, (0.5 * img + np.random.default_rng(0).normal(0, 20, img.shape)).clip(0, 255).astype(np.uint8)


def test_flash_no_flash_fits_the_no_flash_image_guided_by_the_flash(qtbot, viewer, shared_data):
    from napari_dip.widgets import FlashNoFlashWidget

    flash, no_flash = flash_pair(shared_data)
    target = viewer.add_image(no_flash, name="cave noflash", scale=(2.0, 2.0), rgb=True)
    guide = viewer.add_image(flash, name="cave flash", scale=(2.0, 2.0), rgb=True)
    w = docked(FlashNoFlashWidget, viewer, iterations=30, preview_every=10)
    assert w.image.value is target and w.flash.value is guide  # chosen by their names
    assert w.auto_stop.native.isHidden() and list(w.preset.choices) == ["auto", "fast", "paper"]
    w.overrides = TINY
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert out.name == "cave noflash flash/no-flash" and out.data.shape == no_flash.shape and out.rgb
    np.testing.assert_allclose(out.scale, target.scale)
    meta = out.metadata["napari_dip"]
    assert meta["flash"] == "cave flash" and meta["preset"] == "fast" and meta["state"] == "finished"
    assert meta["planes"][0]["iterations"] == 30
    # the colours are the no-flash image's: the output is much closer to it than the flash image is
    err = np.abs(out.data - no_flash).mean()
    assert err < 0.5 * np.abs(flash.astype(np.float32) - no_flash).mean(), err
    assert guide.data.tobytes() == flash.tobytes() and target.data.tobytes() == no_flash.tobytes()


@pytest.mark.parametrize("case", ["shape", "none", "same", "stack"])
def test_flash_no_flash_bad_pairs_are_clear_errors(viewer, errors, case):
    from napari_dip.widgets import FlashNoFlashWidget

    flash, no_flash = flash_pair()
    target = viewer.add_image(no_flash if case != "stack" else np.stack([no_flash[..., 0]] * 2), name="noflash",
                              rgb=case != "stack")
    w = docked(FlashNoFlashWidget, viewer)
    if case == "shape":
        w.flash.value = viewer.add_image(flash[:, :-4], name="flash", rgb=True)
    elif case == "same":
        w.flash.value = target
    elif case == "stack":
        w.flash.value = viewer.add_image(flash[..., 0], name="flash")
    else:
        w.flash.value = None
    n_layers = len(viewer.layers)
    assert w.run() is None and not w.running
    expected = {"shape": "must show the same, aligned scene", "none": "no flash layer selected",
                "same": "are the same layer", "stack": "a single 2D image is needed"}[case]
    assert len(errors) == 1 and expected in errors[0], errors
    assert expected in w.status.value and len(viewer.layers) == n_layers
    if case == "shape":
        assert "16x28" in errors[0] and "16x32" in errors[0]


# -- pre-image and activation maximisation ---------------------------------------------------------
def feature_net():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())


@pytest.fixture()
def scripted(tmp_path):
    path = tmp_path / "features.pt"
    torch.jit.script(feature_net()).save(str(path))
    return path


def test_pre_image_and_its_tv_baseline_land_as_two_layers(qtbot, viewer, scripted):
    from napari_dip.widgets import PreImageWidget

    image = scene(32, 32, seed=2)
    layer = viewer.add_image(image, name="monkey", scale=(3.0, 3.0))
    w = docked(PreImageWidget, viewer, iterations=30, preview_every=10)
    w.model.value = scripted
    assert w.layer.choices == ("", "0", "1", "2", "3", "4")  # '' = the model's output
    assert "model loaded, 5 layers" in w.status.value
    w.layer.value = "4"
    w.overrides = {**TINY, "input_channels": 8, "lr": 0.01}
    out = start_and_wait(qtbot, w, 2 * FIT_TIMEOUT)

    dip, tv = w.result_layers["dip"], w.result_layers["tv"]
    assert out is tv and dip in viewer.layers and tv in viewer.layers
    assert dip.name == "monkey pre-image of layer 4 (DIP)" and tv.name == "monkey pre-image of layer 4 (TV baseline)"
    for res, method in ((dip, "dip"), (tv, "tv")):
        assert res.data.shape == image.shape and res.rgb and np.isfinite(res.data).all()
        np.testing.assert_allclose(res.scale, layer.scale)
        meta = res.metadata["napari_dip"]
        assert meta["method"] == method and meta["layer"] == "4" and meta["model"] == str(scripted)
        assert meta["planes"][0]["evidence"] is None and meta["state"] == "finished"
        dist = meta["feature_distance"]
        assert dist["end"] < 0.5 * dist["start"], dist  # the features are being matched
        diff = np.abs(res.data - image.astype(np.float64)).mean()
        assert meta["mean_abs_difference_from_image"] == pytest.approx(diff, rel=1e-6)
    status = w.status.value
    assert "Relative feature distance at layer 4 (start -> end): DIP " in status and "; TV baseline " in status


def test_activation_maximisation_excites_the_unit(qtbot, viewer, scripted):
    from napari_dip.widgets import PreImageWidget

    w = docked(PreImageWidget, viewer, iterations=25, preview_every=0, mode="actmax", size=24, baseline=False)
    assert w.image.native.isHidden() and not w.unit.native.isHidden()
    w.model.value = scripted
    w.layer.value, w.unit.value = "4", 3
    w.overrides = {**TINY, "input_channels": 8, "lr": 0.01}
    out = start_and_wait(qtbot, w, FIT_TIMEOUT)
    assert out.name == "unit 3 of 4 (DIP)" and out.data.shape == (24, 24, 3) and out.rgb
    assert 0.0 <= out.data.min() and out.data.max() <= 1.0
    act = out.metadata["napari_dip"]["activation"]
    assert act["end"] > act["start"] + 0.05, act
    assert list(w.result_layers) == ["dip"] and len(viewer.layers) == 1


def test_a_file_that_is_not_torchscript_is_a_clear_error(viewer, errors, tmp_path):
    from napari_dip.widgets import PreImageWidget

    bad = tmp_path / "weights.pt"
    torch.save(feature_net().state_dict(), bad)  # a state dict, not a TorchScript model
    viewer.add_image(scene(32, 32), name="img")
    w = docked(PreImageWidget, viewer)
    w.model.value = bad
    assert errors and "not a TorchScript model" in errors[-1] and str(bad) in errors[-1]
    assert w.layer.choices == ("",)
    n = len(errors)
    assert w.run() is None and len(errors) == n + 1 and "not a TorchScript model" in errors[-1]
    assert len(viewer.layers) == 1
    w.model.value = None
    assert w.run() is None and "no model chosen" in errors[-1]


def test_torchvision_names_only_when_torchvision_is_installed(viewer):
    from napari_dip.widgets import PreImageWidget

    w = PreImageWidget(viewer)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert w.torchvision is None  # the control is not there at all
    else:
        assert "alexnet" in w.torchvision.choices


def test_cancelling_the_pre_image_skips_the_baseline(qtbot, viewer, scripted):
    from napari_dip.widgets import PreImageWidget

    viewer.add_image(scene(32, 32), name="img")
    w = docked(PreImageWidget, viewer, iterations=100_000, preview_every=1)
    w.model.value = scripted
    w.overrides = {**TINY, "input_channels": 8}

    def during(u):
        if u.snapshot.iteration >= 3:
            w.cancel_button.native.click()

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    assert out is w.result_layers["dip"] and "tv" not in w.result_layers and len(viewer.layers) == 2
    meta = out.metadata["napari_dip"]
    assert meta["state"] == "cancelled" and meta["planes"][0]["ending"] == "cancelled"
    assert not out.name.endswith("(not converged)")  # no evidence is measured for pre-images
    assert "cancelled at iteration" in w.status.value and w.run_button.enabled and not w.running


# -- common: no layer, cancel, manifest -------------------------------------------------------------
@pytest.mark.parametrize("name", ["BlindRestoreWidget", "EnhanceWidget", "FlashNoFlashWidget", "PreImageWidget"])
def test_no_image_layer_is_a_clear_error(viewer, errors, name, scripted):
    import napari_dip.widgets as widgets

    w = getattr(widgets, name)(viewer)
    if name == "PreImageWidget":
        w.model.value = scripted
    assert w.image.value is None and w.run() is None and w.worker is None
    assert len(errors) == 1 and "no image layer selected" in errors[0], errors
    assert len(viewer.layers) == 0 and w.run_button.enabled


def test_cancel_keeps_the_estimate_and_says_so(qtbot, viewer):
    from napari_dip.widgets import FlashNoFlashWidget

    flash, no_flash = flash_pair()
    viewer.add_image(no_flash, name="noflash", rgb=True)
    viewer.add_image(flash, name="flash", rgb=True)
    w = docked(FlashNoFlashWidget, viewer, iterations=100_000, preview_every=1)
    w.overrides = TINY

    def during(u):
        if u.snapshot.iteration >= 3:
            w.cancel_button.native.click()

    out = start_and_wait(qtbot, w, FIT_TIMEOUT, during=during)
    meta = out.metadata["napari_dip"]
    stopped = meta["planes"][0]["iterations"]
    # the only estimate of the run is kept (flagged when the evidence says it is not converged)
    assert meta["state"] == "cancelled" and meta["partial_kept"] and np.isfinite(out.data).all()
    assert 3 <= stopped < 1000 and meta["planes"][0]["ending"] == "cancelled"
    assert f"cancelled at iteration {stopped}" in w.status.value
    assert ("NOT converged" in w.status.value) == out.name.endswith("(not converged)")
    assert w.run_button.enabled and not w.cancel_button.enabled and not w.running


def test_manifest_offers_every_widget(viewer):
    import npe2

    from napari_dip.widgets import BlindRestoreWidget, EnhanceWidget, FlashNoFlashWidget, PreImageWidget

    for name, cls in (("Remove JPEG artefacts", BlindRestoreWidget), ("Enhance detail", EnhanceWidget),
                      ("Flash / no-flash", FlashNoFlashWidget),
                      ("Pre-image / activation maximisation", PreImageWidget)):
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-dip", name)
        assert isinstance(widget, cls)
    manifest = npe2.PluginManager.instance().get_manifest("napari-dip")
    names = [w.display_name for w in manifest.contributions.widgets]
    assert names == ["Denoise", "Inpaint", "Super-resolve", "Remove JPEG artefacts", "Enhance detail",
                     "Flash / no-flash", "Pre-image / activation maximisation"]
