"""The types of the numbers routes take: every one bounded, so that no value a
client sends reaches a database it cannot be stored in (SQLite refuses an integer
of 2^63 or more with OverflowError; the servers compare it as a decimal).

An out-of-range value is a 422 naming the parameter and its bounds, as any other
invalid parameter; ``tests/test_web_hostile.py`` sends such values to every route.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Form, Path, Query

from ..parameters import MAX_ID, threshold_from_text

# Pages of a listing: a page number no gallery reaches, whose offset (page x page
# size) stays far inside a 64-bit integer.
MAX_PAGE_NUMBER = 2**31
# Processes an index job may start: the server's cores (a client must not fork the
# server into the ground).
MAX_WORKERS = max(1, os.cpu_count() or 1)

FaceId = Annotated[int, Path(ge=0, le=MAX_ID, description="A stored face's id.")]
PersonId = Annotated[int, Path(ge=0, le=MAX_ID, description="A person's id.")]
PageNumber = Annotated[int, Query(ge=1, le=MAX_PAGE_NUMBER, description="From 1.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip.")]
Count = Annotated[int, Query(ge=0, le=MAX_ID)]

THRESHOLD_HELP = (
    "Override the threshold: a number from 0 (inf: no limit), or 'calibrated' "
    "(the gallery's own, from facevec calibrate)."
)


def threshold_form(description: str = THRESHOLD_HELP) -> Any:
    """A threshold form field: text, read as the command line reads --threshold."""
    return Form(None, description=description, examples=["0.6", "inf", "calibrated"])


def threshold_of(text: str | None) -> float | str | None:
    """The threshold a form field gives (None: the default); InvalidParameterError
    (400) for what the command line would refuse."""
    if text is None or not text.strip():
        return None
    return threshold_from_text(text)


def person_ref(text: str) -> int | str:
    """A person in a URL path: digits are an id (never a name, so a person named "7"
    is not mistaken for person 7); other text is a name."""
    return int(text) if text.isascii() and text.isdigit() else text
