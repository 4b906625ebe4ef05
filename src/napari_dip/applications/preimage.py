"""Natural pre-images and activation maximisation with a deep image prior (paper, Sec. 4).

Given a trained network ``Φ`` (a user's TorchScript file, a torchvision model name, or any
``nn.Module``) and one of its layers, the **pre-image** of an image ``x0`` is an image whose
features match ``Φ(x0)``; **activation maximisation** looks for an image that excites one unit.
Both are ill-posed; the paper restricts the search to images a generator can produce,
``x = f_θ(z)``, and optimises ``θ``:

    pre-image:           min_θ ‖Φ(f_θ(z)) − Φ(x0)‖² / ‖Φ(x0)‖²
    activation max.:     min_θ −Φ(f_θ(z))[unit]

The baseline it compares with (Mahendran & Vedaldi 2015) optimises the pixels directly with a
total-variation regulariser: ``min_x ‖Φ(x) − Φ(x0)‖² / ‖Φ(x0)‖² + λ·TV_β(x)`` (``method='tv'``).

Layers are named by their dotted module path (``'features.8'``, ``'layer3.1.conv2'``, as in
``model.named_modules()``); the output of that module is captured with a forward hook. TorchScript
modules do not run Python hooks, so for them the prefix of the network up to the layer is run
module by module: every module on the path must be a ``Sequential``.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.devices import resolve_device
from ..core.fit import FitResult, Snapshot
from ..core.inputs import make_input
from ..core.layout import infer_layout
from ..core.networks import build_network
from ..core.settings import Settings
from ._common import PlaneJob, fixed_iterations, prepare_plane

__all__ = [
    "ACTMAX_SETTINGS", "IMAGENET_MEAN", "IMAGENET_STD", "PREIMAGE_SETTINGS", "ActMaxJob", "FeatureExtractor",
    "PreImageJob", "PreImageResult", "activation_maximisation", "load_model", "pre_image", "tv_norm",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Reference settings for feature inversion (AlexNet): 6 scales [16..128], 4-channel skips,
#: kernels 7,7,5,5,3,3, average-pool downsampling, zero padding, 32-channel code, lr 0.001, 3100 its.
PREIMAGE_SETTINGS = Settings(
    network="skip",
    network_kwargs=dict(channels_down=(16, 32, 64, 128, 128, 128), channels_up=(16, 32, 64, 128, 128, 128),
                        channels_skip=(4,) * 6, kernel_down=(7, 7, 5, 5, 3, 3), kernel_up=(7, 7, 5, 5, 3, 3),
                        downsample="avg", pad="zero", upsample="bilinear"),
    input_channels=32, lr=0.001, reg_noise_std=0.0, ema=0.0, iterations=3100, stop_rule="none",
)

#: Reference settings for activation maximisation: as above with no skip at the finest scale,
#: kernels 5,5,3,3,3,3, lr 0.001 (0.01 for the last layer in the paper), jitter 0.03.
ACTMAX_SETTINGS = PREIMAGE_SETTINGS.replace(
    network_kwargs={**PREIMAGE_SETTINGS.network_kwargs, "channels_skip": (0, 4, 4, 4, 4, 4),
                    "kernel_down": (5, 5, 3, 3, 3, 3), "kernel_up": (5, 5, 3, 3, 3, 3)},
    reg_noise_std=0.03,
)


# -- models and layers ------------------------------------------------------------------------------
def load_model(model: nn.Module | str | os.PathLike, *, weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, bool]:
    """Resolve ``model`` to a module in eval mode on ``device``.

    Parameters
    ----------
    model : nn.Module, path or str
        A module (used as is), a TorchScript file (``torch.jit.load``), or a torchvision model name
        such as ``'alexnet'`` or ``'vgg16'`` (needs torchvision; its pretrained weights load the
        standard torchvision way unless ``weights`` is given).
    weights : path, optional
        A state dict for a torchvision model or a module, read with ``torch.load(weights_only=True)``.
    device : str or torch.device

    Returns
    -------
    (module, is_torchvision)

    Raises
    ------
    ValueError
        If a string is neither an existing file nor a torchvision model name, or torchvision is
        missing for a name.
    """
    dev = resolve_device(device)
    torchvision_model = False
    if isinstance(model, nn.Module):
        net = model
    else:
        path = Path(model)
        if path.is_file():
            try:
                net = torch.jit.load(str(path), map_location="cpu")
            except Exception as err:  # noqa: BLE001 - many loader errors
                raise ValueError(f"{path}: not a TorchScript model ({type(err).__name__}: {err}); save it "
                                 "with torch.jit.script(model).save(path) or torch.jit.trace") from err
        elif path.suffix in (".pt", ".pth", ".ts", ".jit") or os.sep in str(model):
            raise ValueError(f"{model}: no such model file")
        else:
            try:
                import torchvision
            except ImportError:
                raise ValueError(f"{model!r} is not a file, and torchvision (needed for model names) is not "
                                 "installed; pass a TorchScript file instead") from None
            try:
                net = torchvision.models.get_model(str(model), weights=None if weights else "DEFAULT")
            except ValueError as err:
                raise ValueError(f"unknown torchvision model {model!r}: {err}") from None
            torchvision_model = True
    if weights is not None:
        if isinstance(net, torch.jit.ScriptModule):
            raise ValueError("weights apply to an nn.Module or a torchvision name, not to a TorchScript file")
        net.load_state_dict(_load_state_dict(weights))
    return net.to(dev).eval(), torchvision_model


def _load_state_dict(weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``: tensors and plain containers only.

    A file holding anything else (a pickled object, which would run code when loaded) is refused
    with a ValueError; nothing in it is executed.
    """
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: refused: not a plain state dict of tensors (it holds Python objects, "
                         "and loading them could run code from the file); save weights with "
                         "torch.save(model.state_dict(), path)") from None
    except Exception as err:  # noqa: BLE001 - zip, EOF and format errors of many types
        raise ValueError(f"{path}: cannot read as a state dict ({type(err).__name__}: "
                         f"{(str(err).strip().splitlines() or [''])[0][:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def _modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


class _Stop(Exception):
    """Raised by the capture hook to skip the rest of the forward pass."""


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"the layer returned {type(out).__name__}, not a tensor")


