"""The command group, the options commands share, and how errors are printed."""

from __future__ import annotations

import copy
import functools
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from ..engine.decode import DEFAULT_MAX_PIXELS
from ..errors import FacevecError
from ..ingest.photo import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_FACE
from ..metrics import FACE_METRICS
from ..options import DEFAULT_DETECTOR, DEFAULT_MODEL
from ..parameters import threshold_from_text
from .output import printable, server_message

FORMATS = ("table", "csv", "json")

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise on a command line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group()
@click.version_option(package_name="facevec")
def cli() -> None:
    """Face recognition on a relational database.

    Index a folder of photos into face embeddings in SQLite, then find a face
    in it or verify two photos.
    """


def db_option(required: bool = True) -> Callable:
    return click.option(
        "--db",
        "db",
        required=required,
        type=click.Path(dir_okay=False),
        help="SQLite database file, or a postgresql://, mysql:// or mariadb:// URL.",
    )


def model_option(default: Any = DEFAULT_MODEL) -> Callable:
    return click.option(
        "--model",
        "model_name",
        default=default,
        show_default=default is not None,
        help="deepface recognition model (e.g. Dlib, Facenet, ArcFace).",
    )


def detector_option(default: Any = DEFAULT_DETECTOR) -> Callable:
    return click.option(
        "--detector",
        "detector_backend",
        default=default,
        show_default=default is not None,
        help="deepface face detector (e.g. dlib, mtcnn, retinaface, skip).",
    )


def metric_option() -> Callable:
    return click.option(
        "--metric",
        "distance_metric",
        type=click.Choice(FACE_METRICS),
        default="euclidean",
        show_default=True,
        help="Distance metric; deepface's threshold for the model applies.",
    )


def format_option(choices=FORMATS, default: str = "table") -> Callable:  # type: ignore[no-untyped-def]
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(choices),
        default=default,
        show_default=True,
        help="Output format.",
    )


def fail_cleanly(function: Callable) -> Callable:
    """Print facevec's errors as one line and exit 1, without a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (FacevecError, FileNotFoundError, NotADirectoryError) as err:
            raise click.ClickException(_as_options(printable(err))) from err
        except _database_errors() as err:
            raise click.ClickException(printable(f"database error: {server_message(err)}")) from err

    return wrapper


# A library message names Python arguments (strategy='client'); the CLI's options.
_PYTHON_STRATEGY = re.compile(r"\bstrategy='(\w+)'")


def _as_options(message: str) -> str:
    return _PYTHON_STRATEGY.sub(r"--strategy \1", message)


def _database_errors() -> tuple[type[BaseException], ...]:
    """The base error classes of the database drivers loaded in this process."""
    names = ("sqlite3", "pysqlite3.dbapi2", "psycopg", "pymysql")
    return tuple(sys.modules[n].Error for n in names if n in sys.modules)


class ThresholdParam(click.ParamType):
    """A distance threshold: a number from 0 (inf: no limit), or "calibrated" (the
    gallery's own) where `calibrated` allows it; NaN and negatives are refused, as
    the library refuses them."""

    def __init__(self, calibrated: bool = True) -> None:
        self.calibrated = calibrated
        self.name = "NUMBER|calibrated" if calibrated else "NUMBER"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return value
        try:
            return threshold_from_text(value, calibrated=self.calibrated)
        except FacevecError as err:
            self.fail(printable(err), param, ctx)


THRESHOLD = ThresholdParam()
NUMBER_THRESHOLD = ThresholdParam(calibrated=False)


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange without NaN and infinities (a NaN passes every bound)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{printable(value)} is not a finite number", param, ctx)
        return number


_FACE_FILTERS = (
    click.option(
        "--exact",
        is_flag=True,
        help="deepface's own detection: vectors equal DeepFace.represent's, several times slower.",
    ),
    click.option(
        "--max-pixels",
        type=click.IntRange(1),
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Larger photos are not decoded (an error in the ledger).",
    ),
    click.option(
        "--min-face",
        type=click.IntRange(0),
        default=DEFAULT_MIN_FACE,
        show_default=True,
        help="Faces narrower or shorter than this many pixels are counted, not stored.",
    ),
    click.option(
        "--min-sharpness",
        type=FiniteFloatRange(0),
        default=0.0,
        show_default=True,
        help="Faces blurrier than this (variance of the Laplacian) are counted, not stored.",
    ),
    click.option(
        "--min-confidence",
        type=click.FloatRange(0, 1),
        default=None,
        help="Faces the detector is less sure of are counted, not stored "
        f"[default: {DEFAULT_MIN_CONFIDENCE['dlib']:g} for dlib, 0 for the other detectors].",
    ),
)


#: Photos per committed batch, as index and watch write them.
batch_size_option = click.option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="Photos per committed batch.",
)

#: Processes that embed photos, as index and watch run them.
workers_option = click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Processes that embed photos (watch starts them to catch up, or when many photos "
    "change at once) [default: one per core].",
)


def face_filter_options(command: Callable, max_pixels: bool = True) -> Callable:
    """The options of which photos are decoded and which faces are stored, shared by
    index and watch: --exact, --max-pixels, --min-face, --min-sharpness, --min-confidence
    (all but --max-pixels without `max_pixels`: serve has its own)."""
    for option in reversed(_FACE_FILTERS):
        if max_pixels or option is not _FACE_FILTERS[1]:
            command = option(command)
    return command


def alias(group: click.Group, command: click.Command, name: str) -> None:
    """`name` runs `command` too: the Python API's name for the same verb, so the
    two read alike (not listed in --help)."""
    copied = copy.copy(command)
    copied.name, copied.hidden = name, True
    group.add_command(copied, name)
