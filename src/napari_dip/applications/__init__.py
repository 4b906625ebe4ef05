"""The paper's other applications, built on the core engine (torch and numpy only).

- :func:`restore_blind`: JPEG artefacts / unknown degradations (denoising formulation).
- :func:`enhance`: detail enhancement ``x0 + α (x0 − x_c)`` with a coarse DIP fit ``x_c``.
- :func:`flash_no_flash`: the flash image as the network input, the no-flash image as target.
- :func:`pre_image` and :func:`activation_maximisation`: natural pre-images of a trained
  network's features, with the TV-norm baseline (``method='tv'``).
- :func:`architecture_study`: depth and skip connections compared on large-hole inpainting.
"""

from .architecture import ARCHITECTURES, architecture_study, format_table, make_case
from .blind import JPEG_SETTINGS, blockiness, restore_blind
from .enhance import Enhancement, enhance, laplacian_energy
from .flash import FLASH_SETTINGS, flash_no_flash
from .preimage import (
    ACTMAX_SETTINGS,
    PREIMAGE_SETTINGS,
    FeatureExtractor,
    PreImageResult,
    activation_maximisation,
    load_model,
    pre_image,
    tv_norm,
)

__all__ = [
    "ACTMAX_SETTINGS", "ARCHITECTURES", "FLASH_SETTINGS", "JPEG_SETTINGS", "PREIMAGE_SETTINGS", "Enhancement",
    "FeatureExtractor", "PreImageResult", "activation_maximisation", "architecture_study", "blockiness",
    "enhance", "flash_no_flash", "format_table", "laplacian_energy", "load_model", "make_case", "pre_image",
    "restore_blind", "tv_norm",
]
