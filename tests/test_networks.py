"""Network builders: parameter counts, shapes at odd sizes, fitting through padding."""

import numpy as np
import pytest
import torch

from napari_dip.core.fit import Fitter
from napari_dip.core.networks import NETWORKS, build_network, count_parameters, skip
from napari_dip.core.settings import get_settings


def test_paper_skip_parameter_counts_match_reference():
    # counts of the reference implementation (deep-image-prior models/skip.py)
    assert count_parameters(skip(32, 3)) == 2_217_831
    assert count_parameters(skip(32, 3, channels_skip=(128,) * 5, upsample="nearest")) == 3_002_627
    lib = skip(1, 3, channels_down=[16, 32, 64, 128, 128, 128], channels_up=[16, 32, 64, 128, 128, 128],
               channels_skip=0, kernel_down=5, kernel_up=3, need1x1_up=False, upsample="nearest")
    assert count_parameters(lib) == 2_996_467


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_builders_output_shape_and_range(name):
    net = build_network(name, 8, 2)
    m = net.size_multiple
    h, w = 2 * m, 3 * m
    out = net(torch.rand(1, 8, *net.input_size(h, w))).detach()
    assert out.shape == (1, 2, h, w)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("size", [(7, 5), (33, 47)])
def test_every_network_fits_odd_sizes(name, size):
    kwargs = {"skip": dict(channels_down=(8,) * 3, channels_up=(8,) * 3, channels_skip=(2,) * 3),
              "unet": dict(channels=(8, 8, 16)), "resnet": dict(channels=8, blocks=2),
              "decoder": dict(channels=8, levels=3)}[name]
    settings = get_settings("fast", "denoise", network=name, network_kwargs=kwargs,
                            input_channels=8 if name != "decoder" else 16)
    target = torch.rand(1, 3, *size)
    fitter = Fitter(target, settings=settings, iterations=3, device="cpu")
    res = fitter.steps()
    snaps = list(iter(lambda: next(res, None), None))
    assert len(snaps) == 3
    assert fitter.result().image.shape == (*size, 3)


def test_unknown_network_and_bad_levels():
    with pytest.raises(ValueError, match="unknown network"):
        build_network("vgg", 3, 3)
    with pytest.raises(ValueError, match="one entry per level"):
        skip(3, 3, channels_down=(8, 8), channels_up=(8, 8, 8))


def test_skip_builder_options():
    net = skip(4, 1, channels_down=(8, 8), channels_up=(8, 8), channels_skip=(0, 2), downsample="avg",
               upsample="nearest", pad="zero", act="ReLU")
    assert net(torch.rand(1, 4, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="padding"):
        skip(4, 1, channels_down=(8,), channels_up=(8,), channels_skip=(2,), pad="circular")(torch.rand(1, 4, 8, 8))
    assert np.isfinite(count_parameters(net))


def test_zero_padding_is_the_convolutions_own_and_keeps_the_state_dict_layout():
    kwargs = dict(channels_down=(8, 8), channels_up=(8, 8), channels_skip=(2, 2))
    torch.manual_seed(0)
    zero = skip(4, 1, pad="zero", **kwargs)
    reflect = skip(4, 1, pad="reflection", **kwargs)
    assert list(zero.state_dict()) == list(reflect.state_dict())  # weights files load across paddings
    assert not any(isinstance(m, torch.nn.ZeroPad2d) for m in zero.modules())  # no padded copy of the maps
    # same function as an explicit zero pad before an unpadded convolution
    conv = next(m for m in zero.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    x = torch.rand(1, conv.in_channels, 9, 9)
    explicit = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), conv.weight, conv.bias,
                                          stride=conv.stride)
    torch.testing.assert_close(conv(x), explicit)


def test_skip_net_without_the_concatenation_norm():
    kwargs = dict(channels_down=(8, 8), channels_up=(8, 8), channels_skip=(2, 2))
    with_norm, without = skip(4, 1, **kwargs), skip(4, 1, concat_norm=False, **kwargs)
    levels = [with_norm.body, with_norm.body.deeper]
    assert all(isinstance(level.bn, torch.nn.BatchNorm2d) for level in levels)
    assert not isinstance(without.body.bn, torch.nn.BatchNorm2d)
    assert not isinstance(without.body.deeper.bn, torch.nn.BatchNorm2d)
    # each level drops one BatchNorm over skip + deeper channels (weight and bias)
    assert count_parameters(with_norm) - count_parameters(without) == 2 * (2 + 8) * 2
    assert without(torch.rand(1, 4, 16, 16)).shape == (1, 1, 16, 16)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_upsampling_gradient_is_dense_and_exact(mode, channels_last):
    # the skip net's upsampling hands its backward a dense copy of the strided channel slice that
    # the concatenation passes back (a speed fix); values and gradients must equal interpolation's
    from napari_dip.core.networks import _upsample

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(1, 6, 5, 7, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    up = _upsample(mode)
    kw = {} if mode == "nearest" else {"align_corners": False}
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode=mode, **kw)
    out = up(x)
    torch.testing.assert_close(out, ref)
    other = torch.randn(1, 3, 10, 14, dtype=torch.float64).contiguous(memory_format=fmt)
    cat = torch.cat([other, out], 1)
    weight = torch.randn_like(cat)
    (cat * weight).sum().backward()
    torch.testing.assert_close(x.grad, torch.autograd.grad((ref * weight[:, 3:]).sum(), x)[0])
    assert torch.autograd.gradcheck(up, (x.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("channels_last", [True, False])
def test_dense_grad_hands_back_a_dense_copy_of_a_strided_gradient(channels_last):
    from napari_dip.core.networks import _DenseGrad

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(1, 6, 5, 7).contiguous(memory_format=fmt).requires_grad_()
    seen = []
    x.register_hook(seen.append)
    strided = torch.randn(1, 9, 5, 7).contiguous(memory_format=torch.channels_last)[:, 3:]  # a channel slice
    assert not strided.is_contiguous(memory_format=fmt)
    _DenseGrad.apply(x).backward(strided)
    assert seen[0].is_contiguous(memory_format=fmt) and torch.equal(seen[0], strided)


def test_skip_net_gradients_equal_with_and_without_channels_last():
    torch.manual_seed(0)
    net = skip(8, 2, channels_down=(8, 8), channels_up=(8, 8), channels_skip=(2, 2)).double()
    z = torch.rand(1, 8, 16, 16, dtype=torch.float64)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        net.zero_grad()
        net.to(memory_format=fmt)
        net(z.contiguous(memory_format=fmt)).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
