"""Forward operators ``A`` of the DIP objective ``min_θ ‖w ⊙ (A f_θ(z) − y)‖²``.

Each operator is a small ``nn.Module`` acting on ``(N, C, H, W)`` tensors. Linear operators also
provide :meth:`LinearOperator.adjoint`. ``loss_weight`` says which measured values count in the loss
(1 = known, 0 = unknown): the inpainting mask lives there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearOperator", "Identity", "Mask", "Downsampler", "resampling_kernel", "bicubic_upsample"]


class LinearOperator(nn.Module):
    """A linear forward operator. Subclasses implement ``forward`` and ``input_shape``."""

    #: weight of each measured value in the loss; ``None`` means all ones
    loss_weight: torch.Tensor | None = None

    def input_shape(self, output_shape: torch.Size) -> tuple[int, ...]:
        """Shape of ``x`` for a measurement ``y`` of ``output_shape``."""
        return tuple(output_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``, computed exactly as the vector-Jacobian product of the linear ``forward``."""
        x = torch.zeros(self.input_shape(y.shape), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.forward(x), x, grad_outputs=y)
        return grad


class Identity(LinearOperator):
    """Denoising: the measurement is the image itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


class Mask(LinearOperator):
    """Inpainting: ``A x = m ⊙ x`` with ``m`` = 1 on known pixels, 0 on pixels to fill in.

    Parameters
    ----------
    known : tensor
        ``(N or 1, 1 or C, H, W)`` with 1 where the pixel is known. Broadcast over channels.
    """

    def __init__(self, known: torch.Tensor):
        super().__init__()
        if known.ndim != 4:
            raise ValueError(f"mask must be (N, C, H, W), got shape {tuple(known.shape)}")
        self.register_buffer("known", known.float())

    @property
    def loss_weight(self) -> torch.Tensor:  # type: ignore[override]
        return self.known

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.known

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.known


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1,
                    np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0))


def resampling_kernel(factor: int, kind: str = "lanczos2") -> np.ndarray:
    """1D antialiasing kernel for downsampling by ``factor`` (phase 1/2, width ``4 * factor``).

    The 2D kernel is the outer product of this one with itself; it equals the reference code's
    ``get_kernel(factor, 'lanczos', phase=0.5, kernel_width=4 * factor + 1, support=2)``.

    Parameters
    ----------
    factor : int
        Integer downsampling factor ≥ 2.
    kind : {'lanczos2', 'bicubic'}
        Lanczos with support 2, or Keys' cubic (a = -0.5) stretched by ``factor`` (MATLAB-style).
    """
    if not isinstance(factor, (int, np.integer)) or factor < 2:
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
    width = 4 * factor
    centre = (width + 2) / 2.0
    d = (np.arange(1, width + 1) + 0.5 - centre) / factor
    if kind == "lanczos2":
        support = 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            k = support * np.sin(np.pi * d) * np.sin(np.pi * d / support) / (np.pi**2 * d**2)
        k = np.where(d == 0, 1.0, k)
    elif kind == "bicubic":
        k = _cubic(d)
    else:
        raise ValueError(f"unknown kernel {kind!r}; use 'lanczos2' or 'bicubic'")
    return (k / k.sum()).astype(np.float64)


class Downsampler(LinearOperator):
    """Super-resolution: antialiasing filter then decimation by ``factor`` (replicate padding).

    Maps ``(N, C, factor*H, factor*W)`` to ``(N, C, H, W)``, as the reference code's
    ``Downsampler(..., preserve_size=True)``, implemented as two separable 1D passes.
    """

    def __init__(self, factor: int, kernel: str = "lanczos2"):
        super().__init__()
        k = resampling_kernel(factor, kernel)
        self.factor = int(factor)
        self.kernel_name = kernel
        self.pad = (len(k) - self.factor) // 2
        self.register_buffer("k1d", torch.tensor(k, dtype=torch.float32))

    def input_shape(self, output_shape):
        n, c, h, w = output_shape
        return (n, c, h * self.factor, w * self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not a multiple of the factor {self.factor}")
        k = self.k1d.to(x.dtype)
        x = F.pad(x, (self.pad,) * 4, mode="replicate")
        x = x.reshape(n * c, 1, x.shape[-2], x.shape[-1])
        x = F.conv2d(x, k.view(1, 1, 1, -1), stride=(1, self.factor))
        x = F.conv2d(x, k.view(1, 1, -1, 1), stride=(self.factor, 1))
        return x.reshape(n, c, h // self.factor, w // self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, kernel={self.kernel_name!r}"


def bicubic_upsample(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic interpolation by ``factor``, clamped to the input's range (the SR baseline)."""
    up = F.interpolate(y, scale_factor=factor, mode="bicubic", align_corners=False)
    return up.clamp(float(y.min()), float(y.max()))
