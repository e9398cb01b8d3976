"""The people commands: identify, calibrate, and the ``people`` group (cluster, list,
show, name, merge, split, move, reject, confirm, undo, history)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any

import click

from ..parameters import MAX_ID
from ..search import STRATEGIES
from .main import (
    THRESHOLD,
    FiniteFloatRange,
    alias,
    cli,
    db_option,
    fail_cleanly,
    format_option,
    metric_option,
)
from .output import echo, echo_frame, echo_json, printable, warnings_as_lines


def _echo_records(records: list[dict[str, Any]], columns: list[str], output_format: str) -> None:
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=columns)
    if output_format == "table":  # no name, never undone, ...: a blank cell
        frame = frame.astype(object).where(frame.notna(), "")
    echo_frame(frame, output_format, "(none)")


def _undo_hint(db: str) -> str:
    """The command that undoes the last edit, ready to paste (a URL's password
    shown as ***, never in clear)."""
    from ..storage.urls import is_url, redact

    shown = redact(db) if is_url(db) else db
    return f"(to undo: facevec people undo --db {shlex.quote(shown)})"


def _echo_change(change: Any, db: str) -> None:
    echo(change.summary)
    if change.edit_id is not None:
        echo(_undo_hint(db))


@cli.command(name="identify")
@click.argument("img", metavar="IMG...", nargs=-1, required=True, type=click.Path(exists=True))
@db_option()
@metric_option()
@click.option(
    "--threshold",
    type=THRESHOLD,
    default=None,
    help="A number, or 'calibrated' (facevec calibrate) [default: deepface's].",
)
@click.option(
    "--k",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Score each person on their K nearest faces.",
)
@click.option(
    "--margin",
    type=FiniteFloatRange(0),
    default=None,
    help="Closer than this to a second person is ambiguous [default: 0.1 x threshold].",
)
@click.option(
    "--confirmed-only",
    is_flag=True,
    help="Only faces from folders or confirmed by a user count, not suggestions.",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default=None,
    help="Search strategy for the candidate faces.",
)
@format_option()
@fail_cleanly
def identify_command(
    img: tuple[str, ...],
    db: str,
    distance_metric: str,
    threshold: Any,
    k: int,
    margin: float | None,
    confirmed_only: bool,
    strategy: str | None,
    output_format: str,
) -> None:
    """Say who each face in IMG is: a person, 'ambiguous', or 'unknown' (nobody).

    IMG is a photo or a folder (every photo in it); several are searched in one
    batch. Each face comes with its box in its photo (x, y, w, h).
    """
    from ..people.identify import identify
    from ..recognize import query_photos

    photos = []
    for given in img:
        in_folder = query_photos(given)  # None: a photo
        photos += [given] if in_folder is None else in_folder
    if not photos:
        raise click.UsageError(f"no photos in {printable(', '.join(img))}")
    with warnings_as_lines():
        frame = identify(
            photos,
            db,
            distance_metric=distance_metric,
            threshold=threshold,
            k=k,
            margin=margin,
            confirmed_only=confirmed_only,
            strategy=strategy,
        )
    if output_format != "table":
        echo_frame(frame, output_format)
        return
    shown = frame.rename(columns={f"source_{c}": c for c in "xywh"})
    columns = ["face_index", "person", "decision", "distance", "second_person", "margin"]
    columns += ["x", "y", "w", "h"]
    if len(photos) > 1:
        columns.insert(0, "img")
    echo_frame(shown[columns], "table", "no face")


@cli.command(name="calibrate")
@db_option()
@metric_option()
@format_option(("table", "json"))
@fail_cleanly
def calibrate_command(db: str, distance_metric: str, output_format: str) -> None:
    """Measure this gallery's thresholds on the people its users vouch for: faces
    from person folders, confirmed faces, and the faces of named people.

    Reports the genuine and impostor pair counts, the equal-error rate and its
    threshold, and the thresholds for false-match rates of 1e-2 and 1e-3, each
    rate with its 95% confidence interval; stores them for --threshold
    calibrated (identify, find). A sample too small to move the threshold is
    said so: under 100 pairs of either kind it stays deepface's, and under 1,000
    impostor pairs it is never looser than deepface's.
    """
    from ..people.calibration import calibrate

    figures = calibrate(db, distance_metric=distance_metric)
    if output_format == "json":
        echo_json(json.dumps(figures, indent=2))
        return
    for line in calibration_lines(figures):
        echo(line)


def _rates(figures: dict[str, Any], prefix: str) -> list[str]:
    """The two rates at one threshold, each with its 95% interval and pairs."""
    lines = []
    for rate, words, pairs in (
        ("fmr", "false-match", "impostor"),
        ("fnmr", "false non-match", "genuine"),
    ):
        low, high = figures[f"{prefix}_{rate}_ci"]
        lines.append(
            f"  {words} rate {figures[f'{prefix}_{rate}']:.4f} (95% CI {low:.4f} to "
            f"{high:.4f}, {figures[f'{pairs}_pairs']} {pairs} pairs)"
        )
    return lines


def calibration_lines(figures: dict[str, Any]) -> list[str]:
    """The calibration figures as the lines ``facevec calibrate`` prints."""
    labelled = figures.get("labelled", {})
    why = ", ".join(f"{count} {source}" for source, count in labelled.items() if count)
    lines = [
        f"{figures['faces']} faces of {figures['people']} people"
        + (f" ({why})" if why else "")
        + f": {figures['genuine_pairs']} genuine pairs, {figures['impostor_pairs']} "
        "impostor pairs",
        f"equal error rate {figures['eer']:.4f} at {figures['eer_threshold']:.4f}",
        *_rates(figures, "eer"),
    ]
    for key, rate in (("fmr_1e2", "1e-2"), ("fmr_1e3", "1e-3")):
        if figures[f"{key}_threshold"] is None:
            lines.append(f"false-match rate {rate}: threshold not enough impostor pairs")
        else:
            lines.append(f"false-match rate {rate}: threshold {figures[f'{key}_threshold']:.4f}")
            lines += _rates(figures, key)
    lines.append(
        f"--threshold calibrated = {figures['threshold']:.4f}: {figures['threshold_rule']}"
    )
    lines += _rates(figures, "threshold")
    lines += [f"warning: {warning}" for warning in figures["warnings"]]
    return lines


@cli.group(name="people")
def people_group() -> None:
    """Cluster, name and correct the people in a gallery.

    PERSON is a name or an id (facevec people list); FACE_ID is a face's id
    (facevec people show). Every change can be undone: facevec people undo.
    """


@people_group.command(name="cluster")
@db_option()
@metric_option()
@click.option(
    "--threshold",
    type=FiniteFloatRange(0, min_open=True),
    default=None,
    help="Linkage threshold [default: 0.92 x deepface's for the model].",
)
@click.option(
    "--min-faces",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Faces a new suggested person needs.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@format_option(("table", "json"))
@fail_cleanly
def cluster_command(
    db: str,
    distance_metric: str,
    threshold: float | None,
    min_faces: int,
    quiet: bool,
    output_format: str,
) -> None:
    """Group the faces that have no person into (suggested) people.

    New faces join existing people or form new ones; what exists never moves,
    so rerunning with nothing new changes nothing. Ctrl-C changes nothing.
    """
    from ..people.clustering import cluster

    try:
        report = cluster(
            db,
            distance_metric=distance_metric,
            threshold=threshold,
            min_faces=min_faces,
            progress=not quiet,
        )
    except KeyboardInterrupt:
        echo("interrupted: nothing changed", err=True)
        sys.exit(130)
    if output_format == "json":
        echo_json(json.dumps(report.as_dict(), indent=2))
        return
    echo(
        f"{report.unassigned} of {report.faces} faces had no person: "
        f"{report.joined_existing} joined existing people, {report.new_people} new people "
        f"({report.faces_in_new_people} faces), {report.left_unassigned} left alone "
        f"({report.seconds:.1f} s)"
    )
    if report.edit_id is not None:
        echo(_undo_hint(db))


@people_group.command(name="list")
@db_option()
@click.option("--named/--unnamed", default=None, help="Only named, or only unnamed, people.")
@click.option(
    "--min-faces", type=click.IntRange(0), default=0, help="People with at least N faces."
)
@format_option()
@fail_cleanly
def list_command(db: str, named: bool | None, min_faces: int, output_format: str) -> None:
    """List people with their face, photo and source counts."""
    from ..people.edit import list_people

    found = list_people(db, named=named, min_faces=min_faces)
    columns = ["id", "name", "faces", "photos", "confirmed", "folder", "suggested"]
    _echo_records([vars(p) for p in found], columns, output_format)


alias(people_group, list_command, "list-people")  # facevec.people.list_people


@people_group.command(name="show")
@click.argument("person")
@db_option()
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False),
    default=None,
    help="Contact sheet PNG to write [default: person-<id>.png in the current folder].",
)
@click.option("--no-sheet", is_flag=True, help="Write no contact sheet.")
@format_option()
@fail_cleanly
def show_command(
    db: str, person: str, sheet: str | None, no_sheet: bool, output_format: str
) -> None:
    """Show PERSON's faces and write their contact sheet (a PNG of the face crops)."""
    from ..people.edit import show

    view = show(db, person, sheet=None if no_sheet else (sheet or True))
    p = view.person
    columns = ["face_id", "img_name", "face_index", "source", "score"]
    if output_format == "table":
        echo(
            f"{printable(p.label)} (id {p.id}): {p.faces} faces in {p.photos} photos; "
            f"{p.confirmed} confirmed, {p.folder} from folders, {p.suggested} suggested"
        )
    _echo_records([vars(f) for f in view.faces], columns, output_format)
    if view.sheet is not None:  # where it went (JSON and CSV: on stderr)
        where = printable(os.path.abspath(view.sheet))
        echo(f"contact sheet: {where}", err=output_format != "table")