class FeatureExtractor:
    """``Φ``: an image in ``[0, 1]`` -> the output of one layer of ``model``.

    Parameters
    ----------
    model : nn.Module
        In eval mode (see :func:`load_model`). TorchScript modules are supported when every
        module on the layer's path is a ``Sequential``.
    layer : str or None
        Dotted module name (see ``model.named_modules()``); None or ``''``: the model's output.
    mean, std : sequence of float, optional
        Per-channel input normalisation ``(x - mean) / std`` applied before the model.
    """

    def __init__(self, model: nn.Module, layer: str | None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        self.model = model
        self.layer = layer or ""
        self.scripted = isinstance(model, torch.jit.ScriptModule)
        modules = _modules(model)
        if self.layer and self.layer not in modules:
            names = [n for n in modules if n]
            shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
            raise ValueError(f"the model has no layer {self.layer!r}; layers: {shown}")
        self.module = modules[self.layer]
        if self.scripted and self.layer:
            self._check_sequential_path(modules)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def _check_sequential_path(self, modules: dict[str, nn.Module]) -> None:
        parts = self.layer.split(".")
        for i in range(len(parts)):
            parent = ".".join(parts[:i])
            if getattr(modules[parent], "original_name", "") != "Sequential":
                raise ValueError(
                    f"layer {self.layer!r} of a TorchScript model: {parent or 'the model'} is a "
                    f"{getattr(modules[parent], 'original_name', type(modules[parent]).__name__)}, not a "
                    "Sequential, and TorchScript runs no Python hooks; export the network truncated at "
                    "that layer (or as a Sequential), or pass the nn.Module")

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            x = x - self.mean.to(x.device)
        if self.std is not None:
            x = x / self.std.to(x.device)
        return x

    def _scripted_prefix(self, x: torch.Tensor) -> torch.Tensor:
        container = self.model
        for part in self.layer.split("."):
            for name, child in container.named_children():
                if name == part:
                    container = child
                    break
                x = child(x)
        return container(x)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        x = self._normalise(x01)
        if not self.layer:
            return _first_tensor(self.model(x))
        if self.scripted:
            return _first_tensor(self._scripted_prefix(x))
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(_first_tensor(output))
            raise _Stop

        handle = self.module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {self.layer!r} was not called by the model's forward pass")
        return captured[0]


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; restores the flags afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def tv_norm(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Total variation ``mean((Δx² + Δy²)^(β/2))`` of a ``(N, C, H, W)`` tensor (Mahendran & Vedaldi)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return ((dx * dx + dy * dy + 1e-8) ** (beta / 2)).mean()


# -- the optimisation ------------------------------------------------------------------------------
@dataclass
class PreImageResult:
    """Result of :func:`pre_image` or :func:`activation_maximisation`.

    Attributes
    ----------
    image : ndarray
        float32; for a pre-image in the input image's layout and units, for activation
        maximisation ``(H, W, C)`` in ``[0, 1]``.
    method : {'dip', 'tv'}
    objective : float
        Final value of the data term: the relative feature distance
        ``‖Φ(x) − Φ(x0)‖² / ‖Φ(x0)‖²`` (pre-image) or the unit's activation (maximisation).
    initial : float
        The same quantity for the starting image (iteration 0).
    iterations, seconds
    history : dict
        ``iteration`` and ``objective`` per iteration.
    """

    image: np.ndarray
    method: str
    objective: float
    initial: float
    iterations: int
    seconds: float
    history: dict[str, list] = field(default_factory=dict)


class _Generator:
    """Either ``x = f_θ(z)`` (DIP) or ``x`` itself (TV baseline), as a ``(1, C, H, W)`` image."""

    def __init__(self, method: str, channels: int, size: tuple[int, int], settings: Settings, lr: float | None,
                 device: torch.device, seed: int):
        self.method = method
        h, w = size
        gen = torch.Generator().manual_seed(seed + 1)
        if method == "dip":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.net = build_network(settings.network, settings.input_channels, channels,
                                         **settings.network_kwargs)
            m = self.net.size_multiple
            self.padded = (max(math.ceil(h / m), 2) * m, max(math.ceil(w / m), 2) * m)
            self.offset = ((self.padded[0] - h) // 2, (self.padded[1] - w) // 2)
            self.net = self.net.to(device).train()
            self.z = make_input(self.net.in_channels, *self.net.input_size(*self.padded), kind=settings.input_kind,
                                scale=settings.input_scale, seed=seed).to(device)
            self.jitter = settings.reg_noise_std
            self.params = list(self.net.parameters())
            self.lr = settings.lr if lr is None else lr
        elif method == "tv":
            self.x = (0.5 + 0.05 * torch.randn((1, channels, h, w), generator=gen)).clamp(0, 1).to(device)
            self.x.requires_grad_(True)
            self.params = [self.x]
            self.lr = 0.01 if lr is None else lr
        else:
            raise ValueError(f"unknown method {method!r}; use 'dip' (deep image prior) or 'tv' (TV-norm baseline)")
        self.size = size
        self.noise = torch.Generator(device=device).manual_seed(seed + 2)
        self.device = device

    def __call__(self) -> torch.Tensor:
        if self.method == "tv":
            return self.x
        z = self.z
        if self.jitter > 0:
            z = z + self.jitter * torch.randn(z.shape, generator=self.noise, device=self.device)
        (oh, ow), (h, w) = self.offset, self.size
        return self.net(z)[..., oh:oh + h, ow:ow + w]

    def after_step(self) -> None:
        if self.method == "tv":
            with torch.no_grad():
                self.x.clamp_(0, 1)


class _Optimisation:
    """Adam on ``sign * objective(x) + regulariser(x)``, one step per snapshot of :meth:`steps`.

    It has the members of a :class:`~napari_dip.core.fit.Fitter` that drivers read (``steps()``
    returning a :class:`~napari_dip.core.fit.FitResult`, ``result()`` at any time,
    ``has_estimate``, ``iteration``, ``best_iteration``, ``auto``, ``best``), so a pre-image runs
    through the same driver as a restoration. ``initial`` is the objective (without regulariser or
    sign) of the starting image, ``final`` that of the image :meth:`result` returned last, evaluated
    without jitter where the generator has none.
    """

    auto = False
    best = None

    def __init__(self, gen: _Generator, objective: Callable[[torch.Tensor], torch.Tensor], regulariser,
                 iterations: int, sign: float, preview_every: int, export: Callable[[torch.Tensor], Any]):
        self.gen, self.objective, self.regulariser = gen, objective, regulariser
        self.total, self.sign = int(iterations), float(sign)
        self.preview_every, self.export = int(preview_every), export
        self.iteration = 0
        self.initial: float | None = None
        self.final: float | None = None
        self.seconds = 0.0
        self.history: dict[str, list] = {"iteration": [], "objective": []}

    @property
    def best_iteration(self) -> int:
        return self.iteration

    @property
    def has_estimate(self) -> bool:
        return self.iteration > 0

    def steps(self) -> Generator[Snapshot, None, FitResult]:
        gen = self.gen
        opt = torch.optim.Adam(gen.params, lr=gen.lr)
        start = time.perf_counter()
        try:
            while self.iteration < self.total:
                it = self.iteration + 1
                x = gen()
                value = self.objective(x)
                if self.initial is None:
                    self.initial = float(value.detach())
                loss = self.sign * value + (self.regulariser(x) if self.regulariser is not None else 0.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                gen.after_step()
                self.iteration = it
                self.history["iteration"].append(it)
                self.history["objective"].append(float(value.detach()))
                preview = self.preview_every > 0 and it % self.preview_every == 0
                self.seconds = time.perf_counter() - start
                yield Snapshot(iteration=it, total=self.total, loss=float(loss.detach()),
                               image=self.export(x.detach()) if preview else None, best_iteration=it)
        finally:
            self.seconds = time.perf_counter() - start
        return self.result()

    def _estimate(self) -> torch.Tensor:
        with torch.no_grad():
            if self.gen.method == "dip":
                jitter, self.gen.jitter = self.gen.jitter, 0.0
                try:
                    return self.gen().detach()
                finally:
                    self.gen.jitter = jitter
            return self.gen().detach().clone()

    def result(self, cancelled: bool = False) -> FitResult:
        """The image now (and its objective in :attr:`final`)."""
        if not self.has_estimate:
            raise RuntimeError("no iteration has run yet: there is no result")
        x = self._estimate()
        with torch.no_grad():
            self.final = float(self.objective(x))
        return FitResult(image=self.export(x), iterations=self.iteration, best_iteration=self.iteration,
                         cancelled=cancelled, seconds=self.seconds,
                         history={k: list(v) for k, v in self.history.items()})


def _setup(model, layer, weights, device, mean, std) -> tuple[FeatureExtractor, torch.device]:
    dev = resolve_device(device)
    net, is_tv = load_model(model, weights=weights, device=dev)
    if mean is None and std is None and is_tv:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return FeatureExtractor(net, layer, mean, std), dev


class _FeatureJob(PlaneJob):
    """What :class:`PreImageJob` and :class:`ActMaxJob` share: the model, the generator, the result."""

    method: str
    phi: FeatureExtractor

    def _setup_fit(self, method: str, settings: Settings, lr: float | None, tv_weight: float, tv_beta: float,
                   seed: int, preview_every: int, dev: torch.device) -> None:
        if method not in ("dip", "tv"):
            raise ValueError(f"unknown method {method!r}; use 'dip' (deep image prior) or 'tv' (TV-norm baseline)")
        self.method, self.lr, self.seed, self.dev = method, lr, int(seed), dev
        self.preview_every = int(preview_every)
        self._reg = (lambda x: tv_weight * tv_norm(x, tv_beta)) if method == "tv" and tv_weight > 0 else None

    def _optimisation(self, channels: int, size: tuple[int, int], objective, sign: float, export) -> _Optimisation:
        gen = _Generator(self.method, channels, size, self.settings, self.lr, self.dev, self.seed)
        return _Optimisation(gen, objective, self._reg, int(self.iterations), sign, self.preview_every, export)

    def steps(self) -> Generator[Snapshot, None, np.ndarray]:
        with _frozen(self.phi.model):  # eval mode and no parameter gradients while it runs
            return (yield from super().steps())

    @property
    def objective(self) -> float | None:
        """The data term of the last estimate (see :class:`PreImageResult`); None before any."""
        fit = self.last_fit
        return None if fit is None else fit.final

    @property
    def initial(self) -> float | None:
        """The data term of the starting image; None before the first iteration."""
        fit = self.last_fit
        return None if fit is None else fit.initial

    def outcome(self) -> PreImageResult:
        """The finished run as a :class:`PreImageResult`."""
        fit = self.last_fit
        if fit is None or not self.done[0]:
            raise RuntimeError("the optimisation has not run to its end")
        return PreImageResult(self.output.copy(), self.method, float(fit.final), float(fit.initial),
                              int(self.iterations), fit.seconds, {k: list(v) for k, v in fit.history.items()})


class PreImageJob(_FeatureJob):
    """A pre-image as a job: :meth:`~PlaneJob.steps` yields snapshots, so a GUI can preview, cancel
    and report it like a restoration; :func:`pre_image` runs it to the end.

    Parameters are those of :func:`pre_image` (without ``callback``), plus ``preset``, the name
    recorded for ``settings``. The model is loaded, the layer checked and the image's features
    computed here; the generator network is built when :meth:`~PlaneJob.steps` starts.
    """

    def __init__(self, image, model: nn.Module | str | os.PathLike, layer: str | None, *, method: str = "dip",
                 iterations: int = 3100, settings: Settings | None = None, lr: float | None = None,
                 tv_weight: float = 1e-2, tv_beta: float = 2.0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, weights: str | os.PathLike | None = None, device: str = "cpu",
                 seed: int = 0, channel_axis: int | None = None, preview_every: int = 0, preset: str = "custom",
                 **overrides):
        n = fixed_iterations(iterations)
        s = (settings or PREIMAGE_SETTINGS).replace(**overrides) if overrides or settings else PREIMAGE_SETTINGS
        plane = prepare_plane(image, channel_axis=channel_axis)
        phi, dev = _setup(model, layer, weights, device, mean, std)
        with _frozen(phi.model), torch.no_grad():
            target = phi(plane.tensor.to(dev)).detach()
        norm = float((target**2).sum())
        if norm == 0:
            raise ValueError(f"the features of layer {layer!r} are all zero for this image: nothing to match")
        super().__init__(plane.layout, n, s, preset)
        self._setup_fit(method, s, lr, tv_weight, tv_beta, seed, preview_every, dev)
        self.plane, self.phi, self.target, self.norm = plane, phi, target, norm

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.phi(x) - self.target) ** 2).sum() / self.norm

    def _new_fit(self) -> _Optimisation:
        return self._optimisation(self.plane.layout.channels, self.plane.layout.plane_shape, self._distance, 1.0,
                                  self.plane.export_plane)


class ActMaxJob(_FeatureJob):
    """Activation maximisation as a job (see :class:`PreImageJob`); :func:`activation_maximisation`
    runs it to the end. Parameters are those of :func:`activation_maximisation`, plus ``preset``."""

    def __init__(self, model: nn.Module | str | os.PathLike, layer: str | None, unit: int, *,
                 size: int | tuple[int, int] = 227, channels: int = 3, method: str = "dip", iterations: int = 3100,
                 settings: Settings | None = None, lr: float | None = None, tv_weight: float = 1e-2,
                 tv_beta: float = 2.0, where: str = "mean", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, weights: str | os.PathLike | None = None, device: str = "cpu",
                 seed: int = 0, preview_every: int = 0, preset: str = "custom", **overrides):
        n = fixed_iterations(iterations)
        h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if h < 1 or w < 1 or channels < 1:
            raise ValueError(f"size and channels must be positive, got size {(h, w)} and {channels} channels")
        if where not in ("mean", "centre", "center"):
            raise ValueError(f"unknown where={where!r}; use 'mean' or 'centre'")
        s = (settings or ACTMAX_SETTINGS).replace(**overrides) if overrides or settings else ACTMAX_SETTINGS
        phi, dev = _setup(model, layer, weights, device, mean, std)
        with _frozen(phi.model), torch.no_grad():
            probe = phi(torch.full((1, channels, h, w), 0.5, device=dev))
        if probe.ndim < 2 or not 0 <= int(unit) < probe.shape[1]:
            raise ValueError(f"unit {unit} is out of range: layer {layer!r} has {probe.shape[1] if probe.ndim > 1 else 0} "
                             f"units (output shape {tuple(probe.shape)})")
        layout = infer_layout((int(h), int(w), int(channels)), channel_axis=-1, rgb=channels in (3, 4))
        super().__init__(layout, n, s, preset)
        self._setup_fit(method, s, lr, tv_weight, tv_beta, seed, preview_every, dev)
        self.phi, self.unit, self.where, self.size, self.channels = phi, int(unit), where, (int(h), int(w)), int(channels)

    def _activation(self, x: torch.Tensor) -> torch.Tensor:
        a = self.phi(x)[:, self.unit]
        if a.ndim > 1 and self.where != "mean":
            a = a[(slice(None), *[d // 2 for d in a.shape[1:]])]
        return a.mean()

    @staticmethod
    def _export(x: torch.Tensor) -> np.ndarray:
        return x[0].detach().float().permute(1, 2, 0).cpu().numpy().copy()

    def _new_fit(self) -> _Optimisation:
        return self._optimisation(self.channels, self.size, self._activation, -1.0, self._export)


def pre_image(image, model: nn.Module | str | os.PathLike, layer: str | None, *, method: str = "dip",
              iterations: int = 3100, settings: Settings | None = None, lr: float | None = None,
              tv_weight: float = 1e-2, tv_beta: float = 2.0, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, weights: str | os.PathLike | None = None,
              device: str = "cpu", seed: int = 0, channel_axis: int | None = None,
              callback: Callable[[Snapshot], Any] | None = None, preview_every: int = 0,
              **overrides) -> PreImageResult:
    """Invert a representation: find an image whose layer-``layer`` features match ``image``'s.

    Parameters
    ----------
    image : array
        ``(H, W)`` or ``(H, W, C)`` with the channels the model expects; normalised to ``[0, 1]``
        from its own range.
    model : nn.Module, path or str
        See :func:`load_model` (TorchScript file, torchvision name, or module).
    layer : str or None
        Dotted module name whose output is ``Φ`` (None: the model's output).
    method : {'dip', 'tv'}
        ``'dip'``: the deep image prior ``x = f_θ(z)``; ``'tv'``: the TV-norm baseline on pixels.
    iterations : int
        Adam steps (3100 in the paper).
    settings : Settings, optional
        DIP network/code/lr (default :data:`PREIMAGE_SETTINGS`); ``**overrides`` change its fields.
    lr : float, optional
        Learning rate (default: the settings' for DIP, 0.01 for the pixels of the TV baseline).
    tv_weight, tv_beta : float
        ``λ`` and ``β`` of the baseline's ``λ·TV_β(x)`` (ignored by ``'dip'``).
    mean, std : sequence of float, optional
        Model input normalisation (ImageNet's by default for torchvision names, none otherwise).
    weights : path, optional
        State dict for a torchvision name or a module (``torch.load(weights_only=True)``).
    device, seed, channel_axis
        As for :func:`napari_dip.denoise` (device defaults to the CPU here).
    callback : callable, optional
        Called with a :class:`~napari_dip.core.fit.Snapshot` per iteration (images every
        ``preview_every`` iterations).

    Returns
    -------
    PreImageResult
        ``image`` in the input's layout and units; ``objective``/``initial``: relative feature
        distance of the result and of the starting image.
    """
    job = PreImageJob(image, model, layer, method=method, iterations=iterations, settings=settings, lr=lr,
                      tv_weight=tv_weight, tv_beta=tv_beta, mean=mean, std=std, weights=weights, device=device,
                      seed=seed, channel_axis=channel_axis, preview_every=preview_every, **overrides)
    job.run(callback)
    return job.outcome()


def activation_maximisation(model: nn.Module | str | os.PathLike, layer: str | None, unit: int, *,
                            size: int | tuple[int, int] = 227, channels: int = 3, method: str = "dip",
                            iterations: int = 3100, settings: Settings | None = None, lr: float | None = None,
                            tv_weight: float = 1e-2, tv_beta: float = 2.0, where: str = "mean",
                            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                            weights: str | os.PathLike | None = None, device: str = "cpu", seed: int = 0,
                            callback: Callable[[Snapshot], Any] | None = None, preview_every: int = 0,
                            **overrides) -> PreImageResult:
    """Find an image that maximally activates one unit (channel) of a layer.

    Parameters
    ----------
    model, layer, weights, mean, std, device, seed, callback, preview_every
        As for :func:`pre_image`.
    unit : int
        Channel index of the layer's output (``(N, C, ...)``: index along C).
    size : int or (int, int)
        Output image size (227 in the paper, for AlexNet).
    channels : int
        Image channels (3 for RGB models).
    method : {'dip', 'tv'}
    iterations : int
    settings : Settings, optional
        Default :data:`ACTMAX_SETTINGS`.
    lr, tv_weight, tv_beta
        As for :func:`pre_image`.
    where : {'mean', 'centre'}
        For spatial feature maps: maximise the channel's mean, or its value at the centre.

    Returns
    -------
    PreImageResult
        ``image`` ``(H, W, C)`` float32 in ``[0, 1]``; ``objective``/``initial``: the unit's
        activation for the result and for the starting image.
    """
    job = ActMaxJob(model, layer, unit, size=size, channels=channels, method=method, iterations=iterations,
                    settings=settings, lr=lr, tv_weight=tv_weight, tv_beta=tv_beta, where=where, mean=mean, std=std,
                    weights=weights, device=device, seed=seed, preview_every=preview_every, **overrides)
    job.run(callback)
    return job.outcome()
