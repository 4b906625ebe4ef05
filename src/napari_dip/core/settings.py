"""Fit settings and the named presets (``paper``, ``fast``) for each task.

The ``paper`` preset reproduces the reference notebooks' settings (see
``docs/engine.md``); ``fast`` is a light net for CPUs (about 30x fewer multiply-adds per pixel).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["Settings", "TASKS", "PRESETS", "PRESET_NAMES", "STOP_RULES", "get_settings", "with_network_of", "resolve_preset", "presets_for",
           "CHANNEL_SETTINGS", "AUTO_FAST"]

TASKS = ("denoise", "inpaint", "super_resolve")
#: valid values of :attr:`Settings.stop_rule`
STOP_RULES = ("auto", "holdout", "wmv", "discrepancy", "none")


@dataclass(frozen=True)
class Settings:
    """Everything that defines one DIP fit, apart from the data.

    Attributes
    ----------
    network, network_kwargs
        Builder name from :data:`napari_dip.core.networks.NETWORKS` and its keyword arguments.
    input_channels, input_kind, input_scale
        The code z: ``input_channels`` channels of ``U(0, 1) * input_scale`` noise (``'noise'``)
        or a 2-channel ``'meshgrid'``; or ``'masked'``: the image itself with a random
        ``mask_ratio`` of its pixels hidden every iteration, the loss and the average taken on the
        hidden pixels only (:mod:`napari_dip.core.masking`; denoising and inpainting).
    mask_ratio : float or 'auto'
        Share of pixels hidden per iteration with ``input_kind='masked'``. ``'auto'`` measures the
        noise's spatial correlation (:func:`~napari_dip.core.stopping.noise_correlation`): 0.3 for
        white noise, 0.9 with an average weight of at least 0.99 for correlated noise
        (:mod:`napari_dip.core.masking`).
    weights : str or None
        Starting weights: None (random, as in the paper), ``'builtin'`` (the weights shipped for
        the image's channel count, where there are some; random otherwise) or the path of a weights
        file from ``napari-dip pretrain`` (:mod:`napari_dip.core.weights`). A file names the network
        it was trained for: :func:`get_settings` builds that one unless ``network`` or
        ``network_kwargs`` are given too.
    lr : float
        Adam learning rate.
    reg_noise_std : float
        Standard deviation of the per-iteration jitter added to z (0 disables it).
    ema : float
        Weight of the exponential moving average of outputs (0 disables averaging).
    iterations : int
        Iterations of a fixed-count fit; also the cap of an automatic (``'auto'``) fit.
    stop_rule : {'auto', 'holdout', 'wmv', 'discrepancy', 'none'}
        Signal of automatic stopping (see :mod:`napari_dip.core.stopping`): the error on held-out
        pixels (``holdout_fraction`` of them; when denoising, raised on small images so that at
        least ``holdout_min_values`` measured values are held out, up to 15 %; see
        :func:`~napari_dip.core.stopping.holdout_fraction_for`), or ES-WMV over ``stop_window``
        iterations, or the discrepancy principle (stop when the average's residual reaches the
        estimated noise variance). ``'auto'`` (default) uses the discrepancy principle for denoising
        images whose noise is spatially correlated
        (:func:`~napari_dip.core.stopping.choose_rule`) and the hold-out otherwise.
        Signals are computed every ``stop_every`` iterations; the fit stops after
        ``stop_patience`` iterations without a new minimum, never before ``min_iterations``.
    keep_estimate : {'minimum', 'stop'}
        Which average an automatic fit keeps: ``'minimum'`` (default) the one at the stop signal's
        minimum, right for a network that ends up fitting the noise; ``'stop'`` the one when the
        rule stops. Masked fits (the ``pretrained`` preset) never see the pixels they predict, so
        they do not fit the noise: their hold-out signal flattens into its own fluctuations while
        the estimate still improves slowly, and the latest average is the better one (measured in
        docs/performance.md; the preset's denoising settings, not its inpainting ones).
    warm_stop_patience : int or None
        The patience of a plane that starts warm from its neighbour's fitted weights (a stack with
        ``warm_start``): such a plane starts near its result, so it can stop sooner. ``None`` (default):
        ``stop_patience``.
    warm_min_iterations : int or None
        The floor (``min_iterations``) of such a warm plane. ``None`` (default): ``min_iterations``.
        With ``neighbour_planes=1`` a 32-plane confocal stack took 10 and 20 (with
        ``warm_stop_patience=10``) for 5.2x less time than plane by plane at +1.04 dB; a floor of 15
        with patience 5 left the masked averages too few samples (-3.9 dB; docs/performance.md).
    rollback_factor : float
        Roll back to the last good weights if the loss exceeds this multiple of the last good
        loss (10**0.5 = a 5 dB PSNR drop, as in the reference code), or is not finite.
    noise_model : {'auto', 'gaussian', 'poisson-gaussian'}
        Denoising: ``'poisson-gaussian'`` fits in the variance-stabilised domain of shot plus read
        noise (generalised Anscombe transform, exact unbiased inverse back to the input's units;
        :mod:`napari_dip.core.noise`), with the parameters below or, where they are None, estimated
        from each plane. ``'auto'`` measures each plane and uses it where the noise variance grows
        with intensity (:func:`~napari_dip.core.noise.choose_noise_model`), the Gaussian model
        otherwise. ``'gaussian'`` (default: a plain squared error in the input's units, the engine's
        behaviour before the noise models; nothing is measured) until the Poisson-Gaussian model is
        measured to restore better (docs/engine.md, "Microscopy noise"). Other tasks: Gaussian.
    noise_gain, noise_read_variance, noise_offset : float or None
        The camera's noise, in the input's units: variance = ``noise_gain * (intensity -
        noise_offset) + noise_read_variance`` (gain > 0, read variance >= 0; offset default 0).
        Given (with ``noise_model='poisson-gaussian'`` or ``'auto'``), they are used instead of the
        estimate; with ``'gaussian'`` they are an error.
    pixel_fusion : {'auto', True, False}
        Denoising with a masked fit: combine the estimate, which never saw a pixel's own noise, with
        that noisy pixel, weighted by the measured noise variance against a local measure of the
        estimate's own error (a local Wiener step; :mod:`napari_dip.core.fusion`). ``'auto'``
        (default): where the noise is independent from pixel to pixel (not on correlated noise such
        as FMD wide-field frames). Measured in docs/engine.md ("Pixel fusion"). Other fits: off
        (True is an error there).
    """

    network: str = "skip"
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    input_channels: int = 32
    input_kind: str = "noise"
    input_scale: float = 0.1
    mask_ratio: float | str = "auto"
    weights: str | None = None
    lr: float = 0.01
    reg_noise_std: float = 1.0 / 30.0
    ema: float = 0.99
    iterations: int = 3000
    stop_rule: str = "auto"
    holdout_fraction: float = 0.05
    holdout_min_values: int = 500
    stop_window: int = 100
    stop_patience: int = 200
    keep_estimate: str = "minimum"
    warm_stop_patience: int | None = None
    warm_min_iterations: int | None = None
    stop_every: int = 5
    min_iterations: int = 100
    rollback_factor: float = 10 ** 0.5
    checkpoint_every: int = 25
    noise_model: str = "gaussian"
    noise_gain: float | None = None
    noise_read_variance: float | None = None
    noise_offset: float | None = None
    pixel_fusion: str | bool = "auto"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``; unknown names raise a ``TypeError`` listing the valid ones."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; valid settings: {sorted(names)}")
        return replace(self, **changes)


_PAPER_SKIP = dict(channels_down=(128,) * 5, channels_up=(128,) * 5, channels_skip=(4,) * 5,
                   upsample="bilinear", pad="reflection")
_FAST_SKIP = dict(channels_down=(16, 32, 64, 128, 128), channels_up=(16, 32, 64, 128, 128),
                  channels_skip=(4,) * 5, upsample="bilinear", pad="reflection", need1x1_up=False)

#: the light network of masked fits: image + visibility map in, the image out; 16-channel skips
#: carry the image's detail past the hourglass (the ``fast`` net's 4 would blur it). Zero padding (the
#: convolutions' own) and no BatchNorm on each level's concatenation: 0.76x the time per iteration of
#: the reflection-padded net with that norm, and from its own pre-trained weights it stops sooner at
#: equal PSNR (docs/performance.md, "A lighter masked network"); nearest upsampling was faster still
#: but learned the demo image's noise
_MASKED_SKIP = dict(channels_down=(16, 32, 64, 64, 64), channels_up=(16, 32, 64, 64, 64), channels_skip=(16,) * 5,
                    upsample="bilinear", pad="zero", need1x1_up=False, concat_norm=False)
#: masked fits do not fit the noise (they never see the pixels they predict): denoising keeps the average when
#: the hold-out rule stops, not the one at its minimum (docs/performance.md, "The stop of masked fits"). From the
#: shipped weights a learning rate of 5e-3 restores better and settles sooner than 1e-3, so the patience is 75
#: (docs/performance.md, "The learning rate of masked fits"); inpainting keeps 1e-3 and patience 100
_PRETRAINED = Settings(network_kwargs=_MASKED_SKIP, input_kind="masked", mask_ratio="auto", weights="builtin", lr=5e-3,
                       ema=0.9, reg_noise_std=0.0, iterations=1000, stop_patience=75, keep_estimate="stop",
                       min_iterations=50)

PRESETS: dict[str, dict[str, Settings]] = {
    "paper": {
        "denoise": Settings(network_kwargs=_PAPER_SKIP, iterations=3000),
        "inpaint": Settings(network_kwargs={**_PAPER_SKIP, "channels_skip": (128,) * 5, "upsample": "nearest"},
                            reg_noise_std=0.03, iterations=6000),
        "super_resolve": Settings(network_kwargs=_PAPER_SKIP, reg_noise_std=0.03, iterations=2000),
    },
    "fast": {
        "denoise": Settings(network_kwargs=_FAST_SKIP, iterations=3000),
        "inpaint": Settings(network_kwargs={**_FAST_SKIP, "upsample": "nearest"}, reg_noise_std=0.03,
                            iterations=3000),
        "super_resolve": Settings(network_kwargs=_FAST_SKIP, reg_noise_std=0.03, iterations=2000),
    },
    "pretrained": {
        "denoise": _PRETRAINED,
        # inpainting keeps the average at the minimum, lr 1e-3 and patience 100 (what was measured for denoising
        # only: the average at the stop, the higher learning rate, the shorter patience); no stop before 300
        # iterations: the hold-out error of the Table 1 boat crop had an early minimum (stop at 190, 29.58 dB,
        # below the biharmonic fill's 30.07; from 300: 30.53 dB, docs/performance.md)
        "inpaint": _PRETRAINED.replace(iterations=1500, keep_estimate="minimum", lr=1e-3, stop_patience=100,
                                       min_iterations=300),
    },
}


#: settings of a preset and task that depend on the image's channel count (applied by :func:`get_settings` when
#: it is given ``channels``; explicit overrides still win). Colour images from the shipped RGB weights: a patience
#: of 150. On the 9 colour crops with Gaussian noise (sigma 25, 128 px) the hold-out stopped 75 iterations after
#: its minimum while the PSNR still rose for hundreds more (kodim01: stop at 275, 25.43 dB; the curve peaks at
#: 26.58 near 850); with 150 the crops end 0.04 dB above the ``fast`` preset on average (29.15 against 29.11 dB) in
#: 4.5x less time, and 250 went past the peak more often than it gained (docs/performance.md, "Colour images")
CHANNEL_SETTINGS: dict[tuple[str, str, int], dict[str, Any]] = {
    ("pretrained", "denoise", 3): {"stop_patience": 150},
}

#: (task, channels) where ``'auto'`` stays ``'fast'`` on a CPU although weights ship: colour inpainting. From the
#: shipped RGB weights, 128 px centre crops of the DIP repository's kate (text) and vase masks filled 0.79 and
#: 0.59 dB worse inside the holes than ``fast`` (3.6x and 7x sooner; docs/performance.md, "Colour images")
AUTO_FAST: frozenset[tuple[str, int]] = frozenset({("inpaint", 3)})

#: every preset name a user can pass, ``'auto'`` first
PRESET_NAMES = ("auto", *PRESETS)


def presets_for(task: str) -> tuple[str, ...]:
    """The preset names that apply to ``task`` (``'pretrained'`` has no super-resolution settings)."""
    return ("auto", *(name for name, tasks in PRESETS.items() if task in tasks))


def resolve_preset(preset: str, task: str, device: Any = "cpu", channels: int | None = None) -> str:
    """The preset ``'auto'`` stands for on ``device``; other names are returned unchanged.

    On a GPU (CUDA, MPS) ``'auto'`` is ``'paper'``, the reference network. On a CPU it is
    ``'pretrained'`` for denoising and inpainting (a light network started from the shipped
    pre-trained weights: docs/performance.md) and ``'fast'`` for super-resolution, for images
    with a channel count (``channels``) the package ships no weights for, and for colour
    inpainting (:data:`AUTO_FAST`).
    """
    if preset != "auto":
        return preset
    kind = str(getattr(device, "type", device)).split(":")[0]
    if kind in ("cuda", "mps"):
        return "paper"
    if task not in PRESETS["pretrained"]:
        return "fast"
    if channels is not None:
        from .weights import builtin_path  # torch: only when an image is being set up

        path = builtin_path(channels)
        if path is None or not path.is_file() or (task, int(channels)) in AUTO_FAST:
            return "fast"
    return "pretrained"


def get_settings(preset: str | Settings = "paper", task: str = "denoise", *, device: Any = "cpu",
                 channels: int | None = None, **overrides: Any) -> Settings:
    """Settings of ``preset`` for ``task``, with ``overrides`` applied.

    ``preset='auto'`` is resolved for ``device`` and the image's ``channels`` (:func:`resolve_preset`),
    and a named preset gets the settings that depend on ``channels`` (:data:`CHANNEL_SETTINGS`: the
    ``pretrained`` preset's patience for colour images) unless ``overrides`` name them.

    Raises
    ------
    ValueError
        For an unknown preset or task, or a preset without settings for the task.
    TypeError
        For unknown override names.
    WeightsError
        For a ``weights`` path that is missing or not a weights file.

    Notes
    -----
    A ``weights`` path overrides the preset's network with the one the file was trained for (so
    files from an earlier network keep working), unless ``network`` or ``network_kwargs`` are
    overridden too, or the file was made for another kind of input (the fit then says how they
    differ).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    if isinstance(preset, Settings):
        base = preset
    else:
        name = resolve_preset(preset, task, device, channels)
        if name not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESET_NAMES)}")
        if task not in PRESETS[name]:
            raise ValueError(f"the {name!r} preset has no settings for {task!r}; choose one of "
                             f"{list(presets_for(task))}")
        base = PRESETS[name][task]
        if channels is not None and (name, task, int(channels)) in CHANNEL_SETTINGS:
            base = base.replace(**CHANNEL_SETTINGS[(name, task, int(channels))])
    settings = base.replace(**overrides) if overrides else base
    weights = overrides.get("weights")
    if weights is not None and weights != "builtin" and not {"network", "network_kwargs"} & set(overrides):
        from .weights import load_weights  # torch: only when a file is named

        settings = with_network_of(settings, load_weights(weights))
    return settings


def with_network_of(settings: Settings, weights: Any) -> Settings:
    """``settings`` with the network a weights file was trained for, if it was made for their input kind.

    ``weights`` is a loaded :class:`~napari_dip.core.weights.Weights`. A file for another kind of
    input leaves the settings as they are (the fit's check then names the difference).
    """
    if weights.input_kind != settings.input_kind:
        return settings
    return settings.replace(network=weights.network, network_kwargs=dict(weights.network_kwargs))
