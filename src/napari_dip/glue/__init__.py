"""Glue between napari and the torch-only core: layer <-> array adaptation and thread workers.

Nothing here builds Qt widgets; :mod:`napari_dip.widgets` is a thin layer on top of it, and
scripts can use it directly (e.g. to run a restoration on a layer without any widget).
"""

from __future__ import annotations

from .driver import (
    PlaneRecord,
    RunControl,
    RunOutcome,
    TimeEstimate,
    Update,
    drive,
    outcome_from_job,
    select_planes,
)
from .layers import (
    TASK_WORDS,
    ImageInput,
    output_layer_kwargs,
    output_name,
    read_image_layer,
    read_mask_layer,
    super_resolved_placement,
)
from .report import describe_outcome, progress_text, run_record
from .run import RunOptions, build_restoration, empty_output, finished_output
from .worker import RunError, iterate_steps, start_worker

__all__ = [
    "TASK_WORDS",
    "ImageInput",
    "PlaneRecord",
    "RunControl",
    "RunError",
    "RunOptions",
    "RunOutcome",
    "TimeEstimate",
    "Update",
    "build_restoration",
    "describe_outcome",
    "drive",
    "empty_output",
    "finished_output",
    "iterate_steps",
    "output_layer_kwargs",
    "outcome_from_job",
    "output_name",
    "progress_text",
    "read_image_layer",
    "read_mask_layer",
    "run_record",
    "select_planes",
    "start_worker",
    "super_resolved_placement",
]
