"""facevec serve: the gallery's web page and REST API."""

from __future__ import annotations

import os
from typing import Any

import click

from ..engine.decode import DEFAULT_MAX_PIXELS
from .main import FiniteFloatRange, cli, db_option, fail_cleanly
from .output import echo
from .watch import print_status
from .watch_options import WATCH_SETTINGS, watch_settings, watch_settings_options

MAX_PIXELS = 40_000_000  # as facevec.web.config's, without importing the web stack


@cli.command(name="serve")
@db_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    envvar="FACEVEC_ALLOWED_HOSTS",
    help="Another name clients reach the server by (repeatable; *.DOMAIN for its "
    "subdomains). Requests naming any other host are refused (DNS rebinding); the "
    "listening address, and localhost on loopback, are always allowed. "
    "FACEVEC_ALLOWED_HOSTS takes several, separated by spaces.",
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--photos",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A folder whose photos the pages may show and the API may index (repeatable). "
    "Nothing outside these folders is ever sent.",
)
@click.option(
    "--token",
    envvar="FACEVEC_TOKEN",
    default=None,
    help="Token that allows changes (add, index, naming people); without it the server is "
    "read-only. Better given as FACEVEC_TOKEN: other users can read a command line.",
)
@click.option(
    "--max-upload-mb",
    default=20.0,
    show_default=True,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Largest request body accepted.",
)
@click.option(
    "--max-pixels",
    default=None,
    type=click.IntRange(1),
    help="Larger photos are not decoded: an upload is refused (413); with --watch, a "
    "photo in the folders gets an error in the ledger "
    f"[default: {MAX_PIXELS:,} for uploads, {DEFAULT_MAX_PIXELS:,} for watched photos].",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep the gallery in step with the --photos folders while serving: new, changed, "
    "moved and deleted photos are indexed or removed within seconds, as facevec watch "
    "does, with the settings below (GET /api/watch and the Status page say what it does).",
)
@watch_settings_options(max_pixels=False)
@click.option(
    "--embed-workers",
    envvar="FACEVEC_EMBED_WORKERS",
    default=None,
    type=click.IntRange(0),
    help="Processes that decode and embed uploaded photos, each with the model loaded "
    "(searches by photo run side by side); 0: in the server's own process, one at a "
    "time. Default: one per core.",
)
@click.option(
    "--knn-cache-mib",
    envvar="FACEVEC_KNN_CACHE_MIB",
    default=None,
    type=click.IntRange(0),
    help="MiB of knn index chunks the server keeps in memory for its searches (SQLite; "
    "0: none). Default: 1024, a million float32 faces; 10M need about 5,500.",
)
@fail_cleanly
def serve_command(
    db: str,
    host: str,
    allowed_hosts: tuple[str, ...],
    port: int,
    photos: tuple[str, ...],
    token: str | None,
    max_upload_mb: float,
    max_pixels: int | None,
    watch: bool,
    embed_workers: int | None,
    knn_cache_mib: int | None,
    **settings: Any,
) -> None:
    """Serve the gallery DB: a web page to search it and a REST API (/docs).

    Listens on 127.0.0.1 unless --host says otherwise. Reads are open to anyone
    who can reach the address; changes need --token. With --watch, the --photos
    folders are indexed as they change, with the settings facevec watch takes (the
    model and detector are the gallery's own unless given).
    """
    if not watch:
        _refuse_watch_settings_without_watch()
    try:
        import uvicorn

        from ..web import create_app
    except ImportError as err:
        raise click.ClickException(
            f"facevec serve needs the web extra ({err.name} is missing): pip install 'facevec[web]'"
        ) from err
    if photos:
        _new_gallery(db)
    app = create_app(
        db,
        token=token,
        photos=photos,
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_pixels=MAX_PIXELS if max_pixels is None else max_pixels,
        host=host,
        allowed_hosts=allowed_hosts,
        watch=watch,
        on_watch_status=print_status,
        embed_workers=embed_workers,
        knn_cache_bytes=None if knn_cache_mib is None else knn_cache_mib << 20,
        watch_options={
            **watch_settings(settings),
            "max_pixels": DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        },
    )
    echo(
        f"facevec serving {db} on http://{host}:{port}/ "
        f"({'changes need the token' if token else 'read-only'})",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


def _refuse_watch_settings_without_watch() -> None:
    """A watch setting given without --watch would be ignored: say so instead."""
    context = click.get_current_context()
    given = [
        param.opts[0]
        for param in context.command.params
        if param.name in WATCH_SETTINGS
        and param.name != "max_pixels"
        and context.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(f"{', '.join(given)} set how --watch indexes: add --watch")


def _new_gallery(db: str) -> None:
    """A SQLite file that does not exist yet becomes an empty gallery (with photo
    folders, the page's Status → Index fills it; its first run sets the model). A
    server URL is left alone: its database must exist, as for every command."""
    from ..storage import schema
    from ..storage.database import open_database
    from ..storage.urls import is_url

    if is_url(db) or os.path.exists(db):
        return
    with open_database(db) as database:
        schema.create_schema(database)
    echo(f"created an empty gallery at {db}: index the photos from the page (Status)", err=True)
