"""Pixel sizes through files: ImageJ, OME-TIFF and plain TIFF calibration in and out, by the CLI."""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile

from napari_dip.cli import main
from napari_dip.io import Calibration, normalise_unit, read_calibration, write_image

QUICK = ["--iterations", "2", "--preset", "fast", "--device", "cpu", "--quiet"]


def run(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in args])
    return rc, err.getvalue()


def stack(shape=(3, 16, 20)) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[-2], 0:shape[-1]]
    base = 1000 + 300 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    return np.stack([base * (1 + 0.1 * k) for k in range(int(np.prod(shape[:-2])))]).reshape(shape).astype(np.uint16)


def ome_pixels(path) -> dict[str, str]:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        root = ET.fromstring(tif.ome_metadata)
    return dict(next(el for el in root.iter() if el.tag.endswith("}Pixels")).attrib)


@pytest.mark.parametrize("command, factor", [("denoise", 1), ("super-resolve", 4)])
def test_imagej_pixel_size_survives_the_cli(tmp_path, command, factor):
    src, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, stack((2, 16, 20)), imagej=True, resolution=(4.0, 4.0),  # 0.25 um per pixel
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 0.5})
    extra = ["--factor", factor] if factor > 1 else []
    rc, err = run(command, src, "-o", out, *extra, *QUICK)
    assert rc == 0, err
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        assert tif.series[0].shape == (2, 16 * factor, 20 * factor)
        ij = tif.imagej_metadata
        x_res = tif.pages[0].tags["XResolution"].value
        y_res = tif.pages[0].tags["YResolution"].value
    assert ij["unit"] == "micron" and ij["spacing"] == pytest.approx(0.5)  # the z step is not super-resolved
    assert x_res[1] / x_res[0] == pytest.approx(0.25 / factor) and y_res[1] / y_res[0] == pytest.approx(0.25 / factor)
    cal = read_calibration(out)
    assert cal.pixel_size == pytest.approx((0.25 / factor, 0.25 / factor))
    assert cal.units == {"X": "micrometer", "Y": "micrometer", "Z": "micrometer"}


def test_ome_tiff_pixel_size_survives_super_resolution(tmp_path):
    src, out = tmp_path / "in.ome.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, stack((2, 16, 20)), ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeYUnit": "nm", "TimeIncrement": 1.5, "TimeIncrementUnit": "ms"})
    rc, err = run("super-resolve", src, "-o", out, "--factor", 2, *QUICK)
    assert rc == 0, err
    pixels = ome_pixels(out)
    assert float(pixels["PhysicalSizeX"]) == pytest.approx(0.1) and float(pixels["PhysicalSizeY"]) == pytest.approx(0.15)
    assert pixels["PhysicalSizeXUnit"] == "nm" and pixels["PhysicalSizeYUnit"] == "nm"
    assert float(pixels["TimeIncrement"]) == pytest.approx(1.5) and pixels["TimeIncrementUnit"] == "ms"
    assert (pixels["SizeT"], pixels["SizeY"], pixels["SizeX"]) == ("2", "32", "40")


def test_plain_tiff_resolution_tags_and_png_warning(tmp_path):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, stack((16, 20)), resolution=(40000.0, 40000.0), resolutionunit="CENTIMETER")  # 0.25 um
    assert read_calibration(src).pixel_size == pytest.approx((0.25, 0.25))
    rc, err = run("denoise", src, "-o", tmp_path / "out.tif", *QUICK)
    assert rc == 0, err
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == 3
        num, den = page.tags["XResolution"].value
    assert num / den == pytest.approx(40000.0)
    rc, err = run("denoise", src, "-o", tmp_path / "out.png", *QUICK)
    assert rc == 0 and "cannot store a pixel size" in err and "0.25 x 0.25 micrometer" in err


def test_no_calibration_writes_none(tmp_path):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, stack((16, 20)))
    assert read_calibration(src) is None
    rc, err = run("denoise", src, "-o", tmp_path / "out.tif", *QUICK)
    assert rc == 0 and "warning" not in err
    assert read_calibration(tmp_path / "out.tif") is None


def test_imagej_rgb_float_output_falls_back_to_ome(tmp_path):
    """ImageJ cannot hold float RGB: the output is an OME-TIFF that keeps the pixel size and axes."""
    rgb = np.random.default_rng(0).integers(0, 255, (16, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", rgb, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "YXS",
                                                                                               "unit": "micron"})
    cal = read_calibration(tmp_path / "in.tif")
    assert cal.kind == "imagej" and cal.axes == "YXS"
    write_image(tmp_path / "out.tif", rgb.astype(np.float32), cal)
    out = read_calibration(tmp_path / "out.tif")
    assert out.kind == "ome" and out.axes == "YXS" and out.pixel_size == pytest.approx((0.5, 0.5))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), rgb.astype(np.float32))


@pytest.mark.parametrize("spelling", ["um", "\u00b5m", "\u03bcm", "micron", "\\u00B5m", "micrometre"])
def test_unit_spellings(spelling):
    assert normalise_unit(spelling) == "micrometer"


def test_unit_edge_cases():
    assert normalise_unit("pixel") is None and normalise_unit("") is None and normalise_unit(None) is None
    assert normalise_unit("sec") == "second" and normalise_unit("furlong") == "furlong"


def test_calibration_scaled_and_shape():
    cal = Calibration(axes="TZYX", spacing={"X": 0.2, "Y": 0.3, "Z": 1.0, "T": 5.0},
                      units={"X": "micrometer", "Y": "micrometer", "Z": "micrometer", "T": "second"}, kind="imagej")
    big = cal.scaled(4)
    assert big.spacing == {"X": 0.05, "Y": 0.075, "Z": 1.0, "T": 5.0} and cal.spacing["X"] == 0.2
    assert cal.for_shape((2, 3, 8, 8)).axes == "TZYX" and cal.for_shape((8, 8)).axes == ""
    assert cal.axis_letters(3) == "QYX" and cal.axis_letters(3, rgb=True) == "YXS"
