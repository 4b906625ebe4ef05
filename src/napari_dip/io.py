"""Reading and writing image files: TIFF (tifffile) and PNG/JPEG (imageio), with pixel sizes.

Pixels are read by :func:`read_image`. The physical calibration (pixel size, z step, frame
interval, their units, and the file's axis order) is read separately by :func:`read_calibration`
from ImageJ and OME-TIFF metadata, from the resolution tags of other TIFFs, and from OME-Zarr
(NGFF) stores, and :func:`write_image` writes it back in the format it came from. PNG and JPEG
files carry no physical pixel size (their DPI is a print setting), so none is read or written.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Calibration", "ImageReadError", "TIFF_SUFFIXES", "read_calibration", "read_image", "write_image"]

TIFF_SUFFIXES = (".tif", ".tiff")
_OTHER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class ImageReadError(ValueError):
    """A file is missing, unreadable or not an image."""


# -- units -----------------------------------------------------------------------------------------
# Units are kept as UDUNITS-2 names, as OME-Zarr asks and napari (pint) understands.
_UNIT_ALIASES = {
    "meter": ("m", "meter", "metre", "meters", "metres"),
    "centimeter": ("cm", "centimeter", "centimetre", "centimeters", "centimetres"),
    "millimeter": ("mm", "millimeter", "millimetre", "millimeters", "millimetres"),
    "micrometer": ("um", "\u00b5m", "\u03bcm", "micron", "microns", "micrometer", "micrometre", "micrometers",
                   "micrometres"),
    "nanometer": ("nm", "nanometer", "nanometre", "nanometers", "nanometres"),
    "picometer": ("pm", "picometer", "picometre"),
    "angstrom": ("\u00e5", "\u212b", "a", "angstrom", "angstroms", "\u00e5ngstr\u00f6m"),
    "inch": ("in", "inch", "inches"),
    "second": ("s", "sec", "secs", "second", "seconds"),
    "millisecond": ("ms", "msec", "millisecond", "milliseconds"),
    "microsecond": ("us", "\u00b5s", "\u03bcs", "microsecond", "microseconds"),
    "nanosecond": ("ns", "nanosecond", "nanoseconds"),
    "minute": ("min", "mins", "minute", "minutes"),
    "hour": ("h", "hr", "hrs", "hour", "hours"),
}
_UNITS = {alias: name for name, aliases in _UNIT_ALIASES.items() for alias in aliases}
_UNCALIBRATED = ("", "pixel", "pixels", "px", "none")
_LENGTH_IN_CM = {"meter": 100.0, "centimeter": 1.0, "millimeter": 0.1, "micrometer": 1e-4, "nanometer": 1e-7,
                 "picometer": 1e-10, "angstrom": 1e-8, "inch": 2.54}
_TIME_UNITS = ("second", "millisecond", "microsecond", "nanosecond", "minute", "hour")
# how each format spells a unit
_OME_SYMBOLS = {"meter": "m", "centimeter": "cm", "millimeter": "mm", "micrometer": "\u00b5m", "nanometer": "nm",
                "picometer": "pm", "angstrom": "\u00c5", "inch": "in", "second": "s", "millisecond": "ms",
                "microsecond": "\u00b5s", "nanosecond": "ns", "minute": "min", "hour": "h"}
_IMAGEJ_SYMBOLS = {"micrometer": "micron", "meter": "m", "centimeter": "cm", "millimeter": "mm", "nanometer": "nm",
                   "picometer": "pm", "angstrom": "angstrom", "inch": "inch", "second": "sec", "millisecond": "ms",
                   "microsecond": "us", "nanosecond": "ns", "minute": "min", "hour": "hour"}


def normalise_unit(unit: Any) -> str | None:
    """A unit as its UDUNITS-2 name (``'um'``, ``'µm'``, ``'micron'`` -> ``'micrometer'``).

    Returns None for "no unit" (``''``, ``'pixel'``); unknown spellings are returned unchanged.
    """
    if unit is None:
        return None
    text = str(unit).strip()
    if "\\u" in text:  # ImageJ escapes non-ASCII characters: \u00B5m
        try:
            text = text.encode("ascii", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            pass
    if text.lower() in _UNCALIBRATED:
        return None
    return _UNITS.get(text.lower(), _UNITS.get(text, text))


# -- calibration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """The physical calibration of an image file.

    Attributes
    ----------
    axes : str
        One letter per array axis as tifffile names them (``T`` time, ``Z`` depth, ``C`` channel,
        ``Y``, ``X``, ``S`` colour samples, ``Q``/``I`` other); ``''`` when unknown.
    spacing : dict
        Physical size of one step along ``'X'``, ``'Y'``, ``'Z'`` (pixel size, z step) and ``'T'``
        (frame interval), for the axes where the file gives one. Do not modify.
    units : dict
        The unit of each entry of ``spacing`` (UDUNITS-2 names such as ``'micrometer'`` or
        ``'second'``); missing where the file names none. Do not modify.
    kind : str
        Where it was read: ``'imagej'``, ``'ome'``, ``'tiff'`` (resolution tags) or ``'ngff'``
        (OME-Zarr). :func:`write_image` writes a TIFF in the same flavour.
    """

    axes: str = ""
    spacing: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    kind: str = ""

    def __bool__(self) -> bool:
        return bool(self.spacing) or bool(self.axes)

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        """``(y, x)`` pixel size, or None when the file gives none."""
        if "X" not in self.spacing:
            return None
        return self.spacing.get("Y", self.spacing["X"]), self.spacing["X"]

    def scaled(self, factor: float) -> Calibration:
        """The calibration of the same field of view sampled ``factor`` times more finely in Y and X
        (a super-resolution output): the pixel size divided by ``factor``."""
        spacing = {k: (v / factor if k in "XY" else v) for k, v in self.spacing.items()}
        return replace(self, spacing=spacing)

    def for_shape(self, shape: tuple[int, ...]) -> Calibration:
        """This calibration with ``axes`` dropped when they do not match an array of ``shape``."""
        if self.axes and len(self.axes) != len(shape):
            return replace(self, axes="")
        return self

    def axis_letters(self, ndim: int, rgb: bool = False) -> str:
        """One letter per axis of an ``ndim`` array: :attr:`axes` if it fits, else ``...YX`` (``...YXS``
        when ``rgb``), with ``Q`` for the leading axes."""
        if len(self.axes) == ndim:
            return self.axes
        tail = "YXS" if rgb else "YX"
        return ("Q" * max(ndim - len(tail), 0) + tail)[-ndim:]

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``'0.25 x 0.25 micrometer per pixel, z step 0.5 micrometer'``."""
        parts = []
        if self.pixel_size is not None:
            y, x = self.pixel_size
            parts.append(f"{y:.6g} x {x:.6g} {self.units.get('X', '(no unit)')} per pixel")
        if "Z" in self.spacing:
            parts.append(f"z step {self.spacing['Z']:.6g} {self.units.get('Z', '(no unit)')}")
        if "T" in self.spacing:
            parts.append(f"frame interval {self.spacing['T']:.6g} {self.units.get('T', '(no unit)')}")
        return ", ".join(parts) if parts else "no physical size"


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _rational(tag: Any) -> float | None:
    """A TIFF RATIONAL tag value ``(numerator, denominator)`` (or a number) as a positive float."""
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return _positive(num / den) if den else None
    return _positive(value)


