"""The settings of a watcher, declared once for ``facevec watch`` and ``facevec
serve --watch``: the model and detector (the gallery's own unless given), photos
per batch, worker processes, the face filters and the settle time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..ingest.watch import MAX_DELAY_SECONDS, SETTLE_SECONDS
from .main import (
    FiniteFloatRange,
    batch_size_option,
    detector_option,
    face_filter_options,
    model_option,
    workers_option,
)

_SETTLE = click.option(
    "--settle",
    type=FiniteFloatRange(0),
    default=SETTLE_SECONDS,
    show_default=True,
    help="Seconds without a new change before the changes seen are indexed "
    f"(at most {MAX_DELAY_SECONDS:g} s after the first).",
)

#: The keyword arguments the options give, as facevec.ingest.watch.Watcher takes them.
WATCH_SETTINGS = (
    "model_name",
    "detector_backend",
    "batch_size",
    "workers",
    "exact",
    "max_pixels",
    "min_face",
    "min_sharpness",
    "min_confidence",
    "settle",
)


def watch_settings_options(max_pixels: bool = True) -> Callable[[Callable], Callable]:
    """--model, --detector (default: the gallery's), --batch-size, --workers, the face
    filters (--max-pixels only with `max_pixels`) and --settle."""

    def decorate(command: Callable) -> Callable:
        command = _SETTLE(command)
        command = face_filter_options(command, max_pixels=max_pixels)
        command = workers_option(command)
        command = batch_size_option(command)
        command = detector_option(default=None)(command)
        return model_option(default=None)(command)

    return decorate


def watch_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The Watcher's keyword arguments among a command's parameters."""
    return {key: options[key] for key in WATCH_SETTINGS if key in options}
