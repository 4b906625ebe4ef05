"""Generator networks for Deep Image Prior and their named builders.

Every builder returns a :class:`DIPNet`: an ``nn.Module`` mapping a code ``z`` of shape
``(N, in_channels, h, w)`` to an image ``(N, out_channels, H, W)`` in ``[0, 1]`` (sigmoid output).
Each net also says which spatial size its input must have (``input_size``) and which multiple of
the image size it needs (``size_multiple``), so the fit loop can pad odd sizes and crop back.

Builders
--------
``skip``
    The paper's hourglass with skip connections (Ulyanov et al. 2018, supplementary material):
    per scale a 1x1 skip branch concatenated with a deeper branch (stride-2 3x3 conv, 3x3 conv,
    deeper scales, x2 upsampling), then BatchNorm, 3x3 conv and an optional 1x1 conv.
``unet``
    A UNet: two 3x3 convs per level, pooling down, upsampling + conv up, full skip concatenation.
``resnet``
    A full-resolution residual net (no downsampling), as in the paper's architecture study.
``decoder``
    A decoder-only net in the style of the Deep Decoder (Heckel & Hand 2019): 1x1 convs,
    bilinear x2 upsampling, ReLU and BatchNorm, from a small low-resolution code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "DIPNet",
    "build_network",
    "count_parameters",
    "decoder",
    "resnet",
    "skip",
    "unet",
    "NETWORKS",
    "stack_state",
    "unstack_state",
    "widen_inputs",
]

_PADS = {"reflection": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}


def _per_level(value, n: int, name: str) -> list:
    """Broadcast a scalar to ``n`` levels, or check a per-level sequence has length ``n``."""
    if isinstance(value, (str, int, float)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} must have one entry per level ({n}), got {len(value)}")
    return value


def _act(name: str) -> nn.Module:
    # in place: saves a copy per layer; backward uses the output, valid for slope > 0
    if name == "LeakyReLU":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "ReLU":
        return nn.ReLU(inplace=True)
    if name == "ELU":
        return nn.ELU()
    raise ValueError(f"unknown activation {name!r}; use 'LeakyReLU', 'ReLU' or 'ELU'")


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: str = "reflection", bias: bool = True,
          downsample: str = "stride", groups: int = 1) -> nn.Sequential:
    """A 'same' convolution with explicit padding; stride 2 via strided conv or pooling.

    With ``groups > 1`` it is ``groups`` independent convolutions side by side (channels are
    multiplied by ``groups``): the building block of batched independent networks.
    """
    layers: list[nn.Module] = []
    conv_stride = stride
    if stride != 1 and downsample in ("avg", "max"):
        conv_stride = 1
    p = (k - 1) // 2
    if pad not in _PADS:
        raise ValueError(f"unknown padding {pad!r}; use one of {sorted(_PADS)}")
    if p > 0:  # zeros: the convolution's own padding, no padded copy (Identity keeps the state-dict keys)
        layers.append(nn.Identity() if pad == "zero" else _PADS[pad](p))
    layers.append(nn.Conv2d(cin * groups, cout * groups, k, conv_stride, padding=p if pad == "zero" else 0, bias=bias,
                            groups=groups))
    if stride != 1 and downsample == "avg":
        layers.append(nn.AvgPool2d(stride, stride))
    elif stride != 1 and downsample == "max":
        layers.append(nn.MaxPool2d(stride, stride))
    elif stride != 1 and downsample != "stride":
        raise ValueError(f"unknown downsampling {downsample!r}; use 'stride', 'avg' or 'max'")
    return nn.Sequential(*layers)


def _cbr(cin, cout, k, stride=1, pad="reflection", act="LeakyReLU", downsample="stride", bias=True, groups=1):
    return nn.Sequential(_conv(cin, cout, k, stride, pad, bias, downsample, groups), nn.BatchNorm2d(cout * groups),
                         _act(act))


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient dense in the output's memory format.

    The gradient reaching an upsampling from the concatenation after it is a channel slice of a
    larger gradient; with channels-last tensors that slice is strided, and the CPU kernels of
    ``upsample_*_backward`` run several times slower on it (3.7 vs 0.7 ms at 32x128x128, measured).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last if ctx.channels_last else torch.contiguous_format)


class _Upsample2x(nn.Upsample):
    """``nn.Upsample`` by 2 with a dense gradient (see :class:`_DenseGrad`)."""

    def forward(self, x):
        return _DenseGrad.apply(super().forward(x))


def _upsample(mode: str) -> nn.Module:
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(f"unknown upsampling {mode!r}; use 'bilinear', 'nearest' or 'bicubic'")
    if mode == "nearest":
        return _Upsample2x(scale_factor=2, mode="nearest")
    return _Upsample2x(scale_factor=2, mode=mode, align_corners=False)


def _center_crop_cat(a: torch.Tensor, b: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Concatenate along channels, centre-cropping the larger map as the reference code does.

    With ``groups > 1`` the channels of each group are concatenated within the group.
    """
    h = min(a.shape[-2], b.shape[-2])
    w = min(a.shape[-1], b.shape[-1])

    def crop(t):
        dh = (t.shape[-2] - h) // 2
        dw = (t.shape[-1] - w) // 2
        return t[..., dh:dh + h, dw:dw + w]

    if groups == 1:
        return torch.cat([crop(a), crop(b)], dim=1)
    n = a.shape[0]
    a, b = crop(a), crop(b)
    out = torch.cat([a.reshape(n, groups, -1, h, w), b.reshape(n, groups, -1, h, w)], dim=2)
    return out.reshape(n, -1, h, w)