@people_group.command(name="name")
@click.argument("person")
@click.argument("new_name")
@db_option()
@fail_cleanly
def name_command(person: str, new_name: str, db: str) -> None:
    """Name PERSON (or rename them) NEW_NAME."""
    from ..people.edit import name

    _echo_change(name(db, person, new_name), db)


@people_group.command(name="merge")
@click.argument("persons", nargs=-1, required=True)
@click.option("--into", "target", required=True, help="The person they are.")
@db_option()
@click.option("--force", is_flag=True, help="Even if two of their faces share a photo.")
@fail_cleanly
def merge_command(persons: tuple[str, ...], target: str, db: str, force: bool) -> None:
    """Merge PERSONS into the person given by --into (undo: split, or people undo)."""
    from ..people.edit import merge

    _echo_change(merge(db, list(persons), target, force=force), db)


@people_group.command(name="split")
@click.argument("person")
@click.argument("face_ids", nargs=-1, required=True, type=int)
@click.option("--name", "new_name", default=None, help="Name of the new person.")
@db_option()
@fail_cleanly
def split_command(person: str, face_ids: tuple[int, ...], new_name: str | None, db: str) -> None:
    """Move FACE_IDS of PERSON to a new person (undo: merge, or people undo)."""
    from ..people.edit import split

    _echo_change(split(db, person, face_ids, new_name), db)


