"""Moving a gallery to and from Parquet: export, import."""

from __future__ import annotations

import click

from .main import alias, cli, db_option, fail_cleanly
from .output import echo, printable

parquet_folder = click.option(
    "--parquet",
    "folder",
    required=True,
    type=click.Path(),
    help="Folder of Parquet files (one row per face).",
)


@cli.command(name="export")
@parquet_folder
@db_option()
@click.option(
    "--rows-per-file",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(1),
    help="Faces per Parquet file.",
)
@click.option("--overwrite", is_flag=True, help="Replace the Parquet files already in the folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@fail_cleanly
def export_command(folder: str, db: str, rows_per_file: int, overwrite: bool, quiet: bool) -> None:
    """Write the gallery in --db as Parquet files in --parquet, one row per face.

    The embedding is a fixed-size float32 list; the model and dimensions are in
    each file's metadata. Spark, DuckDB and pandas read the folder as it is. The
    people (names, assignments, rejections, calibration; not the undo history)
    go to _people/people.parquet in the folder.
    """
    from pathlib import Path

    from ..transfer import export_parquet

    existing = len(list(Path(folder).glob("*.parquet"))) if Path(folder).is_dir() else 0
    if existing and not overwrite:
        raise click.ClickException(
            f"{printable(folder)} already holds {_count(existing, 'Parquet file')}; "
            "choose an empty folder or add --overwrite to replace them"
        )
    written = export_parquet(
        db, folder, rows_per_file=rows_per_file, overwrite=overwrite, progress=not quiet
    )
    echo(
        f"exported {_count(written['faces'], 'face')} to {_count(written['files'], 'file')} "
        f"in {folder}"
        + (f" and {_count(written['people'], 'person')}" if written["people"] else "")
    )


def _count(n: int, noun: str) -> str:
    plural = "people" if noun == "person" else f"{noun}s"
    return f"{n} {noun}" if n == 1 else f"{n} {plural}"


@cli.command(name="import")
@parquet_folder
@db_option()
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Model of the vectors, for Parquet files that do not say it.",
)
@click.option(
    "--no-people",
    "no_people",
    is_flag=True,
    help="Import the faces only, into a --db that has people of its own.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@fail_cleanly
def import_command(
    folder: str, db: str, model_name: str | None, no_people: bool, quiet: bool
) -> None:
    """Store the faces of a Parquet gallery (--parquet) in --db, without re-embedding.

    Reads facevec's export, or any Parquet with columns img_name, face_index and
    embedding. One transaction: an error leaves --db as it was; rerunning replaces
    the faces already imported instead of duplicating them. The people of an
    export (_people/people.parquet) come along; a --db holding other people is
    refused (--no-people leaves them out).
    """
    from ..transfer import import_parquet

    imported = import_parquet(
        folder, db, model_name=model_name, progress=not quiet, people=not no_people
    )
    replaced = imported["replaced"]
    echo(
        f"imported {imported['faces']} faces"
        + (f" ({replaced} of them replaced faces already stored)" if replaced else "")
        + (f" and {imported['people']} people" if imported["people"] else "")
    )


alias(cli, export_command, "export-parquet")  # facevec.export_parquet
alias(cli, import_command, "import-parquet")  # facevec.import_parquet