class DIPNet(nn.Module):
    """Base class: a generator with its input requirements.

    Attributes
    ----------
    in_channels, out_channels : int
        Channels of the code ``z`` and of the produced image.
    size_multiple : int
        Image height and width must be multiples of this (the fit loop pads and crops).
    min_cells : int
        Height and width must be at least ``min_cells * size_multiple``, so the deepest maps are
        larger than their reflection padding.
    input_downscale : int
        The code has spatial size ``(H // input_downscale, W // input_downscale)``.
    name : str
        The builder's name.
    """

    in_channels: int
    out_channels: int
    size_multiple: int = 1
    min_cells: int = 1
    input_downscale: int = 1
    name: str = "net"

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the code for an (already padded) output of ``height x width``."""
        return height // self.input_downscale, width // self.input_downscale

    def extra_repr(self) -> str:
        return f"params={count_parameters(self):,}"


class _SkipLevel(nn.Module):
    def __init__(self, cin, down, up_from_deeper, skip_ch, up, kd, ku, ks, pad, act, upsample,
                 downsample, need1x1_up, bias, deeper: nn.Module | None, groups: int = 1, concat_norm: bool = True):
        super().__init__()
        g = groups
        self.groups = g
        self.skip = _cbr(cin, skip_ch, ks, 1, pad, act, bias=bias, groups=g) if skip_ch > 0 else None
        self.down = nn.Sequential(_cbr(cin, down, kd, 2, pad, act, downsample, bias, g),
                                  _cbr(down, down, kd, 1, pad, act, bias=bias, groups=g))
        self.deeper = deeper
        self.up = _upsample(upsample)
        k = up_from_deeper if deeper is not None else down
        self.bn = nn.BatchNorm2d((skip_ch + k) * g) if concat_norm else nn.Identity()
        post = [_cbr(skip_ch + k, up, ku, 1, pad, act, bias=bias, groups=g)]
        if need1x1_up:
            post.append(_cbr(up, up, 1, 1, pad, act, bias=bias, groups=g))
        self.post = nn.Sequential(*post)

    def forward(self, x):
        d = self.down(x)
        if self.deeper is not None:
            d = self.deeper(d)
        d = self.up(d)
        y = _center_crop_cat(self.skip(x), d, self.groups) if self.skip is not None else d
        return self.post(self.bn(y))


class SkipNet(DIPNet):
    """The paper's encoder-decoder ("hourglass") with skip connections.

    ``groups=B`` builds B independent copies side by side (grouped convolutions, per-copy
    BatchNorm statistics): input ``(1, B * in_channels, h, w)``, output ``(1, B * out_channels,
    H, W)``. :func:`stack_state` loads B single-network states into it.
    """

    name = "skip"

    def __init__(self, in_channels=32, out_channels=3, channels_down=(128,) * 5, channels_up=(128,) * 5,
                 channels_skip=(4,) * 5, kernel_down=3, kernel_up=3, kernel_skip=1, upsample="bilinear",
                 downsample="stride", pad="reflection", act="LeakyReLU", need1x1_up=True, bias=True,
                 sigmoid=True, groups=1, concat_norm=True):
        super().__init__()
        n = len(channels_down)
        self.groups = int(groups)
        if n < 1:
            raise ValueError("skip net needs at least one level")
        up_ch = _per_level(channels_up, n, "channels_up")
        skip_ch = _per_level(channels_skip, n, "channels_skip")
        kd = _per_level(kernel_down, n, "kernel_down")
        ku = _per_level(kernel_up, n, "kernel_up")
        ups = _per_level(upsample, n, "upsample")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size_multiple = 2 ** n
        self.min_cells = max(2, max(kd + ku) // 2 + 1)
        cins = [in_channels] + list(channels_down[:-1])
        deeper = None
        for i in reversed(range(n)):
            deeper = _SkipLevel(cins[i], channels_down[i], up_ch[i + 1] if i + 1 < n else None, skip_ch[i],
                                up_ch[i], kd[i], ku[i], kernel_skip, pad, act, ups[i], downsample,
                                need1x1_up, bias, deeper, self.groups, bool(concat_norm))
        self.body = deeper
        self.head = _conv(up_ch[0], out_channels, 1, 1, pad, bias, groups=self.groups)
        self.sigmoid = sigmoid

    def forward(self, z):
        x = self.head(self.body(z))
        return torch.sigmoid(x) if self.sigmoid else x


class UNet(DIPNet):
    """A UNet: two convs per level, pooling down, upsample + conv up, full-width skips."""

    name = "unet"

    def __init__(self, in_channels=32, out_channels=3, channels=(16, 32, 64, 128, 256), upsample="bilinear",
                 downsample="max", pad="reflection", act="LeakyReLU", sigmoid=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        n = len(channels)
        self.size_multiple = 2 ** (n - 1)
        self.min_cells = 2
        self.inc = nn.Sequential(_cbr(in_channels, channels[0], 3, pad=pad, act=act),
                                 _cbr(channels[0], channels[0], 3, pad=pad, act=act))
        pool = nn.MaxPool2d(2) if downsample == "max" else nn.AvgPool2d(2)
        self.downs = nn.ModuleList(
            nn.Sequential(pool, _cbr(channels[i], channels[i + 1], 3, pad=pad, act=act),
                          _cbr(channels[i + 1], channels[i + 1], 3, pad=pad, act=act))
            for i in range(n - 1))
        self.ups = nn.ModuleList(
            nn.Sequential(_upsample(upsample), _cbr(channels[i + 1], channels[i], 3, pad=pad, act=act))
            for i in reversed(range(n - 1)))
        self.merges = nn.ModuleList(
            nn.Sequential(_cbr(2 * channels[i], channels[i], 3, pad=pad, act=act),
                          _cbr(channels[i], channels[i], 3, pad=pad, act=act))
            for i in reversed(range(n - 1)))
        self.head = nn.Conv2d(channels[0], out_channels, 1)
        self.sigmoid = sigmoid

    def forward(self, z):
        feats = [self.inc(z)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        x = feats.pop()
        for up, merge in zip(self.ups, self.merges):
            x = merge(_center_crop_cat(feats.pop(), up(x)))
        x = self.head(x)
        return torch.sigmoid(x) if self.sigmoid else x


class _ResBlock(nn.Module):
    def __init__(self, ch, pad, act):
        super().__init__()
        self.body = nn.Sequential(_cbr(ch, ch, 3, pad=pad, act=act), _conv(ch, ch, 3, pad=pad),
                                  nn.BatchNorm2d(ch))

    def forward(self, x):
        return x + self.body(x)


class ResNet(DIPNet):
    """A full-resolution residual network (no downsampling)."""

    name = "resnet"

    def __init__(self, in_channels=32, out_channels=3, channels=64, blocks=8, pad="reflection",
                 act="LeakyReLU", sigmoid=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.body = nn.Sequential(
            _conv(in_channels, channels, 3, pad=pad), _act(act),
            *[_ResBlock(channels, pad, act) for _ in range(blocks)],
            _conv(channels, channels, 3, pad=pad), nn.BatchNorm2d(channels),
            _conv(channels, out_channels, 3, pad=pad))
        self.sigmoid = sigmoid

    def forward(self, z):
        x = self.body(z)
        return torch.sigmoid(x) if self.sigmoid else x


class Decoder(DIPNet):
    """Deep-Decoder-style net: 1x1 convs and bilinear upsampling from a low-resolution code."""

    name = "decoder"

    def __init__(self, in_channels=64, out_channels=3, channels=64, levels=5, upsample="bilinear",
                 sigmoid=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size_multiple = 2 ** levels
        self.input_downscale = 2 ** levels
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(levels):
            layers += [nn.Conv2d(cin, channels, 1, bias=False), _upsample(upsample), nn.ReLU(),
                       nn.BatchNorm2d(channels)]
            cin = channels
        layers += [nn.Conv2d(cin, channels, 1, bias=False), nn.ReLU(), nn.BatchNorm2d(channels),
                   nn.Conv2d(channels, out_channels, 1, bias=False)]
        self.body = nn.Sequential(*layers)
        self.sigmoid = sigmoid

    def forward(self, z):
        x = self.body(z)
        return torch.sigmoid(x) if self.sigmoid else x


def skip(in_channels: int = 32, out_channels: int = 3, **kwargs) -> SkipNet:
    """Build the paper's skip hourglass (defaults: 5 levels, 128/128/4 channels, ~2.2M params)."""
    return SkipNet(in_channels, out_channels, **kwargs)


