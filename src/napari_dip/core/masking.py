"""Hidden-pixel inputs: the network sees the image with a random share of its pixels hidden.

With ``Settings(input_kind='masked')`` the network's input is not a random code but the
measurement itself, with a fresh random set of pixels hidden every iteration (set to 0, and a
last input channel that is 1 where a pixel is visible). The loss covers only the hidden pixels,
so the network has to predict each pixel from its neighbours and can never learn the identity,
and the averaged output at a pixel is built only from iterations in which that pixel was
hidden. For noise that is independent from pixel to pixel such predictions do not see the
pixel's own noise (a "blind spot"; Noise2Self, Batson & Royer 2019), and starting from weights
pre-trained by the same masked-pixel reconstruction (MPI, Ma et al., NeurIPS 2024) the fit needs
a few hundred iterations instead of thousands (docs/performance.md).

Both the fit loop (:class:`~napari_dip.core.fit.Fitter`) and pre-training
(:mod:`napari_dip.core.pretrain`) build their inputs and losses with these functions.
"""

from __future__ import annotations

import torch

__all__ = ["hide", "masked_input", "check_mask_ratio", "choose_mask_ratio", "WHITE_NOISE_RATIO",
           "CORRELATED_NOISE_RATIO", "CORRELATED_NOISE_AVERAGE", "CORRELATED_NOISE_TOLERANCE"]

#: share of hidden pixels for noise independent from pixel to pixel (MPI's setting for synthetic noise)
WHITE_NOISE_RATIO = 0.3
#: share of hidden pixels for spatially correlated noise: with 90 % hidden, a pixel's neighbours are
#: rarely visible, so the network cannot read a hidden pixel's noise off its correlated neighbours
#: (MPI's setting for real camera noise). FMD wide-field 256 px crop: 32.1 dB at 0.9, below the
#: noisy input's 23.7 after 30 iterations at 0.3 and falling (docs/performance.md)
CORRELATED_NOISE_RATIO = 0.9
#: average weight with that ratio: a pixel is hidden in 9 of 10 iterations, so its average needs a
#: longer memory than the 0.9 of the white-noise setting
CORRELATED_NOISE_AVERAGE = 0.99
#: hold-out tolerance with that ratio: 1, no drop of the hold-out error restarts the patience, so the
#: fit stops ``stop_patience`` iterations after its floor (``min_iterations``). With 90 % hidden the
#: network still learns the correlated noise through its rare visible neighbours, and so does the
#: hold-out error: it keeps falling while the estimate turns to the noise. FMD wide-field 256 px: the
#: lighter masked nets peaked at iteration 125-175 and fell to 24-28 dB by iteration 1000 with no
#: stop from the hold-out (then with a 2 % tolerance); at 256 px the previous net's hold-out stopped every
#: wide-field frame at 125 anyway (docs/performance.md, "A lighter masked network")
CORRELATED_NOISE_TOLERANCE = 1.0


def choose_mask_ratio(correlation: float | None, threshold: float) -> tuple[float, bool]:
    """``(ratio, correlated)`` for ``mask_ratio='auto'`` from the image's measured noise correlation."""
    correlated = correlation is not None and correlation > threshold
    return (CORRELATED_NOISE_RATIO if correlated else WHITE_NOISE_RATIO), correlated


def check_mask_ratio(ratio: float | str) -> float | str:
    """Validate the share of pixels hidden per iteration: a number in (0, 1), or ``'auto'``.

    Raises
    ------
    ValueError
        For anything outside (0, 1).
    """
    if isinstance(ratio, str) and ratio == "auto":
        return ratio
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"mask_ratio must be a number in (0, 1) or 'auto', got {ratio!r}") from None
    if not 0.0 < r < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1) or 'auto', got {ratio!r}")
    return r


def hide(shape: tuple[int, ...], ratio: float, generator: torch.Generator, device: torch.device | str = "cpu",
         always_hidden: torch.Tensor | None = None) -> torch.Tensor:
    """A random visibility map: 1 = visible, 0 = hidden (about ``ratio`` of the pixels).

    Parameters
    ----------
    shape : tuple
        ``(N, 1, H, W)``: one map per image, shared by its channels (noise of camera colour
        channels is often correlated, so a pixel is hidden in all its channels at once).
    ratio : float
        Probability that a pixel is hidden.
    generator : torch.Generator
        Source of randomness (on ``device``), so fits are reproducible.
    always_hidden : tensor, optional
        ``(N or 1, 1, H, W)``; 1 where a pixel must never be shown (held-out validation pixels,
        unknown pixels of an inpainting problem).
    """
    visible = (torch.rand(shape, generator=generator, device=device) >= ratio).float()
    if always_hidden is not None:
        visible = visible * (1.0 - always_hidden)
    return visible


def masked_input(source: torch.Tensor, visible: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """The network input ``cat([source * visible, visible])``: ``(N, C + 1, H, W)``.

    ``context`` (``(N, K, H, W)``, e.g. a stack's neighbouring planes, whose noise is independent of
    ``source``'s) is appended as it is, never hidden: ``(N, C + 1 + K, H, W)``.
    """
    parts = [source * visible, visible.to(source.dtype)]
    if context is not None:
        parts.append(context)
    return torch.cat(parts, dim=1)
