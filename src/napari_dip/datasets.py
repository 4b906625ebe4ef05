"""The images the shipped weights are pre-trained on: redistributable, made or bundled locally.

- scikit-image's bundled sample images whose documentation releases them into the public domain
  or under CC0 (:data:`CC0_IMAGES`; scikit-image is needed: ``pip install scikit-image``);
- the package's own synthetic fluorescence cells (:func:`napari_dip.samples.cells`), at several
  sizes and densities.

Nothing is downloaded: the scikit-image images ship inside its wheel. The DIP paper's images, FMD
and the 3D stacks used by the benchmarks are never trained on.
"""

from __future__ import annotations

import numpy as np

from .samples import cells

__all__ = ["CC0_IMAGES", "builtin_training_images"]

#: scikit-image sample images released into the public domain or under CC0 (their docstrings say so)
CC0_IMAGES = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
              "hubble_deep_field", "immunohistochemistry", "microaneurysms", "retina", "rocket", "text")
_RGB = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")


def _half(img: np.ndarray) -> np.ndarray:
    """2x2 block mean (a second scale of every image)."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    x = img[:h, :w].astype(np.float64)
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def builtin_training_images(channels: int = 1, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``(images, names)``: float images in ``[0, 1]``, ``(Y, X)`` for ``channels=1`` or ``(Y, X, 3)``.

    Grayscale: every CC0 image (colour ones as luminance and as each channel) at full and half
    size, and 24 synthetic cell images. RGB: the colour CC0 images at full and half size, and 24
    synthetic cell images coloured with random stains.

    Raises
    ------
    ImportError
        If scikit-image is not installed.
    ValueError
        For a channel count other than 1 or 3.
    """
    try:
        from skimage import data as skdata
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the built-in training images need scikit-image: pip install scikit-image") from err
    if channels not in (1, 3):
        raise ValueError(f"built-in training images exist for 1 or 3 channels, not {channels}")
    images: list[np.ndarray] = []
    names: list[str] = []

    def add(img: np.ndarray, name: str) -> None:
        img = np.asarray(img, np.float64)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
        versions = [("", img)] + ([(" (half size)", _half(img))] if min(img.shape[:2]) >= 256 else [])
        for scale, arr in versions:
            images.append(arr.astype(np.float32))
            names.append(name + scale)

    for name in CC0_IMAGES:
        img = np.asarray(getattr(skdata, name)(), np.float64)
        if img.ndim == 3:
            img = img[..., :3]
        if channels == 1:
            if img.ndim == 3:
                add(img @ np.array([0.2125, 0.7154, 0.0721]), f"{name} (luminance)")
                for c in range(3):
                    add(img[..., c], f"{name} (channel {c})")
            else:
                add(img, name)
        elif name in _RGB:
            add(img, name)
    rng = np.random.default_rng(seed + 1000)
    for k in range(24):
        size = int(rng.choice([128, 192, 256, 384]))
        img = cells(size, n_cells=int(rng.integers(4, 30)), seed=1000 + k)
        if channels == 3:
            stain = rng.dirichlet(np.ones(3)) * rng.uniform(0.6, 1.0)
            img = img[..., None] * stain[None, None, :] / stain.max()
        add(img, f"synthetic cells {k}")
    return images, names
