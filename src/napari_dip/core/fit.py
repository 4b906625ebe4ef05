"""The DIP fit loop as a generator of frozen snapshots.

``Fitter(target, operator, settings).steps()`` is a generator: each iteration it yields a
:class:`Snapshot` (iteration, loss, stop signal and, every ``preview_every`` iterations, the
current and averaged images) and it returns a :class:`FitResult`. Consumers can stop at any yield
(napari cancels workers there); :meth:`Fitter.result` then gives the best estimate so far.
:func:`fit` drains the generator for scripts and tests.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .devices import resolve_device
from .inputs import make_input
from .masking import (
    CORRELATED_NOISE_AVERAGE,
    CORRELATED_NOISE_TOLERANCE,
    check_mask_ratio,
    choose_mask_ratio,
    hide,
    masked_input,
)
from .networks import DIPNet, build_network, stack_state, widen_inputs
from .operators import Identity, LinearOperator, Mask
from .settings import STOP_RULES, Settings, get_settings
from .stopping import (
    CORRELATED_NOISE_THRESHOLD,
    Discrepancy,
    HoldOut,
    StopCheck,
    WindowedVariance,
    averaging_lag,
    choose_rule,
    holdout_fraction_for,
    holdout_mask,
    noise_correlation,
    noise_variance,
)
from .weights import load_weights, resolve_weights

__all__ = ["DIPMemoryError", "FitResult", "Fitter", "Snapshot", "fit", "check_iterations"]

Export = Callable[[torch.Tensor], Any]


class DIPMemoryError(MemoryError):
    """The fit does not fit in the device's memory; the message says what to change."""


@dataclass(frozen=True)
class Snapshot:
    """One iteration of a fit, frozen (images are copies, safe to keep).

    Attributes
    ----------
    iteration : int
        Iterations done (1-based).
    total : int
        Iteration count of a fixed fit, or the cap of an automatic one.
    loss : float or None
        Data-fit loss of this iteration (None where it was not synchronised to the host).
    image, ema : array or None
        Current network output and its running average, exported (e.g. numpy in the input's
        units), every ``preview_every`` iterations and at the end; None otherwise.
    stop_signal : float or None
        The stopping rule's signal (hold-out error or ES-WMV variance) where computed.
    best_iteration : int
        Iteration of the best estimate so far (that of the last iteration for fixed fits).
    stopped : bool
        The stopping rule fired at this iteration (the fit ends).
    rolled_back : bool
        The loss blew up and the weights were restored to the last good checkpoint.
    message : str or None
        Human-readable note (rollback, learning-rate change).
    slice_index, n_slices : int
        Position in a stack (0 of 1 for a single image).
    """

    iteration: int
    total: int
    loss: float | None
    image: Any = None
    ema: Any = None
    stop_signal: float | None = None
    best_iteration: int = 0
    stopped: bool = False
    rolled_back: bool = False
    message: str | None = None
    slice_index: int = 0
    n_slices: int = 1

    @property
    def has_images(self) -> bool:
        return self.ema is not None or self.image is not None


@dataclass
class FitResult:
    """Outcome of a fit.

    Attributes
    ----------
    image
        The best estimate (exported): the average at the stop point for automatic fits, the final
        average for fixed fits.
    iterations, best_iteration : int
        Iterations done, and the iteration the estimate comes from.
    stopped_early : bool
        The automatic rule stopped before the cap.
    cancelled : bool
        The consumer stopped the generator before the end.
    rollbacks : int
        Loss blow-ups recovered from.
    weights : str or None
        The weights file the fit started from (None: random weights, or a warm start).
    seconds : float
        Wall time of the loop.
    history : dict
        ``iteration``/``loss`` (host-synchronised iterations) and ``signal_iteration``/``signal``.
    """

    image: Any
    iterations: int
    best_iteration: int
    stopped_early: bool = False
    cancelled: bool = False
    rollbacks: int = 0
    seconds: float = 0.0
    history: dict[str, list] = field(default_factory=dict)
    weights: str | None = None

    def history_json(self) -> dict[str, Any]:
        """The loss and stop-signal curves as plain JSON-able data."""
        return {"iterations": self.iterations, "best_iteration": self.best_iteration,
                "stopped_early": self.stopped_early, "cancelled": self.cancelled,
                "rollbacks": self.rollbacks, "seconds": round(self.seconds, 3), "weights": self.weights,
                **{k: list(v) for k, v in self.history.items()}}


