"""napari widgets for the paper's other applications: JPEG restoration, enhancement, flash/no-flash,
and pre-images / activation maximisation.

Each is a :class:`~napari_dip.widgets.base.RestorationWidget`: the same controls, worker, live
preview, cancel, time estimate, end states and metadata record as Denoise, Inpaint and
Super-resolve. They only say what the run is (the base's extension hooks) and add the
application's own controls; the jobs come from :mod:`napari_dip.glue.applications`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import napari
import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, SpinBox, Widget
from napari.utils.notifications import show_warning

from ..core.layout import get_plane, put_plane
from ..glue import ImageInput, RunOptions, output_layer_kwargs, read_image_layer
from ..glue.applications import (
    app_settings,
    build_actmax,
    build_blind,
    build_enhance,
    build_flash,
    build_preimage,
    enhanced,
    list_layers,
    preset_names,
    torchvision_models,
)
from .base import RestorationWidget

__all__ = ["BlindRestoreWidget", "EnhanceWidget", "FlashNoFlashWidget", "PreImageWidget"]


def _placed_like(inp: ImageInput, name: str) -> dict[str, Any]:
    """``add_image`` keywords that place a layer exactly over ``inp``, named ``name``."""
    kwargs = output_layer_kwargs(inp, "denoise")
    kwargs["name"] = name
    return kwargs


def _fixed_count(widget: RestorationWidget) -> None:
    """Applications whose fit has a fixed length by design: no automatic stopping."""
    widget.auto_stop.value = False
    widget.auto_stop.visible = False


class _AppWidget(RestorationWidget):
    """What the application widgets share: their presets (:mod:`napari_dip.glue.applications`)."""

    app: ClassVar[str] = ""
    stack_jobs = False

    def _preset_choices(self) -> list[str]:
        return preset_names(self.app)

    def _preset_iterations(self, preset: str, device: str, channels: int | None = None) -> int:
        return int(app_settings(self.app, preset, device)[1].iterations)


# -- JPEG / blind restoration ----------------------------------------------------------------------
class BlindRestoreWidget(_AppWidget):
    """Remove JPEG artefacts (or another unknown degradation) from an Image layer into a new layer.

    The image is fitted with the plain denoising objective (paper, Sec. 4): the network reproduces
    natural structure before the 8x8 block pattern and ringing. The ``jpeg`` preset is the paper's
    network for it (2400 iterations with an output average); ``fast``/``paper`` are the denoising
    presets. At the end the status and the record give the 8x8 blockiness of the input and of the
    result (:func:`~napari_dip.applications.blind.blockiness`: about 1 without a block grid).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    task = "denoise"
    title = "JPEG restoration"
    app = "blind"
    default_preset = "jpeg"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)
        self.auto_stop.value = False  # the paper's fixed count; auto stop remains available
        self.preset.tooltip = ("'jpeg': the paper's network for JPEG artefacts (light; 2400 iterations with an "
                               "output average); 'fast'/'paper': the denoising presets")
        self.image.tooltip = "Image layer to restore, e.g. a decoded JPEG (never modified)"
        self.run_button.text = "Run JPEG restoration"

    def _build_job(self, inp: ImageInput, options: RunOptions):
        return build_blind(inp, options)

    def _output_kwargs(self, inp: ImageInput, job) -> dict[str, Any]:
        return _placed_like(inp, f"{inp.name} restored")

    def _finish_result(self, layer, outcome, job, inp: ImageInput) -> str:
        from ..applications.blind import blockiness

        planes = outcome.in_data
        h, w = job.layout.plane_shape
        if not planes or min(h, w) <= 8:
            return ""
        before = float(np.mean([blockiness(get_plane(job.layout, inp.data, s)) for s in planes]))
        after = float(np.mean([blockiness(get_plane(job.layout, layer.data, s)) for s in planes]))
        layer.metadata["napari_dip"]["blockiness"] = {"input": round(before, 4), "output": round(after, 4)}
        return f"8x8 blockiness {before:.3f} -> {after:.3f} (1 = no block grid)."


