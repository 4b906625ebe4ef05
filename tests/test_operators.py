"""Forward operators: shapes, linearity, adjoints, gradients."""

import numpy as np
import pytest
import torch

from napari_dip.core.operators import Downsampler, Identity, Mask, bicubic_upsample, resampling_kernel


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("kind", ["lanczos2", "bicubic"])
def test_kernel_normalised_symmetric(factor, kind):
    k = resampling_kernel(factor, kind)
    assert k.shape == (4 * factor,)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1])


def test_lanczos_kernel_matches_reference_formula():
    # the reference code's 2D kernel (phase 0.5, support 2) is the outer product of ours
    factor, width = 4, 17
    center = (width + 1) / 2.0
    ref = np.zeros((width - 1, width - 1))
    for i in range(1, width):
        for j in range(1, width):
            di, dj = abs(i + 0.5 - center) / factor, abs(j + 0.5 - center) / factor
            val = 1.0
            for d in (di, dj):
                if d != 0:
                    val *= 2 * np.sin(np.pi * d) * np.sin(np.pi * d / 2) / (np.pi**2 * d * d)
            ref[i - 1, j - 1] = val
    ref /= ref.sum()
    k = resampling_kernel(factor)
    np.testing.assert_allclose(np.outer(k, k), ref, atol=1e-12)


@pytest.mark.parametrize("bad", [1, 0, -2, 2.5, "4"])
def test_kernel_rejects_bad_factor(bad):
    with pytest.raises(ValueError, match="factor"):
        resampling_kernel(bad)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_downsampler_shape_and_constant(factor):
    op = Downsampler(factor)
    x = torch.full((2, 3, 8 * factor, 5 * factor), 0.7)
    y = op(x)
    assert y.shape == (2, 3, 8, 5)
    torch.testing.assert_close(y, torch.full_like(y, 0.7))


def test_downsampler_rejects_non_multiple():
    with pytest.raises(ValueError, match="multiple"):
        Downsampler(4)(torch.rand(1, 1, 30, 32))


@pytest.mark.parametrize("op", [Identity(), Mask((torch.rand(1, 1, 12, 20) > 0.5).float()), Downsampler(4),
                                Downsampler(2, "bicubic")])
def test_adjoint_dot_product(op):
    op = op.double()
    y_shape = (2, 3, 12, 20) if not isinstance(op, Downsampler) else (2, 3, 3, 5)
    y = torch.rand(y_shape, dtype=torch.float64)
    x = torch.rand(op.input_shape(y.shape), dtype=torch.float64)
    lhs = (op(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize("op", [Identity(), Mask((torch.rand(1, 1, 8, 8) > 0.3).float()), Downsampler(2)])
def test_linearity(op):
    a, b = torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8)
    torch.testing.assert_close(op(2 * a - 3 * b), 2 * op(a) - 3 * op(b), atol=1e-5, rtol=1e-5)


def test_downsampler_gradcheck():
    op = Downsampler(2).double()
    x = torch.rand(1, 1, 8, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))


def test_mask_requires_4d():
    with pytest.raises(ValueError, match="N, C, H, W"):
        Mask(torch.ones(8, 8))


def test_bicubic_upsample_shape():
    y = torch.rand(1, 3, 7, 9)
    assert bicubic_upsample(y, 4).shape == (1, 3, 28, 36)