@people_group.command(name="move")
@click.argument("face_ids", nargs=-1, required=True, type=int)
@click.option("--to", "target", required=True, help="The person these faces are.")
@db_option()
@click.option("--force", is_flag=True, help="Even if the person is already in one of the photos.")
@fail_cleanly
def move_command(face_ids: tuple[int, ...], target: str, db: str, force: bool) -> None:
    """FACE_IDS are the person given by --to (confirmed)."""
    from ..people.edit import move

    _echo_change(move(db, face_ids, target, force=force), db)


@people_group.command(name="reject")
@click.argument("face_ids", nargs=-1, required=True, type=int)
@click.option("--person", default=None, help="Not this person [default: each face's own].")
@db_option()
@fail_cleanly
def reject_command(face_ids: tuple[int, ...], person: str | None, db: str) -> None:
    """FACE_IDS are not this person; clustering will not put them back (undo: move)."""
    from ..people.edit import reject

    _echo_change(reject(db, face_ids, person), db)


@people_group.command(name="confirm")
@click.argument("person")
@click.argument("face_ids", nargs=-1, type=int)
@db_option()
@fail_cleanly
def confirm_command(person: str, face_ids: tuple[int, ...], db: str) -> None:
    """Vouch for PERSON's faces (all, or FACE_IDS): confirmed faces never move."""
    from ..people.edit import confirm

    _echo_change(confirm(db, person, face_ids or None), db)


@people_group.command(name="undo")
@db_option()
@fail_cleanly
def undo_command(db: str) -> None:
    """Undo the latest change to people (a cluster run or an edit)."""
    from ..people.edit import undo

    echo(undo(db).summary)


@people_group.command(name="history")
@db_option()
@click.option("--limit", type=click.IntRange(1, MAX_ID), default=20, show_default=True)
@format_option()
@fail_cleanly
def history_command(db: str, limit: int, output_format: str) -> None:
    """The latest changes to people, newest first."""
    from ..people.edit import history

    rows = history(db, limit)
    columns = ["id", "action", "summary", "created_at", "undone_at"]
    _echo_records([dict(zip(columns, row, strict=True)) for row in rows], columns, output_format)