# -- enhancement -----------------------------------------------------------------------------------
class EnhanceWidget(_AppWidget):
    """Enhance the detail of an Image layer: ``image + strength * (image - coarse)``.

    ``coarse`` is a short Deep Image Prior fit (300 iterations by default): the network has the
    large structures but not yet the fine detail, so ``image - coarse`` is the detail layer
    (paper, Sec. 4). The output layer shows the enhanced image as the fit goes; the coarse fit
    can be added as a layer of its own. Stacks are enhanced plane by plane.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    task = "denoise"
    title = "Enhancement"
    app = "enhance"
    convergence_evidence = False  # the coarse fit stops early on purpose

    def __init__(self, viewer: napari.viewer.Viewer):
        self._source: dict[str, Any] | None = None
        #: the coarse fit's layer of the last run (with "also add the coarse layer")
        self.coarse_layer = None
        super().__init__(viewer)
        _fixed_count(self)
        self.iterations.tooltip = ("Length of the coarse fit: more iterations put more detail into it and leave "
                                   "less to enhance")
        self.preset.tooltip = ("Network of the coarse fit: 'fast' (light, for CPUs) or 'paper' (the paper's "
                               "denoiser); 'auto': 'paper' on a GPU, 'fast' on a CPU")

    def _task_controls(self) -> list[Widget]:
        self.alpha = FloatSpinBox(name="alpha", label="strength", value=1.0, min=-1.0, max=20.0, step=0.25,
                                  tooltip="Detail gain: enhanced = image + strength x (image - coarse); 0 returns the "
                                          "image, negative values smooth it")
        self.add_coarse = CheckBox(name="add_coarse", text="also add the coarse layer", value=False,
                                   tooltip="Add the coarse fit as a layer of its own at the end")
        return [self.alpha, self.add_coarse]

    def _advanced_task_controls(self) -> list[Widget]:
        self.average = FloatSpinBox(name="average", label="output average", value=0.9, min=0.0, max=0.999,
                                    step=0.05,
                                    tooltip="Weight of the running average of the coarse fit's outputs (0: none). "
                                            "0.99, the denoisers' value, still remembers the first grey outputs after "
                                            "a few hundred iterations")
        self.clip = CheckBox(name="clip", text="clip to the input's range", value=True,
                             tooltip="Clip the enhanced image to the input's value range, as a display would")
        return [self.average, self.clip]

    def _preset_iterations(self, preset: str, device: str, channels: int | None = None) -> int:
        return 300

    def _build_job(self, inp: ImageInput, options: RunOptions):
        overrides = {"ema": float(self.average.value), **(options.overrides or {})}
        job = build_enhance(inp, RunOptions(**{**_fields(options), "overrides": overrides}))
        # the strength and the clip range of this run (changing the controls mid-run changes nothing);
        # the input is finite (the job checked it)
        self._source = {"data": inp.data, "layout": job.layout, "alpha": float(self.alpha.value),
                        "clip": (float(np.min(inp.data)), float(np.max(inp.data))) if self.clip.value else None}
        return job

    def _output_kwargs(self, inp: ImageInput, job) -> dict[str, Any]:
        return _placed_like(inp, f"{inp.name} enhanced")

    def _display_plane(self, s: int, image: np.ndarray) -> np.ndarray:
        src = self._source
        return enhanced(get_plane(src["layout"], src["data"], s), image, src["alpha"], src["clip"])

    def _display_output(self, outcome, job) -> np.ndarray:
        out = np.array(outcome.data, dtype=np.float32, copy=True)
        for s in outcome.in_data:
            put_plane(job.layout, out, s, self._display_plane(s, get_plane(job.layout, outcome.data, s)))
        return out

    def _provenance(self, run: dict[str, Any], job) -> dict[str, Any]:
        src = self._source
        return {**super()._provenance(run, job), "alpha": src["alpha"], "clip": src["clip"],
                "average": float(job.settings.ema)}

    def _finish_result(self, layer, outcome, job, inp: ImageInput) -> str:
        from ..applications.enhance import laplacian_energy

        planes = outcome.in_data
        if not planes:
            return ""
        before = float(np.mean([laplacian_energy(get_plane(job.layout, inp.data, s)) for s in planes]))
        after = float(np.mean([laplacian_energy(get_plane(job.layout, layer.data, s)) for s in planes]))
        coarse = float(np.mean([laplacian_energy(get_plane(job.layout, outcome.data, s)) for s in planes]))
        layer.metadata["napari_dip"]["local_contrast"] = {"input": round(before, 4), "coarse": round(coarse, 4),
                                                          "enhanced": round(after, 4)}
        self.coarse_layer = None
        if self.add_coarse.value:
            self.coarse_layer = self._viewer.add_image(np.array(outcome.data, copy=True),
                                                       **_placed_like(inp, f"{inp.name} coarse"))
            self.coarse_layer.metadata["napari_dip"] = dict(layer.metadata["napari_dip"], role="coarse")
        return (f"Local contrast (mean |Laplacian|) {before:.4g} in the input, {coarse:.4g} in the coarse fit, "
                f"{after:.4g} enhanced (strength {self._source['alpha']:g}).")


# -- flash / no-flash ------------------------------------------------------------------------------
def _looks_like_flash(name: str) -> bool:
    low = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    return "flash" in low and "noflash" not in low


class FlashNoFlashWidget(_AppWidget):
    """Combine a flash and a no-flash photograph of the same scene (paper, Sec. 4).

    The network is fitted to the **no-flash** image (its colours and lighting, and its units, are
    the output's) with the **flash** image as its input instead of random noise, so the flash
    image's sharp edges and texture guide the result. The two layers must have the same height and
    width (the same, aligned scene); the output is placed over the no-flash layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    task = "denoise"
    title = "Flash/no-flash"
    app = "flash"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)
        _fixed_count(self)
        self.image.label = "no-flash"
        self.image.tooltip = "The no-flash photograph: the target (its colours and lighting); never modified"
        self.preset.tooltip = ("'paper': the paper's network (128 channels, 601 iterations; for a GPU); 'fast': "
                               "4 levels of 32 channels, for CPUs; 'auto': 'paper' on a GPU, 'fast' on a CPU")

    def _task_controls(self) -> list[Widget]:
        self.flash = ComboBox(name="flash", label="flash", choices=self._image_choices, nullable=True,
                              tooltip="The flash photograph of the same scene: the network's input (its edges and "
                                      "texture guide the result); never modified")
        return [self.flash]

    def _layer_pickers(self) -> list[tuple[ComboBox, type]]:
        return [*super()._layer_pickers(), (self.flash, napari.layers.Image)]

    def _select_active_layer(self) -> None:
        """Fill empty boxes: the flash box prefers a layer named like a flash photograph, and never
        repeats the no-flash layer when there is another one."""
        images = [layer for layer in self._viewer.layers if isinstance(layer, napari.layers.Image)]
        if self.flash.value is None:
            named = [layer for layer in images if _looks_like_flash(layer.name) and layer is not self.image.value]
            if named:
                self.flash.value = named[-1]
        if self.image.value is None:
            others = [layer for layer in images if layer is not self.flash.value]
            no_flash = [layer for layer in others if not _looks_like_flash(layer.name)]
            if no_flash or others:
                self.image.value = (no_flash or others)[-1]
        super()._select_active_layer()
        if self.flash.value is not None and self.flash.value is self.image.value:
            others = [layer for layer in images if layer is not self.image.value]
            if others:
                self.flash.value = others[-1]

    def _build_job(self, inp: ImageInput, options: RunOptions):
        if self.flash.value is None:
            raise ValueError("no flash layer selected: open the flash photograph and choose it in the 'flash' box")
        if self.flash.value is self.image.value:
            raise ValueError(f"the flash and the no-flash layer are the same layer ({inp.name!r}): choose the two "
                             "photographs of the scene")
        flash = read_image_layer(self.flash.value)
        job = build_flash(flash, inp, options)
        if not (np.allclose(flash.scale, inp.scale) and np.allclose(flash.translate, inp.translate)):
            show_warning(f"{self.title}: the flash layer {flash.name!r} and the no-flash layer {inp.name!r} are "
                         "placed differently in the viewer; their pixels are paired by index (row, column)")
        self._flash_name = flash.name
        return job

    def _output_kwargs(self, inp: ImageInput, job) -> dict[str, Any]:
        return _placed_like(inp, f"{inp.name} flash/no-flash")

    def _provenance(self, run: dict[str, Any], job) -> dict[str, Any]:
        return {**super()._provenance(run, job), "flash": self._flash_name}