def unet(in_channels: int = 32, out_channels: int = 3, **kwargs) -> UNet:
    """Build a UNet (defaults: 5 levels, 16..256 channels)."""
    return UNet(in_channels, out_channels, **kwargs)


def resnet(in_channels: int = 32, out_channels: int = 3, **kwargs) -> ResNet:
    """Build a full-resolution ResNet (defaults: 8 residual blocks of 64 channels)."""
    return ResNet(in_channels, out_channels, **kwargs)


def decoder(in_channels: int = 64, out_channels: int = 3, **kwargs) -> Decoder:
    """Build a decoder-only net (defaults: 5 upsampling levels of 64 channels)."""
    return Decoder(in_channels, out_channels, **kwargs)


NETWORKS = {"skip": skip, "unet": unet, "resnet": resnet, "decoder": decoder}


def build_network(name: str, in_channels: int, out_channels: int, **kwargs) -> DIPNet:
    """Build a network by builder name (one of :data:`NETWORKS`)."""
    try:
        builder = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}") from None
    return builder(in_channels, out_channels, **kwargs)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def describe(nets: Sequence[str] = tuple(NETWORKS)) -> str:
    """One line per builder with its default parameter count (for ``--help`` and docs)."""
    return "\n".join(f"{n}: {count_parameters(NETWORKS[n]()):,} parameters" for n in nets)


