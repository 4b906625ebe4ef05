"""The paper's other applications from a GUI: their presets, and jobs built from layers and options.

Each builder checks everything in the caller's thread (shapes, the model, the layer, the device)
and returns a job with the run interface of :class:`~napari_dip.core.restore.Restoration`, which
:func:`napari_dip.glue.driver.drive` runs in a worker like any restoration:

* :func:`build_blind` and :func:`build_enhance`: a denoising ``Restoration`` with the JPEG
  network or a coarse-fit preset (the enhancement itself, ``x0 + alpha (x0 - coarse)``, is
  :func:`enhanced`, applied to each estimate as it arrives);
* :func:`build_flash`: :class:`~napari_dip.applications.flash.FlashNoFlash`;
* :func:`build_preimage` and :func:`build_actmax`:
  :class:`~napari_dip.applications.preimage.PreImageJob` and ``ActMaxJob``.

Presets follow the widgets' convention: ``'paper'`` is the paper's setting, ``'fast'`` a lighter
network for CPUs, and ``'auto'`` is ``'paper'`` on a GPU and ``'fast'`` on a CPU.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from .layers import ImageInput
from .run import RunOptions, build_restoration

__all__ = ["app_settings", "build_actmax", "build_blind", "build_enhance", "build_flash", "build_preimage",
           "enhanced", "list_layers", "preset_names", "resolve_app_preset", "torchvision_models"]

def _fast_flash():
    from ..applications.flash import FLASH_SETTINGS

    # the CPU network of docs/applications.md's cave example: 4 levels of 32 channels
    return FLASH_SETTINGS.replace(network_kwargs=dict(channels_down=(32,) * 4, channels_up=(32,) * 4,
                                                      channels_skip=(4,) * 4, upsample="nearest", pad="reflection"))


def _fast_feature(base):
    # the paper's generator with 3x3 kernels and at most 64 channels (about 5x fewer operations)
    kw = dict(base.network_kwargs)
    kw.update(channels_down=(16, 32, 64, 64, 64, 64), channels_up=(16, 32, 64, 64, 64, 64),
              kernel_down=(3,) * 6, kernel_up=(3,) * 6)
    return base.replace(network_kwargs=kw)


@cache
def _presets() -> dict[str, dict[str, Any]]:
    from ..applications.blind import JPEG_SETTINGS
    from ..applications.flash import FLASH_SETTINGS
    from ..applications.preimage import ACTMAX_SETTINGS, PREIMAGE_SETTINGS

    # what each name stands for: a Settings, a core denoising preset's name, or None for 'auto'
    return {
        "blind": {"jpeg": JPEG_SETTINGS, "fast": "fast", "paper": "paper"},
        "enhance": {"auto": None, "fast": "fast", "paper": "paper"},
        "flash": {"auto": None, "fast": _fast_flash(), "paper": FLASH_SETTINGS},
        "preimage": {"auto": None, "fast": _fast_feature(PREIMAGE_SETTINGS), "paper": PREIMAGE_SETTINGS},
        "actmax": {"auto": None, "fast": _fast_feature(ACTMAX_SETTINGS), "paper": ACTMAX_SETTINGS},
    }


def preset_names(app: str) -> list[str]:
    """The preset names of an application (``'blind'``, ``'enhance'``, ``'flash'``, ``'preimage'``,
    ``'actmax'``), in the order a widget offers them."""
    return list(_presets()[app])


def resolve_app_preset(app: str, preset: str, device: Any = "cpu") -> str:
    """The preset ``'auto'`` stands for on ``device``: ``'paper'`` on a GPU, ``'fast'`` on a CPU."""
    if preset != "auto":
        if preset not in _presets()[app]:
            raise ValueError(f"unknown preset {preset!r} for {app}; choose one of {preset_names(app)}")
        return preset
    kind = str(getattr(device, "type", device)).split(":")[0]
    return "paper" if kind in ("cuda", "mps") else "fast"


def app_settings(app: str, preset: str, device: Any = "cpu") -> tuple[str, Any]:
    """``(name, settings)`` of an application's preset on ``device`` (``'auto'`` resolved); the
    settings are a :class:`~napari_dip.core.settings.Settings` (denoising presets by name resolved too)."""
    from ..core.settings import get_settings

    name = resolve_app_preset(app, preset, device)
    value = _presets()[app][name]
    return name, (get_settings(value, "denoise") if isinstance(value, str) else value)


def build_blind(inp: ImageInput, options: RunOptions):
    """Blind (JPEG-artefact) restoration of ``inp``: a denoising ``Restoration`` with the preset's network."""
    from ..core.devices import resolve_device

    name, settings = app_settings("blind", options.preset, resolve_device(options.device))
    return build_restoration("denoise", inp, RunOptions(**{**_fields(options), "preset": name}), settings=settings)


def build_enhance(inp: ImageInput, options: RunOptions):
    """The coarse fit of an enhancement of ``inp`` (a short denoising ``Restoration``)."""
    from ..core.devices import resolve_device

    name, settings = app_settings("enhance", options.preset, resolve_device(options.device))
    return build_restoration("denoise", inp, RunOptions(**{**_fields(options), "preset": name}), settings=settings)