def _resolution_spacing(page: Any) -> tuple[float, float] | None:
    """``(y, x)`` size of a pixel from the resolution tags, in the tags' unit; None if absent."""
    x, y = _rational(page.tags.get("XResolution")), _rational(page.tags.get("YResolution"))
    if x is None:
        return None
    return 1.0 / (y or x), 1.0 / x


def _resolution_unit(page: Any) -> str | None:
    tag = page.tags.get("ResolutionUnit")
    code = int(tag.value) if tag is not None else 2  # the TIFF default is inch
    return {2: "inch", 3: "centimeter", 4: "millimeter", 5: "micrometer"}.get(code)


def _tag_pixel(page: Any) -> tuple[tuple[float, float] | None, str | None]:
    """``((y, x), unit)`` from the resolution tags; metric units are converted to micrometres (the
    microscopist's unit), inches are kept. ``(None, None)`` without an absolute unit."""
    pixel, unit = _resolution_spacing(page), _resolution_unit(page)
    if pixel is None or unit is None:
        return None, None
    if unit != "inch":
        scale = _LENGTH_IN_CM[unit] / _LENGTH_IN_CM["micrometer"]
        pixel, unit = (pixel[0] * scale, pixel[1] * scale), "micrometer"
    return pixel, unit


def _set(spacing: dict[str, float], units: dict[str, str], axis: str, value: Any, unit: str | None) -> None:
    v = _positive(value)
    if v is not None:
        spacing[axis] = v
        if unit:
            units[axis] = unit


