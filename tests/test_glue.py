"""The glue layer without Qt: layer reading, output placement, run options, the worker generator."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dip.glue import (
    RunError,
    RunOptions,
    build_restoration,
    finished_output,
    iterate_steps,
    output_layer_kwargs,
    output_name,
    read_image_layer,
    read_mask_layer,
    super_resolved_placement,
)

layers = pytest.importorskip("napari.layers")


def test_output_names():
    assert output_name("cells", "denoise") == "cells denoised"
    assert output_name("cells", "inpaint") == "cells inpainted"
    assert output_name("cells", "super_resolve", 4) == "cells x4 super-resolved"
    with pytest.raises(ValueError, match="unknown task"):
        output_name("cells", "deblur")


def test_read_image_layer_copies_data_and_placement():
    data = np.arange(2 * 6 * 8, dtype=np.uint16).reshape(2, 6, 8)
    layer = layers.Image(data, name="raw", scale=(3, 0.5, 0.25), translate=(1, 2, 3), units=("um", "nm", "nm"),
                         axis_labels=("z", "y", "x"), contrast_limits=(5, 60))
    inp = read_image_layer(layer)
    assert inp.name == "raw" and not inp.rgb and inp.ndim == 3
    assert inp.scale == (3, 0.5, 0.25) and inp.translate == (1, 2, 3)
    assert inp.display["contrast_limits"] == [5, 60]
    assert not np.shares_memory(inp.data, layer.data)
    inp.data[...] = 0
    assert layer.data.max() == data.max()  # the layer is untouched
    kwargs = output_layer_kwargs(inp, "denoise")
    out = layers.Image(np.zeros(data.shape, np.float32), **kwargs)
    assert out.name == "raw denoised" and tuple(out.axis_labels) == ("z", "y", "x")
    assert [str(u) for u in out.units] == [str(u) for u in layer.units]
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)


def test_read_rgb_and_missing_layers():
    rgb = layers.Image(np.zeros((5, 6, 3), np.uint8), rgb=True)
    inp = read_image_layer(rgb)
    assert inp.rgb and inp.ndim == 2 and "colormap" not in inp.display
    with pytest.raises(ValueError, match="no image layer selected"):
        read_image_layer(None)
    with pytest.raises(ValueError, match="no mask selected"):
        read_mask_layer(None)
    with pytest.raises(ValueError, match="not an Image layer"):
        read_image_layer(layers.Labels(np.zeros((4, 4), np.uint8)))
    labels = layers.Labels(np.eye(4, dtype=np.uint8))
    mask = read_mask_layer(labels)
    mask[...] = 0
    assert labels.data.sum() == 4


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_super_resolution_pixels_tile_the_input_pixels(factor):
    scale, translate = super_resolved_placement((7.0, 2.0, 3.0), (1.0, 10.0, 20.0), factor)
    assert scale == (7.0, 2.0 / factor, 3.0 / factor)
    assert translate[0] == 1.0  # the stack axis is left alone
    for s_in, t_in, s_out, t_out in zip((2.0, 3.0), (10.0, 20.0), scale[1:], translate[1:]):
        # the first output pixel's outer edge is the first input pixel's outer edge
        assert t_out - s_out / 2 == pytest.approx(t_in - s_in / 2)
        # the mean of the output pixel centres covering input pixel 0 is that pixel's centre
        assert np.mean([t_out + j * s_out for j in range(factor)]) == pytest.approx(t_in)


def test_super_resolution_shift_follows_rotation():
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees
    scale, translate = super_resolved_placement((2.0, 2.0), (0.0, 0.0), 2, rotate=rot)
    # unrotated the shift is (-0.5, -0.5); rotated it becomes (0.5, -0.5)
    np.testing.assert_allclose(translate, rot @ np.array([-0.5, -0.5]))
    assert scale == (1.0, 1.0)


def test_output_kwargs_for_super_resolution():
    inp = read_image_layer(layers.Image(np.zeros((4, 6)), name="lo", scale=(2, 2), translate=(10, 20)))
    kwargs = output_layer_kwargs(inp, "super_resolve", 4)
    assert kwargs["name"] == "lo x4 super-resolved"
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["translate"] == (9.25, 19.25)


def test_build_restoration_auto_and_fixed_iterations():
    inp = read_image_layer(layers.Image(np.random.default_rng(0).random((16, 16)).astype(np.float32)))
    job = build_restoration("denoise", inp, RunOptions(iterations=77, auto_stop=True, preset="fast", device="cpu"))
    assert job.iterations == "auto" and job.settings.iterations == 77
    job = build_restoration("denoise", inp, RunOptions(iterations=5, auto_stop=False, preset="fast", device="cpu"))
    assert job.iterations == 5 and job.precision == "auto"
    job = build_restoration("denoise", inp, RunOptions(iterations=2, auto_stop=False, preset="fast", device="cpu",
                                                       precision="bf16"))
    assert job.precision == "bf16" and np.isfinite(job.run()).all()
    job = build_restoration("super_resolve", inp, RunOptions(factor=3, kernel="bicubic", device="cpu"))
    assert job.factor == 3 and job.kernel == "bicubic" and job.output.shape == (48, 48)
    with pytest.raises(ValueError, match="mask is empty"):
        build_restoration("inpaint", inp, RunOptions(device="cpu"), mask=np.zeros((16, 16)))
    with pytest.raises((ValueError, RuntimeError)):
        build_restoration("denoise", inp, RunOptions(device="cuda:99"))


def test_iterate_steps_yields_snapshots_returns_output_and_wraps_runtime_errors():
    inp = read_image_layer(layers.Image(np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)))
    job = build_restoration("denoise", inp, RunOptions(iterations=2, auto_stop=False, preset="fast",
                                                       device="cpu"))
    gen = iterate_steps(job)
    snaps = []
    with pytest.raises(StopIteration) as stop:
        while True:
            snaps.append(next(gen))
    assert [(s.slice_index, s.iteration) for s in snaps] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert stop.value.value.shape == (2, 16, 16)
    out, planes = finished_output(job, cancelled=False)
    assert planes == 2 and np.isfinite(out).all()

    class Broken:
        def steps(self):
            yield 1
            raise RuntimeError("CUDA error: device-side assert")

    gen = iterate_steps(Broken())
    assert next(gen) == 1
    with pytest.raises(RunError, match="device-side assert"):
        next(gen)


def test_finished_output_after_cancel_zeroes_planes_not_reached():
    inp = read_image_layer(layers.Image(np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)))
    job = build_restoration("denoise", inp, RunOptions(iterations=50, auto_stop=False, preset="fast",
                                                       device="cpu"))
    gen = iterate_steps(job)
    for _ in range(3):
        next(gen)  # three iterations of plane 0, then "cancel"
    out, planes = finished_output(job, cancelled=True)
    assert planes == 1 and np.isfinite(out).all()
    assert np.abs(out[0]).max() > 0 and not out[1:].any()