def enhanced(image: np.ndarray, coarse: np.ndarray, alpha: float, clip: tuple[float, float] | None) -> np.ndarray:
    """``image + alpha * (image - coarse)`` as float32, clipped to ``clip`` (low, high) when given.

    The formula of :func:`napari_dip.applications.enhance` (NaN where ``coarse`` is NaN).
    """
    original = np.asarray(image, dtype=np.float32)
    out = original + np.float32(alpha) * (original - np.asarray(coarse, dtype=np.float32))
    if clip is not None:
        out = np.clip(out, clip[0], clip[1])
    return out.astype(np.float32, copy=False)


def _single_image(inp: ImageInput, what: str) -> None:
    """Refuse a layer that is not one 2D image (grayscale, or RGB as napari shows it)."""
    ndim = np.ndim(inp.data)
    if ndim != (3 if inp.rgb else 2):
        raise ValueError(f"{what} layer {inp.name!r} has shape {tuple(np.shape(inp.data))}: a single 2D image is "
                         "needed (grayscale, or RGB); for a stack, duplicate one plane into its own layer")


def build_flash(flash: ImageInput, no_flash: ImageInput, options: RunOptions):
    """Flash/no-flash of two layers' images (the no-flash image is the target, its units the output's).

    Raises
    ------
    ValueError
        For stacks, images of different height or width, or a device this machine lacks.
    """
    from ..applications.flash import FlashNoFlash
    from ..core.devices import resolve_device

    _single_image(no_flash, "no-flash")
    _single_image(flash, "flash")
    if np.shape(flash.data)[:2] != np.shape(no_flash.data)[:2]:
        raise ValueError(f"the flash layer {flash.name!r} is {np.shape(flash.data)[0]}x{np.shape(flash.data)[1]} pixels, "
                         f"the no-flash layer {no_flash.name!r} {np.shape(no_flash.data)[0]}x"
                         f"{np.shape(no_flash.data)[1]}: they must show the same, aligned scene (crop or resize "
                         "one to the other)")
    device = resolve_device(options.device)
    name, settings = app_settings("flash", options.preset, device)
    return FlashNoFlash(flash.data, no_flash.data, iterations=int(options.iterations), settings=settings,
                        device=options.device, seed=int(options.seed), preview_every=int(options.preview_every),
                        precision=str(options.precision), preset=name, **dict(options.overrides or {}))


def _feature_options(options: RunOptions, app: str, method: str) -> dict[str, Any]:
    from ..core.devices import resolve_device

    name, settings = app_settings(app, options.preset, resolve_device(options.device))
    overrides = dict(options.overrides or {})
    lr = overrides.pop("lr", None)
    return dict(method=method, iterations=int(options.iterations), settings=settings.replace(**overrides)
                if overrides else settings, lr=lr, device=options.device, seed=int(options.seed),
                preview_every=int(options.preview_every), preset=name)


def build_preimage(inp: ImageInput, model: Any, layer: str | None, method: str, options: RunOptions,
                   mean=None, std=None, tv_weight: float = 1e-2):
    """The pre-image of ``inp``'s features at ``layer`` of ``model`` (``method``: ``'dip'`` or ``'tv'``;
    ``tv_weight``: the baseline's regulariser weight)."""
    from ..applications.preimage import PreImageJob

    _single_image(inp, "image")
    return PreImageJob(inp.data, model, layer, mean=mean, std=std, tv_weight=float(tv_weight),
                       **_feature_options(options, "preimage", method))


def build_actmax(model: Any, layer: str | None, unit: int, size: int, channels: int, method: str,
                 options: RunOptions, mean=None, std=None, tv_weight: float = 1e-2):
    """Activation maximisation of ``unit`` of ``layer`` of ``model`` on a ``size`` x ``size`` image."""
    from ..applications.preimage import ActMaxJob

    return ActMaxJob(model, layer, int(unit), size=int(size), channels=int(channels), mean=mean, std=std,
                     tv_weight=float(tv_weight), **_feature_options(options, "actmax", method))


def list_layers(model: Any) -> list[str]:
    """The layers of ``model`` a pre-image can use, as dotted module names (``''``: the model's output).

    For a TorchScript model, only layers reached through ``Sequential`` containers (the others
    would need Python hooks, which TorchScript does not run).
    """
    from ..applications.preimage import FeatureExtractor

    names = [""]
    for name, _module in model.named_modules():
        if not name:
            continue
        try:
            FeatureExtractor(model, name)
        except ValueError:
            continue
        names.append(name)
    return names


def torchvision_models() -> list[str]:
    """torchvision's classification model names, or ``[]`` when torchvision is not installed."""
    try:
        import torchvision
    except ImportError:
        return []
    try:
        return sorted(torchvision.models.list_models(module=torchvision.models))
    except Exception:  # noqa: BLE001 - an old or broken torchvision: offer none
        return []


def _fields(options: RunOptions) -> dict[str, Any]:
    return {k: getattr(options, k) for k in options.__dataclass_fields__}