def _imagej_calibration(tif: Any, axes: str) -> Calibration:
    ij = tif.imagej_metadata or {}
    page = tif.pages[0]
    spacing: dict[str, float] = {}
    units: dict[str, str] = {}
    unit = normalise_unit(ij.get("unit"))
    pixel = _resolution_spacing(page)
    if unit is None and page.tags.get("ResolutionUnit") is not None:  # no unit in the description: the tags'
        pixel, unit = _tag_pixel(page)
    if pixel is not None and unit is not None:
        _set(spacing, units, "Y", pixel[0], normalise_unit(ij.get("yunit")) or unit)
        _set(spacing, units, "X", pixel[1], unit)
    if "Z" in axes and unit is not None:
        _set(spacing, units, "Z", ij.get("spacing"), normalise_unit(ij.get("zunit")) or unit)
    if "T" in axes:
        _set(spacing, units, "T", ij.get("finterval"), normalise_unit(ij.get("tunit")) or "second")
    return Calibration(axes=axes, spacing=spacing, units=units, kind="imagej")


def _ome_calibration(tif: Any, axes: str) -> Calibration:
    import xml.etree.ElementTree as ET

    spacing: dict[str, float] = {}
    units: dict[str, str] = {}
    try:
        root = ET.fromstring(tif.ome_metadata)
    except (ET.ParseError, TypeError, ValueError):
        return Calibration(axes=axes, kind="ome")
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is not None:
        for axis in "XYZ":
            _set(spacing, units, axis, pixels.get(f"PhysicalSize{axis}"),
                 normalise_unit(pixels.get(f"PhysicalSize{axis}Unit", "\u00b5m")))
        if "T" in axes:
            _set(spacing, units, "T", pixels.get("TimeIncrement"), normalise_unit(pixels.get("TimeIncrementUnit", "s")))
    return Calibration(axes=axes, spacing=spacing, units=units, kind="ome")


def _tiff_calibration(tif: Any, axes: str) -> Calibration:
    spacing: dict[str, float] = {}
    units: dict[str, str] = {}
    pixel, unit = _tag_pixel(tif.pages[0])
    if pixel is not None and unit is not None:
        _set(spacing, units, "Y", pixel[0], unit)
        _set(spacing, units, "X", pixel[1], unit)
    return Calibration(axes=axes, spacing=spacing, units=units, kind="tiff")


_NGFF_LETTERS = {"t": "T", "time": "T", "z": "Z", "c": "C", "channel": "C", "y": "Y", "x": "X"}


def ngff_calibration(attrs: dict[str, Any]) -> Calibration | None:
    """The calibration in OME-Zarr (NGFF 0.4 or 0.5) group attributes: the first multiscale image's
    axes and the scale of its first (full-resolution) dataset; None if there is none."""
    meta = attrs.get("ome", attrs)
    multiscales = meta.get("multiscales") if isinstance(meta, dict) else None
    if not multiscales:
        return None
    ms = multiscales[0]
    axes = ms.get("axes") or []
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes]
    scale: list[float] = []
    datasets = ms.get("datasets") or [{}]
    for transform in list(ms.get("coordinateTransformations") or []) + list(datasets[0].get(
            "coordinateTransformations") or []):
        if transform.get("type") == "scale" and len(transform.get("scale", [])) == len(names):
            factors = [float(v) for v in transform["scale"]]
            scale = [a * b for a, b in zip(scale, factors)] if scale else factors
    letters = "".join(_NGFF_LETTERS.get(n.lower(), "Q") for n in names)
    spacing: dict[str, float] = {}
    units: dict[str, str] = {}
    for i, letter in enumerate(letters):
        if letter in "XYZT" and scale:
            unit = axes[i].get("unit") if isinstance(axes[i], dict) else None
            _set(spacing, units, letter, scale[i], normalise_unit(unit))
    return Calibration(axes=letters, spacing=spacing, units=units, kind="ngff")


