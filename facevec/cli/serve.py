"""facevec serve: the gallery's web page and REST API."""

from __future__ import annotations

import os

import click

from .main import FiniteFloatRange, cli, db_option, fail_cleanly
from .output import echo
from .watch import print_status

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
    default=MAX_PIXELS,
    show_default=True,
    type=click.IntRange(1),
    help="Larger uploaded photos are refused (413) before they are decoded.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep the gallery in step with the --photos folders while serving: new, changed, "
    "moved and deleted photos are indexed or removed within seconds (as facevec watch, "
    "with the gallery's model and the default settings).",
)
@click.option(
    "--embed-workers",
    envvar="FACEVEC_EMBED_WORKERS",
    default=None,
    type=click.IntRange(0),
    help="Processes that decode and embed uploaded photos, each with the model loaded "
    "(searches by photo run side by side); 0: in the server's own process, one at a "
    "time. Default: one per core.",
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
    max_pixels: int,
    watch: bool,
    embed_workers: int | None,
) -> None:
    """Serve the gallery DB: a web page to search it and a REST API (/docs).

    Listens on 127.0.0.1 unless --host says otherwise. Reads are open to anyone
    who can reach the address; changes need --token.
    """
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
        max_pixels=max_pixels,
        host=host,
        allowed_hosts=allowed_hosts,
        watch=watch,
        on_watch_status=print_status,
        embed_workers=embed_workers,
    )
    echo(
        f"facevec serving {db} on http://{host}:{port}/ "
        f"({'changes need the token' if token else 'read-only'})",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


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