def check_iterations(iterations: int | str) -> int | None:
    """Validate ``iterations``: a positive int, or ``'auto'`` (returns None).

    Raises
    ------
    ValueError
        For 0, negative numbers, non-integers and other strings.
    """
    if isinstance(iterations, str):
        if iterations.strip().lower() == "auto":
            return None
        try:
            iterations = int(iterations)
        except ValueError:
            raise ValueError(f"iterations must be a positive integer or 'auto', got {iterations!r}") from None
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer or 'auto', got {iterations!r}")
    return int(iterations)


def _default_export(x: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` tensor -> ``(H, W, C)`` float32 numpy copy."""
    return x[0].detach().float().permute(1, 2, 0).cpu().numpy().copy()


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and ("out of memory" in text or "can't allocate" in text
                                                           or "cannot allocate" in text)


class Fitter:
    """One DIP fit of a single ``(1, C, h, w)`` measurement.

    Parameters
    ----------
    target : tensor
        The measurement ``y``, ``(1, C, h, w)``, values in ``[0, 1]``.
    operator : LinearOperator, optional
        The forward operator ``A`` (default identity: denoising).
    settings : Settings, optional
        Network, input code, optimiser and stopping settings (default: the ``paper`` denoiser).
    iterations : int or 'auto'
        A fixed count, or automatic stopping capped at ``settings.iterations``.
    device : str or torch.device
        ``'auto'``, ``'cpu'``, ``'cuda'``, ...
    seed : int
        Seeds the code z (or the hidden pixels), the weights and the jitter: equal seeds give bit-identical
        fits on a CPU with the same torch version and thread count (other thread counts sum in another
        order and give fits of equal quality, not equal pixels).
    preview_every : int
        Export images into snapshots every this many iterations (0: only at the end).
    export : callable, optional
        Maps a ``(1, C, H, W)`` tensor in ``[0, 1]`` to what snapshots and the result hold
        (default: an ``(H, W, C)`` float32 numpy array).
    net : DIPNet, optional
        A prebuilt network (its weights are used as they are); default: built from ``settings``.
    init_state : dict, optional
        Weights to start from (a warm start from a neighbouring slice).
    input : tensor, optional
        A fixed network input ``(1, in_channels, H, W)`` at the output size (e.g. the flash image
        of flash/no-flash) instead of the random code; it is reflect-padded like the output.
    precision : {'auto', 'fp32', 'bf16', 'fp16'}
        ``'auto'``: float32 everywhere, with TF32 convolutions and matrix products on CUDA (bf16
        cost about 0.3 dB on the CPU and has not been measured equal on a GPU). ``'bf16'`` is an
        opt-in autocast (CUDA and CPU): on CPUs with AMX it ran 2.3x (``paper``) and 1.2x (``fast``) faster per
        iteration, at 0.2-0.5 dB lower PSNR after equal iteration counts (docs/performance.md);
        on CPUs without native bf16 it is slower. ``'fp16'`` applies on CUDA only.
    sync_every : int, optional
        Copy the loss to the host every this many iterations (default 1 on CPU, 10 on GPUs).
    channels_last : bool, optional
        Run the network on channels-last tensors (default: on CUDA, and on the CPU except for masked fits).
    groups : int
        Fit this many independent images at once, stacked along the target's channels
        (``(1, groups * C, H, W)``), with one skip network per image run side by side as grouped
        convolutions. Each image gets exactly what a single fit with the same seed gets (code,
        initial weights, jitter, hold-out pixels, its own loss normalisation, stopping and best
        iteration), so results do not depend on which images share a batch.
    noise_levels : sequence of float or None, optional
        Per image, the noise variance of the target where it is known (e.g. 1/scale**2 in the
        variance-stabilised domain of :mod:`napari_dip.core.noise`): the discrepancy rule stops at it
        instead of its estimate from the image (:func:`~napari_dip.core.stopping.noise_variance`).
    context : tensor, optional
        Masked fits only: ``(1, K, h, w)`` images at the target's size that the network sees
        next to the measurement with its hidden pixels, never hidden themselves: a stack's
        neighbouring planes, whose noise is independent of the target's (so showing them does not
        leak a hidden pixel's own noise), in the target's intensity scale. Weights made for
        ``C + 1`` inputs (a weights file, ``init_state``) get zero weights for these ``K`` extra
        channels, so the fit starts exactly where it would without them.
    """

    def __init__(self, target: torch.Tensor, operator: LinearOperator | None = None,
                 settings: Settings | None = None, *, iterations: int | str = "auto",
                 device: str | torch.device = "auto", seed: int = 0, preview_every: int = 0,
                 export: Export | None = None, net: DIPNet | None = None, init_state: dict | None = None,
                 precision: str = "auto", sync_every: int | None = None, input: torch.Tensor | None = None,
                 groups: int = 1, channels_last: bool | None = None,
                 noise_levels: Sequence[float | None] | None = None, context: torch.Tensor | None = None):
        try:
            self._setup(target, operator, settings, iterations, device, seed, preview_every, export, net,
                        init_state, precision, sync_every, input, groups, channels_last, noise_levels, context)
        except Exception as err:
            if _is_oom(err):
                raise DIPMemoryError(f"out of memory while setting up the fit of a {tuple(target.shape[-2:])} "
                                     f"image: use a smaller image or crop, tiling, a lighter preset, or another device "
                                     f"(original error: {str(err).splitlines()[0]})") from err
            raise

    def _setup(self, target, operator, settings, iterations, device, seed, preview_every, export, net,
               init_state, precision, sync_every, input, groups, channels_last, noise_levels=None,
               context=None) -> None:
        if target.ndim != 4 or target.shape[0] != 1:
            raise ValueError(f"target must be a (1, C, H, W) tensor, got shape {tuple(target.shape)}")
        self.settings = settings or get_settings("paper", "denoise")
        s = self.settings
        fixed = check_iterations(iterations)
        self.auto = fixed is None
        self.total = s.iterations if self.auto else fixed
        self.device = resolve_device(device)
        self.operator = (operator or Identity()).to(self.device)
        self.target = target.to(self.device, torch.float32)
        self.export = export or _default_export
        self.preview_every = int(preview_every)
        self.seed = int(seed)
        cuda = self.device.type == "cuda"
        self.sync_every = int(sync_every or (10 if cuda else 1))
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {precision!r}; use 'auto', 'fp32', 'bf16' or 'fp16'")
        self.amp_dtype = None
        if precision == "bf16" and self.device.type in ("cuda", "cpu"):
            self.amp_dtype = torch.bfloat16
        elif cuda and precision == "fp16":
            self.amp_dtype = torch.float16

        out_shape = self.operator.input_shape(self.target.shape)
        self.out_size = (int(out_shape[-2]), int(out_shape[-1]))
        self.groups = int(groups)
        if self.groups < 1 or self.target.shape[1] % self.groups:
            raise ValueError(f"groups must divide the target's {self.target.shape[1]} channels, got {groups}")
        channels = int(self.target.shape[1]) // self.groups
        if self.groups > 1 and (net is not None or input is not None or s.network != "skip"):
            raise ValueError("batched fits (groups > 1) build their own skip network from a random code")
        self.masked = s.input_kind == "masked"
        if self.masked:
            check_mask_ratio(s.mask_ratio)
            if not isinstance(self.operator, (Identity, Mask)):
                raise ValueError("input_kind='masked' (the network sees the image with hidden pixels) works for "
                                 "denoising and inpainting only; use input_kind='noise' (e.g. the 'fast' preset) "
                                 "for super-resolution")
            if self.groups > 1 or input is not None:
                raise ValueError("input_kind='masked' fits one image at a time from the image itself: no batched "
                                 "planes (groups > 1) and no fixed input")
        extra = self._check_context(context)
        in_channels = channels + 1 + extra if self.masked else s.input_channels
        self.mask_ratio: float | None = None
        self.average_weight = s.ema
        self._holdout_tolerance = 0.0
        if self.masked:  # 'auto': 0.3 for white noise, 0.9 (a longer average, a tolerant hold-out) for correlated
            self.mask_ratio = check_mask_ratio(s.mask_ratio)
            if self.mask_ratio == "auto":
                correlation = noise_correlation(self.target) if isinstance(self.operator, Identity) else None
                self.mask_ratio, correlated = choose_mask_ratio(correlation, CORRELATED_NOISE_THRESHOLD)
                if correlated:
                    self.average_weight = max(s.ema, CORRELATED_NOISE_AVERAGE)
                    self._holdout_tolerance = CORRELATED_NOISE_TOLERANCE
        self.weights_file: str | None = None
        if net is None and init_state is None and s.weights is not None:
            path = resolve_weights(s.weights, channels)
            if path is not None:
                pretrained = load_weights(path)
                pretrained.check(s.network, s.network_kwargs, in_channels - extra, channels, s.input_kind)
                init_state, self.weights_file = pretrained.state_dict, str(path)
        if net is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = build_network(s.network, in_channels, channels, **s.network_kwargs)
                if self.groups > 1:
                    states = init_state if isinstance(init_state, list) else [init_state or net.state_dict()] * groups
                    net = build_network(s.network, s.input_channels, channels, groups=self.groups,
                                        **s.network_kwargs)
                    net.load_state_dict(stack_state(states))
                    init_state = None
        if net.out_channels != channels:
            raise ValueError(f"the network makes {net.out_channels} channels, the image has {channels}")
        if init_state is not None:
            net.load_state_dict(widen_inputs(init_state, net) if extra else init_state)
        m = net.size_multiple
        h, w = self.out_size
        # the deepest maps must be larger than their reflection padding: at least net.min_cells * m
        cells = net.min_cells
        self.padded = (max(math.ceil(h / m), cells) * m, max(math.ceil(w / m), cells) * m)
        self.offset = ((self.padded[0] - h) // 2, (self.padded[1] - w) // 2)
        self.net = net.to(self.device).train()
        # channels-last: cuDNN's fast path on CUDA, and 1.09-1.15x per iteration on the CPU (oneDNN) for
        # the random-code nets, measured by benchmarks/speed.py; the light masked net (2-4 input
        # channels) ran 1.25-1.5x faster per iteration in NCHW on the CPU (256 and 512 px); MPS keeps NCHW
        if channels_last is None:
            channels_last = self.device.type == "cuda" or (self.device.type == "cpu" and not self.masked)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if cuda:
            torch.backends.cudnn.benchmark = True
            if precision == "auto":  # float32 storage, TF32 arithmetic in convolutions and matrix products
                torch.backends.cudnn.allow_tf32 = True
                torch.backends.cuda.matmul.allow_tf32 = True
        if self.masked:  # the input is built from the image every iteration (after the hold-out below)
            z = torch.zeros(1, 1, 1, 1)  # unused
            self._noise_shape = ()
        elif input is None:
            z = make_input(net.in_channels, *net.input_size(*self.padded), kind=s.input_kind,
                           scale=s.input_scale, seed=self.seed)
            self._noise_shape = tuple(z.shape)
            if self.groups > 1:  # every image gets the code its single fit would get
                z = z.repeat(1, self.groups, 1, 1)
        else:
            if input.ndim != 4 or input.shape[0] != 1 or input.shape[1] != net.in_channels \
                    or tuple(input.shape[-2:]) != self.out_size:
                raise ValueError(f"input must be (1, {net.in_channels}, {h}, {w}), got {tuple(input.shape)}")
            (top, left), (ph, pw) = self.offset, self.padded
            bottom, right = ph - h - top, pw - w - left
            mode = "reflect" if max(top, bottom) < h and max(left, right) < w else "replicate"
            z = F.pad(input.float(), (left, right, top, bottom), mode=mode)
            self._noise_shape = tuple(z.shape)
        self.z = z.to(self.device, memory_format=torch.channels_last) if self.channels_last else z.to(self.device)
        # one fused kernel for all parameters instead of ~10 small ops per tensor: 5 % per
        # iteration on the CPU (benchmarks/speed.py); same update rule
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=s.lr, fused=fused or None)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.jitter_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        weight = self.operator.loss_weight
        weight = torch.ones_like(self.target[:, :1]) if weight is None else weight.to(self.device).float()
        if float(weight.sum()) == 0:
            raise ValueError("no pixel of the measurement is known: nothing to fit")
        if s.stop_rule not in STOP_RULES:
            raise ValueError(f"unknown stop rule {s.stop_rule!r}; use one of {', '.join(map(repr, STOP_RULES))}")
        if s.keep_estimate not in ("minimum", "stop"):
            raise ValueError(f"keep_estimate must be 'minimum' (the average at the stop signal's minimum) or 'stop' "
                             f"(the average when the rule stops), got {s.keep_estimate!r}")
        weight = weight.expand(1, self.target.shape[1], *weight.shape[-2:])
        # the rule of each image: 'auto' measures each image's noise correlation on its own, so a
        # batched image gets the rule (and hold-out pixels) of its single fit
        group_rules = [s.stop_rule] * self.groups
        self.noise_correlations: list[float | None] = []
        if s.stop_rule == "auto" and self.auto:
            denoising = isinstance(self.operator, Identity)
            picks = [choose_rule(self.target[:, g * channels:(g + 1) * channels], denoising)
                     for g in range(self.groups)]
            # a masked fit's average never sees a pixel's own noise, so its residual cannot fall to the
            # noise level: it keeps the hold-out, whatever the noise correlation
            group_rules = ["holdout" if self.masked else rule for rule, _ in picks]
            self.noise_correlations = [corr for _, corr in picks]
        self.rules: list[HoldOut | WindowedVariance | Discrepancy] = []
        held = None
        if "holdout" in group_rules and self.auto:  # a fixed-count fit uses every pixel
            # denoising only: on the inpainting and super-resolution crops the extra unfitted pixels
            # cost 0.8 and 0.6 dB with gaps already <= 0.02 dB at 5 % (docs/benchmarks.md)
            known_values = int((weight[:, :channels] > 0).sum())  # of one image
            min_values = s.holdout_min_values if isinstance(self.operator, Identity) else 0
            fraction = holdout_fraction_for(known_values, s.holdout_fraction, min_values)
            held = holdout_mask(tuple(self.target.shape[-2:]), fraction, self.seed).to(self.device)
            held = held * (weight > 0).float()
            uses = torch.tensor([r == "holdout" for r in group_rules], dtype=held.dtype, device=self.device)
            held = held * uses.repeat_interleave(channels).view(1, -1, 1, 1)
            train = weight * (1 - held)
            per_group = lambda t: t.reshape(self.groups, -1).sum(1)  # noqa: E731
            checked = [g for g, r in enumerate(group_rules) if r == "holdout"]
            if bool((per_group(held)[checked] == 0).any()) or bool((per_group(train) == 0).any()):
                held = None  # too few pixels to hold any out: fall back to ES-WMV
            else:
                weight = train
        for g in range(self.groups):
            c = slice(g * channels, (g + 1) * channels)
            level = 0.0
            if self.auto and group_rules[g] == "discrepancy":
                known_level = noise_levels[g] if noise_levels is not None else None
                level = known_level if known_level is not None else noise_variance(self.target[:, c])
            if held is not None and group_rules[g] == "holdout":
                # the held-out pixels are known pixels, where a mask operator is the identity
                op = Identity() if isinstance(self.operator, Mask) else self.operator
                self.rules.append(HoldOut(op, self.target[:, c], held[:, c], s.stop_patience, s.stop_every,
                                          s.min_iterations, tolerance=self._holdout_tolerance,
                                          floor=s.min_iterations if self.masked else 0))
            elif level > 0:
                self.rules.append(Discrepancy(self.operator, self.target[:, c], weight[:, c], level, s.stop_every,
                                              s.min_iterations))
            elif (self.auto and group_rules[g] != "none") or s.stop_rule == "wmv":
                self.rules.append(WindowedVariance(s.stop_window, s.stop_patience, s.stop_every, s.min_iterations,
                                                   delay=averaging_lag(s.ema)))
        if self.auto and not self.rules:
            raise ValueError("iterations='auto' needs a stopping rule; use stop_rule='auto', 'holdout', 'wmv' or "
                             "'discrepancy'")
        self.stop_rules = ["holdout" if isinstance(r, HoldOut) else "discrepancy" if isinstance(r, Discrepancy)
                           else "wmv" for r in self.rules]
        self.channels = channels
        self.weight = weight.expand_as(self.target).contiguous()
        self.group_denominators = self.weight.reshape(self.groups, -1).sum(1)
        self.all_weights_one = bool((self.weight == 1).all())
        if self.masked:
            # the image itself, reflect-padded like the output; pixels that are unknown or held out
            # for validation are never shown to the network
            (top, left), (ph, pw) = self.offset, self.padded
            bottom, right = ph - h - top, pw - w - left
            pad, mode = (left, right, top, bottom), ("reflect" if max(top, bottom) < h and max(left, right) < w
                                                     else "replicate")
            never = (self.weight[:, :1] == 0).float()
            source = F.pad(self.target * (1 - never), pad, mode=mode)
            self._source = source.contiguous(memory_format=torch.channels_last) if self.channels_last else source
            self._never_shown = F.pad(never, pad, mode=mode)
            self._context = None if context is None else F.pad(context.to(self.device, torch.float32), pad, mode=mode)
            self.mask_gen = torch.Generator(device=self.device).manual_seed(self.seed + 2)

        self.iteration = 0
        self._ema_sum: torch.Tensor | None = None  # biased running average (Adam-style)
        self.ema: torch.Tensor | None = None  # its bias-corrected value
        self.last: torch.Tensor | None = None
        self.best: torch.Tensor | None = None
        self.best_iteration = 0
        self.group_best = [0] * self.groups
        self.group_stopped = [False] * self.groups
        self.stopped_early = False
        self.rollbacks = 0
        self.seconds = 0.0
        self.history: dict[str, list] = {"iteration": [], "loss": [], "signal_iteration": [], "signal": []}
        if self.noise_correlations:  # stop_rule='auto': what it measured and chose, per image
            self.history["stop_rule"] = list(self.stop_rules)
            self.history["noise_correlation"] = list(self.noise_correlations)
        if self.masked:
            self.history["mask_ratio"] = [self.mask_ratio]
        if self.rules:  # iterations from each image's signal minimum to the average kept as its estimate
            self.history["estimate_delay"] = [r.delay for r in self.rules]
        self._ema_steps = 0
        self._checkpoint: dict | None = None
        self._last_good: float | None = None
        self._restores = 0  # rollbacks to the current checkpoint
        self._finished = False

    # -- pieces of one iteration ------------------------------------------------------------
    def _check_context(self, context: torch.Tensor | None) -> int:
        """Validate ``context`` against the target; the number of extra input channels it adds."""
        if context is None:
            return 0
        if not self.masked:
            raise ValueError("context (extra images the network sees, e.g. neighbouring planes) needs a masked "
                             "fit (input_kind='masked', the 'pretrained' preset)")
        if context.ndim != 4 or context.shape[0] != 1 or tuple(context.shape[-2:]) != self.out_size \
                or context.shape[1] < 1:
            raise ValueError(f"context must be a (1, K, {self.out_size[0]}, {self.out_size[1]}) tensor like the "
                             f"target, got shape {tuple(context.shape)}")
        if not bool(torch.isfinite(context).all()):
            raise ValueError("context contains NaN or Inf values")
        return int(context.shape[1])

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        (oh, ow), (h, w) = self.offset, self.out_size
        return x[..., oh:oh + h, ow:ow + w]

    def _loss(self, out: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        pred = self.operator(out)
        if hidden is None and self.groups == 1 and self.all_weights_one:
            return F.mse_loss(pred, self.target)
        # weighted mean per image, summed over a batch: each image's gradients as in its single fit
        weight = self.weight if hidden is None else self.weight * hidden
        err = ((pred - self.target) ** 2 * weight).reshape(self.groups, -1).sum(1)
        if hidden is None:
            return (err / self.group_denominators).sum()
        return (err / weight.reshape(self.groups, -1).sum(1).clamp_min(1.0)).sum()

    def _masked_average(self, fallback: torch.Tensor) -> torch.Tensor:
        """Bias-corrected per-pixel average of the hidden-pixel predictions (``fallback`` where none yet)."""
        steps = self._ema_steps.expand_as(self._ema_sum)
        average = self._ema_sum / (1 - torch.pow(self.average_weight, steps)).clamp_min(1e-12)
        return torch.where(steps > 0, average, fallback)

    def _save_checkpoint(self, loss: float) -> None:
        """Keep the current weights (before this iteration's step) with the loss they gave."""
        self._restores = 0
        self._checkpoint = {
            "loss": loss,
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "opt": copy.deepcopy(self.optimizer.state_dict()),
            "ema": None if self._ema_sum is None else (
                self._ema_sum.clone(), self._ema_steps.clone() if torch.is_tensor(self._ema_steps) else self._ema_steps),
        }

    def _rollback(self) -> str:
        """Restore the last checkpoint; every second restore of the same one halves the learning rate.

        The checkpoint holds the weights that gave its loss (saved before the step), so the next
        steps are judged against that loss, not the (lower) one just before the blow-up. A step
        that blows up again from the same weights (e.g. Adam's first, full-size step at a high
        learning rate) would otherwise be retried forever: every second restore halves the rate,
        and the restored optimizer state keeps the halved rate.
        """
        self.rollbacks += 1
        self._restores += 1
        msg = f"loss blew up at iteration {self.iteration}; restored the last good weights"
        if self._checkpoint is not None:
            self._last_good = self._checkpoint["loss"]
            self.net.load_state_dict(self._checkpoint["net"])
            rates = [group["lr"] for group in self.optimizer.param_groups]  # the checkpoint's may be higher
            self.optimizer.load_state_dict(copy.deepcopy(self._checkpoint["opt"]))
            for group, lr in zip(self.optimizer.param_groups, rates):
                group["lr"] = lr
            if self._checkpoint["ema"] is not None:
                ema_sum, steps = self._checkpoint["ema"]
                self._ema_sum = ema_sum.clone()
                if self.masked:
                    self._ema_steps = steps.clone()
                    self.ema = self._masked_average(self.last if self.last is not None else ema_sum)
                else:
                    self._ema_steps = steps
                    self.ema = self._ema_sum / (1 - self.settings.ema ** self._ema_steps)
        if self._restores % 2 == 0:
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.5
            msg += f"; learning rate halved to {self.optimizer.param_groups[0]['lr']:.3g}"
        return msg

    def _estimate(self) -> torch.Tensor | None:
        """Best estimate so far: the average at the stop-signal minimum (auto) or the latest."""
        if self.auto and self.best is not None:
            return self.best
        return self.ema if self.ema is not None else self.last

    def _update_rules(self, it: int, out: torch.Tensor, estimate: torch.Tensor) -> StopCheck:
        """Feed every image's stopping rule; keep each image's estimate at its own minimum (or, with
        ``keep_estimate='stop'``, when its rule stops)."""
        at_stop = self.settings.keep_estimate == "stop"
        signals, improved_any = [], False
        for g, rule in enumerate(self.rules):
            if self.group_stopped[g]:
                continue  # a stopped image keeps its estimate, whatever its net does later
            c = slice(g * self.channels, (g + 1) * self.channels)
            check = rule.update(it, out[:, c], estimate[:, c])
            if check.improved:
                improved_any = True
            capture = check.stop if at_stop else check.capture
            if capture or (it == self.total and (at_stop or rule.capture_pending)):  # the cap: keep the latest
                if self.best is None:
                    self.best = estimate.clone()
                else:
                    self.best[:, c] = estimate[:, c]
                self.group_best[g] = it
            if check.stop:
                self.group_stopped[g] = True
            if check.signal is not None:
                signals.append(check.signal)
        self.best_iteration = max(self.group_best)
        signal = float(np.mean(signals)) if signals else None
        if signal is not None:
            self.history["signal_iteration"].append(it)
            self.history["signal"].append(signal)
        return StopCheck(signal, improved_any, bool(self.rules) and all(self.group_stopped))

    # -- public -----------------------------------------------------------------------------
    def steps(self) -> Generator[Snapshot, None, FitResult]:
        """Run the fit, yielding a snapshot per iteration; returns the :class:`FitResult`."""
        if self._finished:
            raise RuntimeError("this fit has already run; make a new Fitter")
        s = self.settings
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else nullcontext())
        start = time.perf_counter()
        try:
            while self.iteration < self.total:
                self.iteration += 1
                it = self.iteration
                z, hidden = self.z, None
                if self.masked:
                    visible = hide((1, 1, *self.padded), self.mask_ratio, self.mask_gen, self.device, self._never_shown)
                    z = masked_input(self._source, visible, self._context)
                    if self.channels_last:
                        z = z.contiguous(memory_format=torch.channels_last)
                    hidden = 1.0 - self._crop(visible)
                elif s.reg_noise_std > 0:
                    noise = torch.randn(self._noise_shape, generator=self.jitter_gen, device=self.device,
                                        dtype=z.dtype)
                    if self.groups > 1:
                        noise = noise.repeat(1, self.groups, 1, 1)
                    z = z + s.reg_noise_std * noise
                with autocast:
                    out = self._crop(self.net(z)).float()
                    loss = self._loss(out, hidden)
                sync = it % self.sync_every == 0 or it == 1 or it == self.total
                loss_value = float(loss.detach()) if sync else None
                rolled, message = False, None
                if sync:
                    bad = not math.isfinite(loss_value) or (
                        self._last_good is not None and loss_value > s.rollback_factor * self._last_good)
                    if bad:
                        message, rolled = self._rollback(), True
                    else:  # the weights that gave this loss, before this step changes them
                        self._last_good = loss_value
                        if self._checkpoint is None or it % s.checkpoint_every == 0:
                            self._save_checkpoint(loss_value)
                if not rolled:
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        loss.backward()
                        self.optimizer.step()
                    with torch.no_grad():
                        out = out.detach()
                        self.last = out
                        if self.masked:  # average each pixel over the iterations that hid it
                            if self._ema_sum is None:
                                self._ema_sum = torch.zeros_like(out)
                                self._ema_steps = torch.zeros_like(hidden)
                            w = self.average_weight
                            self._ema_sum = torch.where(hidden.expand_as(out) > 0, w * self._ema_sum + (1 - w) * out,
                                                        self._ema_sum)
                            self._ema_steps = self._ema_steps + hidden
                            self.ema = self._masked_average(out)
                        elif s.ema > 0:
                            if self._ema_sum is None:
                                self._ema_sum = torch.zeros_like(out)
                            self._ema_sum.mul_(s.ema).add_(out, alpha=1 - s.ema)
                            self._ema_steps += 1
                            self.ema = self._ema_sum / (1 - s.ema ** self._ema_steps)
                    estimate = self.ema if self.ema is not None else out
                    check = self._update_rules(it, out, estimate)
                    stop = self.auto and check.stop
                else:
                    check, stop = StopCheck(), False
                if loss_value is not None:
                    self.history["iteration"].append(it)
                    self.history["loss"].append(loss_value)
                if not self.auto:
                    self.best_iteration = it
                last = stop or it == self.total
                preview = last or (self.preview_every > 0 and it % self.preview_every == 0)
                self.seconds = time.perf_counter() - start
                snap = Snapshot(
                    iteration=it, total=self.total, loss=loss_value,
                    image=self.export(self.last) if preview and self.last is not None else None,
                    ema=self.export(self.ema) if preview and self.ema is not None else None,
                    stop_signal=check.signal, best_iteration=self.best_iteration, stopped=stop,
                    rolled_back=rolled, message=message)
                yield snap
                if stop:
                    self.stopped_early = it < self.total
                    break
        except Exception as err:
            if _is_oom(err):
                raise DIPMemoryError(
                    f"out of memory on {self.device} fitting a {self.padded[0]}x{self.padded[1]} image with "
                    f"this {s.network!r} network: use a smaller image or crop, tiling, a lighter preset, or another "
                    f"device (original error: {str(err).splitlines()[0]})") from err
            raise
        finally:
            self.seconds = time.perf_counter() - start
        self._finished = True
        return self.result()

    @property
    def has_estimate(self) -> bool:
        """Whether at least one iteration has completed (so :meth:`result` has something)."""
        return self._estimate() is not None

    def result(self, cancelled: bool = False) -> FitResult:
        """The best estimate so far (callable at any time, e.g. after cancelling)."""
        est = self._estimate()
        if est is None:
            raise RuntimeError("no iteration has run yet: there is no result")
        return FitResult(image=self.export(est), iterations=self.iteration,
                         best_iteration=self.best_iteration if self.auto and self.best is not None else self.iteration,
                         stopped_early=self.stopped_early, cancelled=cancelled, rollbacks=self.rollbacks,
                         seconds=self.seconds, history={k: list(v) for k, v in self.history.items()},
                         weights=self.weights_file)

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """Current network weights (CPU copies), e.g. to warm-start the next slice."""
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}


def drain(gen: Generator[Snapshot, None, Any], callback: Callable[[Snapshot], Any] | None = None) -> Any:
    """Run a snapshot generator to the end, calling ``callback`` on each snapshot; return its value."""
    while True:
        try:
            snap = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(snap)


def fit(target: torch.Tensor, operator: LinearOperator | None = None, settings: Settings | None = None, *,
        callback: Callable[[Snapshot], Any] | None = None, **kwargs) -> FitResult:
    """Run a whole fit (see :class:`Fitter` for the arguments); ``callback`` gets each snapshot."""
    return drain(Fitter(target, operator, settings, **kwargs).steps(), callback)