def stack_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """State of a ``groups=len(states)`` network from the states of single networks."""
    out = {}
    for key, first in states[0].items():
        if first.ndim == 0:  # BatchNorm's num_batches_tracked
            out[key] = first.clone()
        else:
            out[key] = torch.cat([s[key] for s in states], dim=0)
    return out


def unstack_state(state: dict[str, torch.Tensor], groups: int) -> list[dict[str, torch.Tensor]]:
    """The single-network states inside a ``groups``-network state (inverse of :func:`stack_state`)."""
    return [{k: (v.clone() if v.ndim == 0 else v.chunk(groups, dim=0)[g].clone()) for k, v in state.items()}
            for g in range(groups)]


def widen_inputs(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` for ``net`` when ``net`` takes more input channels than the network ``state`` came from.

    Every weight that reads the input (its second axis is shorter than ``net``'s) gets zero weights for
    the extra channels, so the widened network computes exactly what the original one did until a fit
    teaches it to use them (e.g. weights pre-trained on single planes, fitted with a stack's
    neighbouring planes as extra inputs). Other entries are returned as they are; weights that
    already fit ``net`` are left alone.
    """
    wanted = net.state_dict()
    out = dict(state)
    for key, value in state.items():
        target = wanted.get(key)
        if (target is None or value.ndim < 2 or target.ndim != value.ndim or target.shape == value.shape
                or target.shape[0] != value.shape[0] or target.shape[2:] != value.shape[2:]
                or target.shape[1] < value.shape[1]):
            continue
        extra = value.new_zeros((value.shape[0], target.shape[1] - value.shape[1], *value.shape[2:]))
        out[key] = torch.cat([value, extra], dim=1)
    return out
