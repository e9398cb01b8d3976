"""facevec watch: keep a gallery in step with photo folders as they change."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import click

from ..ingest.watch import MAX_DELAY_SECONDS, SETTLE_SECONDS, WatchStatus
from .main import (
    FiniteFloatRange,
    batch_size_option,
    cli,
    db_option,
    detector_option,
    face_filter_options,
    fail_cleanly,
    model_option,
    workers_option,
)
from .output import echo, printable

#: Seconds a watch waits for the changes to settle (watch; any command that watches).
settle_option = click.option(
    "--settle",
    type=FiniteFloatRange(0),
    default=SETTLE_SECONDS,
    show_default=True,
    help="Seconds without a new change before the changes seen are indexed "
    f"(at most {MAX_DELAY_SECONDS:g} s after the first).",
)


@cli.command(name="watch")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@db_option()
@model_option(default=None)
@detector_option(default=None)
@batch_size_option
@workers_option
@face_filter_options
@settle_option
@click.option("--quiet", is_flag=True, help="No progress bar while catching up.")
@fail_cleanly
def watch_command(
    folders: tuple[str, ...],
    db: str,
    model_name: str | None,
    detector_backend: str | None,
    batch_size: int,
    workers: int | None,
    exact: bool,
    max_pixels: int,
    min_face: int,
    min_sharpness: float,
    min_confidence: float | None,
    settle: float,
    quiet: bool,
) -> None:
    """Keep DB in step with FOLDERS: new, changed, moved and deleted photos are
    indexed or removed within seconds, until Ctrl-C.

    It first catches up on what changed while nothing watched (a rescan that reads
    only files whose size, time or inode changed; deleted photos are removed), then
    follows the system's file events. Settings as for index; the model and detector
    are the gallery's own unless given.
    """
    from ..ingest.watch import Watcher

    watcher = Watcher(
        folders,
        db,
        model_name=model_name,
        detector_backend=detector_backend,
        workers=workers,
        progress=not quiet,
        settle=settle,
        on_status=print_status,
        batch_size=batch_size,
        exact=exact,
        max_pixels=max_pixels,
        min_face=min_face,
        min_sharpness=min_sharpness,
        min_confidence=min_confidence,
    )
    echo(f"catching up on {', '.join(printable(f) for f in folders)}", err=True)
    # A service manager's stop (SIGTERM) ends the watch as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        watcher.run()
    except KeyboardInterrupt:
        echo("stopped: committed batches are kept; the next start catches up", err=True)
        sys.exit(0)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def print_status(status: WatchStatus) -> None:
    """One line per step of the watcher, on stderr."""
    stamp = time.strftime("%H:%M:%S")
    report = status.report
    if status.event == "watching":
        echo(f"{stamp} watching for changes (Ctrl-C stops)", err=True)
    elif status.event == "failed":
        echo(f"{stamp} {status.folder}: not updated, retrying: {status.message}", err=True)
    elif report is not None:
        parts = [
            (report.indexed, f"{report.indexed} indexed ({report.faces_added} faces)"),
            (status.moved, f"{status.moved} moved"),
            (report.pruned, f"{report.pruned} removed"),
            (report.no_face, f"{report.no_face} without a face"),
            (report.not_image, f"{report.not_image} not images"),
            (report.errors, f"{report.errors} errors"),
        ]
        said = ", ".join(text for count, text in parts if count) or "nothing new"
        if status.event == "caught_up":
            echo(
                f"{stamp} caught up on {report.folder}: {report.files_seen} photos, "
                f"{report.unchanged} unchanged, {said} ({report.seconds_total:.1f} s)",
                err=True,
            )
        else:
            echo(f"{stamp} {report.folder}: {said}", err=True)
        for path, message in report.error_messages.items():
            echo(f"error: {printable(message or path)}", err=True)