def ngff_dataset_path(attrs: dict[str, Any]) -> str | None:
    """The path of the first (full-resolution) dataset of OME-Zarr group attributes, or None."""
    meta = attrs.get("ome", attrs)
    try:
        return str(meta["multiscales"][0]["datasets"][0]["path"])
    except (KeyError, IndexError, TypeError):
        return None


def read_calibration(path: str | os.PathLike) -> Calibration | None:
    """The calibration of an image file, or None when it has none (or is not a TIFF or OME-Zarr).

    Reads only metadata, not pixels. ImageJ TIFFs give the pixel size and its unit (resolution
    tags and the ``unit`` in the description), the z step (``spacing``) and the frame interval
    (``finterval``); OME-TIFFs give ``PhysicalSizeX/Y/Z`` and ``TimeIncrement`` with their units;
    other TIFFs the resolution tags in inches or centimetres (reported in micrometres); ``.zarr``
    stores their OME-Zarr multiscale axes and scale. ``axes`` is the first image series' axis
    order, as :func:`read_image` returns it.

    Raises
    ------
    ImageReadError
        If the file cannot be opened as a TIFF (other problems just give None: a missing pixel
        size never stops a restoration).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".zarr" or (p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zattrs").is_file())):
        return _zarr_calibration(p)
    if suffix not in TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            axes = str(series.axes)
            if len(axes) != len(series.shape):
                axes = ""
            kind = getattr(series, "kind", "")
            if kind == "ome" or (tif.is_ome and kind not in ("imagej",)):
                cal = _ome_calibration(tif, axes)
            elif kind == "imagej" or tif.is_imagej:
                cal = _imagej_calibration(tif, axes)
            else:
                cal = _tiff_calibration(tif, axes)
    except Exception as err:  # tifffile raises many different types
        raise ImageReadError(f"{p}: cannot read the TIFF metadata ({type(err).__name__}: {err})") from err
    if not cal.spacing and cal.kind == "tiff":  # a plain TIFF without a pixel size: nothing to keep
        return None
    return cal if cal else None


def _zarr_calibration(p: Path) -> Calibration | None:
    for name in ("zarr.json", ".zattrs"):
        meta = p / name
        if meta.is_file():
            try:
                doc = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return ngff_calibration(doc.get("attributes", doc) if name == "zarr.json" else doc)
    return None


# -- reading pixels --------------------------------------------------------------------------------
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


# -- writing ---------------------------------------------------------------------------------------
_IMAGEJ_ORDER = "TZCYXS"


def _imagej_axes_ok(axes: str, dtype: np.dtype) -> bool:
    """ImageJ hyperstacks hold axes in the order TZCYXS, each once; colour samples only as uint8 RGB."""
    if not axes or any(a not in _IMAGEJ_ORDER for a in axes) or len(set(axes)) != len(axes):
        return False
    if [_IMAGEJ_ORDER.index(a) for a in axes] != sorted(_IMAGEJ_ORDER.index(a) for a in axes):
        return False
    return "S" not in axes or dtype == np.uint8


def _imagej_options(cal: Calibration, axes: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"axes": axes}
    options: dict[str, Any] = {"imagej": True, "metadata": metadata}
    unit = cal.units.get("X")
    if cal.pixel_size is not None and unit is not None:
        y, x = cal.pixel_size
        options["resolution"] = (1.0 / x, 1.0 / y)
        metadata["unit"] = _IMAGEJ_SYMBOLS.get(unit, unit)
        if cal.units.get("Y", unit) != unit:
            metadata["yunit"] = _IMAGEJ_SYMBOLS.get(cal.units["Y"], cal.units["Y"])
    if "Z" in cal.spacing and "Z" in axes:
        metadata["spacing"] = cal.spacing["Z"]
        zunit = cal.units.get("Z")
        if zunit is not None and zunit != unit:
            metadata["zunit"] = _IMAGEJ_SYMBOLS.get(zunit, zunit)
    if "T" in cal.spacing and "T" in axes:
        metadata["finterval"] = cal.spacing["T"]
        tunit = cal.units.get("T")
        if tunit is not None and tunit != "second":
            metadata["tunit"] = _IMAGEJ_SYMBOLS.get(tunit, tunit)
    return options


def _ome_options(cal: Calibration, axes: str, image: np.ndarray) -> dict[str, Any]:
    metadata: dict[str, Any] = {"axes": axes}
    for axis in "XYZ":
        if axis in cal.spacing and axis in axes:
            metadata[f"PhysicalSize{axis}"] = cal.spacing[axis]
            unit = cal.units.get(axis)
            if unit in _OME_SYMBOLS and unit not in _TIME_UNITS:
                metadata[f"PhysicalSize{axis}Unit"] = _OME_SYMBOLS[unit]
    if "T" in cal.spacing and "T" in axes:
        metadata["TimeIncrement"] = cal.spacing["T"]
        unit = cal.units.get("T")
        if unit in _TIME_UNITS:
            metadata["TimeIncrementUnit"] = _OME_SYMBOLS[unit]
    options: dict[str, Any] = {"ome": True, "metadata": metadata,
                               "photometric": "rgb" if axes.endswith("S") and image.shape[-1] in (3, 4)
                               else "minisblack"}
    options.update(_resolution_options(cal))  # also for readers that ignore OME-XML
    return options


def _resolution_options(cal: Calibration) -> dict[str, Any]:
    """Standard TIFF resolution tags (pixels per inch or per centimetre) for the pixel size."""
    unit = cal.units.get("X")
    if cal.pixel_size is None or unit not in _LENGTH_IN_CM or cal.units.get("Y", unit) != unit:
        return {}
    y, x = cal.pixel_size
    if unit == "inch":
        return {"resolution": (1.0 / x, 1.0 / y), "resolutionunit": "INCH"}
    cm = _LENGTH_IN_CM[unit]
    return {"resolution": (1.0 / (x * cm), 1.0 / (y * cm)), "resolutionunit": "CENTIMETER"}


def tiff_options(image: np.ndarray, calibration: Calibration | None) -> dict[str, Any]:
    """Keyword arguments of ``tifffile.imwrite`` that store ``calibration`` with ``image``.

    The TIFF flavour follows :attr:`Calibration.kind`: ImageJ hyperstack for ImageJ inputs (when
    ImageJ can hold the axes and data type), OME-TIFF for OME-TIFF and OME-Zarr inputs (and for
    ImageJ ones it cannot hold), and plain resolution tags otherwise. Axes that do not match the
    image's dimensions are dropped, keeping the pixel size.
    """
    if not calibration:
        return {}
    cal = calibration.for_shape(image.shape)
    axes = cal.axes
    if cal.kind == "imagej" and _imagej_axes_ok(axes, image.dtype):
        return _imagej_options(cal, axes)
    if cal.kind in ("imagej", "ome", "ngff") and axes and set(axes) <= set("TZCYXS"):
        return _ome_options(cal, axes, image)
    return _resolution_options(cal)


def write_image(path: str | os.PathLike, image: np.ndarray, calibration: Calibration | None = None) -> None:
    """Write ``image``: TIFF keeps float32 values (and ``calibration``); PNG/JPEG get a uint8 or uint16 copy.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff``, ``.png``, ``.jpg``/``.jpeg`` or ``.bmp``.
    image : numpy.ndarray
    calibration : Calibration, optional
        Pixel size, z step, frame interval and axis order to store with a TIFF (see
        :func:`tiff_options`). PNG/JPEG files cannot hold it: it is not written there.

    Notes
    -----
    Float data written to PNG is clipped to the dtype's range after rounding; use TIFF to keep the
    exact float result.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        data = np.ascontiguousarray(image)
        options = tiff_options(data, calibration)
        try:
            tifffile.imwrite(p, data, **options)
        except (ValueError, TypeError, KeyError):
            if not options:
                raise
            # a calibration this tifffile cannot write in that flavour: keep the pixels and the pixel size
            tifffile.imwrite(p, data, **_resolution_options(calibration.for_shape(data.shape)))
        return
    if suffix not in _OTHER_SUFFIXES:
        raise ValueError(f"{p}: unsupported output format {suffix!r}; use .tif, .tiff, .png or .jpg")
    import imageio.v3 as iio

    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        hi = 65535 if (suffix == ".png" and np.nanmax(arr) > 255) else 255
        arr = np.clip(np.round(np.nan_to_num(arr)), 0, hi).astype(np.uint16 if hi > 255 else np.uint8)
    iio.imwrite(p, arr)

