"""Reading and writing images for the command line: TIFF (tifffile) and PNG/JPEG (imageio)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["read_image", "write_image", "ImageReadError", "TIFF_SUFFIXES"]

TIFF_SUFFIXES = (".tif", ".tiff")
_OTHER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class ImageReadError(ValueError):
    """A file is missing, unreadable or not an image."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF (all pages, as one array) or PNG/JPEG/BMP file into a native-endian array.

    Raises
    ------
    ImageReadError
        If the file is missing, is a folder, or cannot be decoded as an image.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, not an image file")
    suffix = p.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            arr = tifffile.imread(p)
        else:
            import imageio.v3 as iio

            arr = iio.imread(p)
    except Exception as err:  # decoders raise many different types
        # keep one line: imageio's messages go on to list plugins to install, which misleads here
        first = (str(err).strip().splitlines() or [""])[0]
        raise ImageReadError(f"{p}: cannot read as an image: the file is damaged or not a "
                             f"{'TIFF' if suffix in TIFF_SUFFIXES else 'PNG, JPEG or BMP'} image "
                             f"({type(err).__name__}: {first})") from err
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind not in "biuf" or arr.ndim < 2:
        raise ImageReadError(f"{p}: not an image (dtype {arr.dtype}, shape {arr.shape})")
    return arr


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``image``: TIFF keeps float32 values; PNG/JPEG get a uint8 or uint16 copy.

    Float data written to PNG is clipped to the dtype's range after rounding; use TIFF to keep the
    exact float result.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        tifffile.imwrite(p, np.ascontiguousarray(image))
        return
    if suffix not in _OTHER_SUFFIXES:
        raise ValueError(f"{p}: unsupported output format {suffix!r}; use .tif, .tiff, .png or .jpg")
    import imageio.v3 as iio

    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        hi = 65535 if (suffix == ".png" and np.nanmax(arr) > 255) else 255
        arr = np.clip(np.round(np.nan_to_num(arr)), 0, hi).astype(np.uint16 if hi > 255 else np.uint8)
    iio.imwrite(p, arr)