# -- pre-image and activation maximisation ---------------------------------------------------------
class PreImageWidget(_AppWidget):
    """Natural pre-images and activation maximisation of a trained network (paper, Sec. 4).

    **Pre-image**: an image whose features at a layer of the model match those of an Image layer.
    **Activation maximisation**: an image that excites one unit (channel) of a layer. Both search
    among the images a Deep Image Prior generator produces; with *TV baseline* on, the paper's
    baseline (the pixels themselves, with a total-variation regulariser) runs after it, into a
    layer of its own. The model is a TorchScript file (``torch.jit.script(model).save(path)``), or a
    torchvision model name when torchvision is installed.

    Parameters
    ----------
    viewer : napari.viewer.Viewer

    Attributes
    ----------
    result_layers : dict
        ``'dip'`` and ``'tv'``: the output layers of the last run.
    """

    task = "denoise"
    title = "Pre-image"
    app = "preimage"
    convergence_evidence = False  # no measurement to compare a pre-image with

    def __init__(self, viewer: napari.viewer.Viewer):
        self._model_key: Any = None
        self._model_obj: Any = None
        self._layers: list[tuple[str, str]] = [("model output", "")]
        self._queue: list[str] = []
        self._figures: dict[str, str] = {}
        self._method = "dip"
        self.result_layers: dict[str, Any] = {}
        super().__init__(viewer)
        _fixed_count(self)
        self.preset.tooltip = ("Generator network: 'paper' (6 scales, 7x7 kernels, up to 128 channels; for a GPU), "
                               "'fast' (3x3 kernels, up to 64 channels, for CPUs); 'auto': 'paper' on a GPU, "
                               "'fast' on a CPU")
        self.image.tooltip = "Pre-image: the image whose features are inverted (never modified)"
        self.mode.changed.connect(self._on_mode)
        self.model.changed.connect(self._on_model)
        if self.torchvision is not None:
            self.torchvision.changed.connect(self._on_model)
        self._on_mode(self.mode.value)

    def _task_controls(self) -> list[Widget]:
        self.mode = ComboBox(name="mode", label="find", value="preimage",
                             choices=[("pre-image of the image", "preimage"), ("activation maximisation", "actmax")],
                             tooltip="Pre-image: an image whose features match the image's at the layer. Activation "
                                     "maximisation: an image that excites one unit of the layer")
        self.model = FileEdit(name="model", label="model", mode="r", nullable=True,
                              filter="TorchScript (*.pt *.pth *.ts *.jit *.torchscript);;All files (*)",
                              tooltip="A TorchScript file: torch.jit.script(model).save('net.pt') (or torch.jit.trace)")
        names = torchvision_models()
        self.torchvision = ComboBox(name="torchvision", label="or torchvision", value=None, nullable=True,
                                    choices=names,
                                    tooltip="A torchvision model with its pretrained weights (downloaded once into the "
                                            "torch cache) and ImageNet normalisation; empty: the file above"
                                    ) if names else None
        self.layer = ComboBox(name="layer", label="layer", choices=self._layer_choices, value="",
                              tooltip="The layer whose features are matched or maximised (layers reached through "
                                      "Sequential containers, as TorchScript runs no Python hooks)")
        self.unit = SpinBox(name="unit", label="unit", value=0, min=0, max=1_000_000,
                            tooltip="Activation maximisation: the unit (channel) of the layer to excite")
        self.size = SpinBox(name="size", label="size", value=227, min=16, max=4096,
                            tooltip="Activation maximisation: the image's height and width (227 in the paper)")
        self.baseline = CheckBox(name="baseline", text="then the TV baseline", value=True,
                                 tooltip="After the deep image prior, run the paper's baseline (the pixels with a "
                                         "total-variation regulariser) into a layer of its own")
        return [self.mode, self.model, *([self.torchvision] if self.torchvision is not None else []), self.layer,
                self.unit, self.size, self.baseline]

    def _advanced_task_controls(self) -> list[Widget]:
        self.imagenet = CheckBox(name="imagenet", text="ImageNet mean/std normalisation", value=False,
                                 tooltip="Normalise the model's input with ImageNet's mean and std (torchvision models "
                                         "always are)")
        self.tv_weight = FloatSpinBox(name="tv_weight", label="TV weight", value=0.01, min=0.0, max=10.0, step=0.005,
                                      tooltip="Weight of the TV-norm regulariser of the baseline")
        self.channels = SpinBox(name="channels", label="channels", value=3, min=1, max=16,
                                tooltip="Activation maximisation: the image's channels (3 for RGB models)")
        return [self.imagenet, self.tv_weight, self.channels]

    # -- the model ---------------------------------------------------------------------------------
    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        return list(self._layers)

    def _set_layers(self, layers: list[tuple[str, str]]) -> None:
        self._layers = layers
        self.layer.reset_choices()

    def _model_source(self) -> tuple[str, Any] | None:
        if self.torchvision is not None and self.torchvision.value:
            return "torchvision", str(self.torchvision.value)
        path = self.model.value
        if path is None or not str(path).strip() or str(path) == ".":
            return None
        p = Path(str(path)).expanduser()
        return "file", (str(p), p.stat().st_mtime_ns if p.is_file() else None)

    def _load_model(self, for_run: bool):
        """The chosen model (loaded once per file version), or ValueError with the reason."""
        from ..applications.preimage import load_model

        source = self._model_source()
        if source is None:
            raise ValueError("no model chosen: pick a TorchScript file in the 'model' box")
        kind, value = source
        key = (source, for_run and kind == "torchvision")
        if key != self._model_key:
            if kind == "file":
                path, _mtime = value
                if not os.path.isfile(path):
                    raise ValueError(f"{path}: no such model file")
                model, _tv = load_model(path, device="cpu")
            elif for_run:  # with its pretrained weights (downloaded once)
                model, _tv = load_model(value, device="cpu")
            else:  # the architecture only, to list the layers
                import torchvision

                model = torchvision.models.get_model(value, weights=None).eval()
            self._model_key, self._model_obj = key, model
        return self._model_obj

    def _on_model(self, _value: Any = None) -> None:
        """Load the chosen model and list its layers (an error is shown at once)."""
        if self._model_source() is None:
            self._set_layers([("model output", "")])
            return
        try:
            model = self._load_model(for_run=False)
        except (ValueError, OSError, RuntimeError) as err:
            self._set_layers([("model output", "")])
            self._report_error(f"{self.title}: {err}")
            return
        modules = dict(model.named_modules())
        choices = [("model output", "")] + [
            (f"{name} ({getattr(modules[name], 'original_name', type(modules[name]).__name__)})", name)
            for name in list_layers(model) if name]
        self._set_layers(choices)
        self._set_status(f"{self.title}: model loaded, {len(choices) - 1} layers to choose from.")

    def _on_mode(self, mode: str) -> None:
        actmax = mode == "actmax"
        self.image.visible = not actmax
        self.unit.visible = self.size.visible = self.channels.visible = actmax
        self.app = "actmax" if actmax else "preimage"
        self.title = "Activation maximisation" if actmax else "Pre-image"
        self.run_button.text = f"Run {self.title.lower()}"

    # -- the run -----------------------------------------------------------------------------------
    def run(self):
        """Run the deep image prior, then (with *TV baseline*) the baseline; returns the first worker."""
        if self.running:
            show_warning(f"{self.title} is already running; cancel it first")
            return None
        self._queue = ["tv"] if self.baseline.value else []
        self._method = "dip"
        self.result_layers = {}
        self._figures: dict[str, str] = {}
        return super().run()

    def _follow_up(self, outcome) -> bool:
        if not self._queue:
            return False
        self._method = self._queue.pop(0)
        return super().run() is not None

    def _read_input(self) -> ImageInput:
        if self.mode.value == "actmax":
            size, channels = int(self.size.value), int(self.channels.value)
            return ImageInput(name=self._target_name(), data=np.zeros((size, size, channels), np.float32),
                              rgb=channels in (3, 4), scale=(1.0, 1.0), translate=(0.0, 0.0))
        return read_image_layer(self.image.value)

    def _target_name(self) -> str:
        layer = self.layer.value or "output"
        return f"unit {int(self.unit.value)} of {layer}" if self.mode.value == "actmax" else f"layer {layer}"

    def _build_job(self, inp: ImageInput, options: RunOptions):
        model = self._load_model(for_run=True)
        layer = self.layer.value or None
        norm = {}
        if self.imagenet.value:
            from ..applications.preimage import IMAGENET_MEAN, IMAGENET_STD

            norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        tv_weight = float(self.tv_weight.value)
        if self.mode.value == "actmax":
            return build_actmax(model, layer, int(self.unit.value), int(self.size.value), int(self.channels.value),
                                self._method, options, tv_weight=tv_weight, **norm)
        return build_preimage(inp, model, layer, self._method, options, tv_weight=tv_weight, **norm)

    def _output_kwargs(self, inp: ImageInput, job) -> dict[str, Any]:
        method = "DIP" if self._method == "dip" else "TV baseline"
        if self.mode.value == "actmax":
            return {"name": f"{inp.name} ({method})", "rgb": bool(job.layout.rgb), "contrast_limits": [0.0, 1.0]}
        return _placed_like(inp, f"{inp.name} pre-image of {self._target_name()} ({method})")

    def _provenance(self, run: dict[str, Any], job) -> dict[str, Any]:
        kind, value = self._model_source() or ("", None)
        return {**super()._provenance(run, job), "mode": self.mode.value, "method": self._method,
                "model": value[0] if kind == "file" else value, "layer": self.layer.value or None,
                **({"unit": int(self.unit.value)} if self.mode.value == "actmax" else {})}

    def _finish_result(self, layer, outcome, job, inp: ImageInput) -> str:
        """Record the objective at the start and at the end (and a pre-image's distance from the image);
        the status compares the runs so far (the deep image prior, then the baseline)."""
        self.result_layers[self._method] = layer
        initial, final = job.initial, job.objective
        if initial is None or final is None:
            return ""
        record = layer.metadata["napari_dip"]
        method = "DIP" if self._method == "dip" else "TV baseline"
        if self.mode.value == "actmax":
            record["activation"] = {"start": initial, "end": final}
            self._figures[method] = f"{method} {initial:.4g} -> {final:.4g}"
            return f"Activation of {self._target_name()} (start -> end): {'; '.join(self._figures.values())}."
        record["feature_distance"] = {"start": initial, "end": final}
        error = float(np.mean(np.abs(np.asarray(layer.data, np.float64) - np.asarray(inp.data, np.float64))))
        record["mean_abs_difference_from_image"] = error
        self._figures[method] = f"{method} {initial:.4g} -> {final:.4g} (differs from the image by {error:.3g} on average)"
        return f"Relative feature distance at {self._target_name()} (start -> end): {'; '.join(self._figures.values())}."


def _fields(options: RunOptions) -> dict[str, Any]:
    return {k: getattr(options, k) for k in options.__dataclass_fields__}
