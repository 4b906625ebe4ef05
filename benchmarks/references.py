"""Single-image denoisers a microscopist could pick instead of DIP, for side-by-side benchmarks.

Neither sees the clean image:

``bm3d_blind``
    BM3D (Dabov et al. 2007; the PyPI ``bm3d`` package, a benchmark-only dependency) with the
    noise level estimated from the image itself (scikit-image's wavelet ``estimate_sigma``, the
    robust median estimator of Donoho & Johnstone), as a user without a noise model would run it.
``zs_n2n``
    Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023), written here from the paper: the image's
    two diagonal half-resolution images (2x2 filters ``[[.5, 0], [0, .5]]`` and
    ``[[0, .5], [.5, 0]]``, stride 2) train a 2-layer 3x3 network (48 channels, LeakyReLU 0.2, a
    1x1 output layer) that predicts the noise, with the residual loss between the two halves plus
    the consistency loss between "denoise then downsample" and "downsample then denoise"; Adam at
    1e-3 for 2000 iterations, halved at 1000 (our choice, in the range the paper uses); the result
    is ``y - f(y)``.

Both take and return float images in ``[0, 1]`` of shape ``(H, W)`` or ``(H, W, C)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bm3d_blind", "estimate_sigma", "zs_n2n"]


def estimate_sigma(image: np.ndarray) -> float:
    """Noise standard deviation of ``image`` (on its own scale), averaged over channels."""
    from skimage.restoration import estimate_sigma as _estimate

    img = np.asarray(image, np.float64)
    return float(_estimate(img, channel_axis=-1 if img.ndim == 3 else None, average_sigmas=True))


def bm3d_blind(image: np.ndarray) -> tuple[np.ndarray, float]:
    """BM3D (CBM3D for RGB) at the noise level estimated from ``image``; returns ``(result, sigma)``."""
    import bm3d

    img = np.asarray(image, np.float64)
    sigma = max(estimate_sigma(img), 1e-4)
    if img.ndim == 3 and img.shape[-1] == 3:
        out = bm3d.bm3d_rgb(img, sigma)
    elif img.ndim == 3:
        out = np.stack([bm3d.bm3d(img[..., c], sigma) for c in range(img.shape[-1])], axis=-1)
    else:
        out = bm3d.bm3d(img, sigma)
    return np.asarray(out, np.float32), sigma


def _pair(x):
    """The two diagonal half-resolution images of a ``(1, C, H, W)`` tensor."""
    import torch.nn.functional as F

    c = x.shape[1]
    k1 = x.new_tensor([[[[0.5, 0.0], [0.0, 0.5]]]]).repeat(c, 1, 1, 1)
    k2 = x.new_tensor([[[[0.0, 0.5], [0.5, 0.0]]]]).repeat(c, 1, 1, 1)
    return F.conv2d(x, k1, stride=2, groups=c), F.conv2d(x, k2, stride=2, groups=c)


def zs_n2n(image: np.ndarray, iterations: int = 2000, lr: float = 1e-3, seed: int = 0,
           callback=None) -> np.ndarray:
    """Zero-Shot Noise2Noise denoising of one image (see the module docstring).

    ``callback(iteration, estimate_fn)``, if given, is called every iteration; ``estimate_fn()``
    returns the current estimate (so a benchmark can draw a curve without paying for it when it
    does not ask).
    """
    import torch
    from torch import nn

    img = np.asarray(image, np.float32)
    arr = img if img.ndim == 3 else img[..., None]
    h, w, c = arr.shape
    y = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    y = y[..., : h - h % 2, : w - w % 2] if (h % 2 or w % 2) else y
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(c, 48, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                            nn.Conv2d(48, 48, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                            nn.Conv2d(48, c, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(iterations // 2, 1), gamma=0.5)
    full = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]

    def denoise(x):
        return x - net(x)

    def estimate() -> np.ndarray:
        with torch.no_grad():
            out = denoise(full).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        return out if img.ndim == 3 else out[..., 0]

    d1, d2 = _pair(y)
    for it in range(1, iterations + 1):
        p1, p2 = denoise(d1), denoise(d2)
        loss_res = 0.5 * (((d1 - p2) ** 2).mean() + ((d2 - p1) ** 2).mean())
        e1, e2 = _pair(denoise(y))
        loss_cons = 0.5 * (((p1 - e1) ** 2).mean() + ((p2 - e2) ** 2).mean())
        opt.zero_grad(set_to_none=True)
        (loss_res + loss_cons).backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(it, estimate)
    return estimate()
