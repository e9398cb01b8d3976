"""The search parameters every strategy, database and load path reads the same way.

- ``k``: None (no limit), or a whole number from 1; any size is accepted and means
  "at most that many" (SQLite's integers stop at 2^63 - 1, so larger is capped there);
- ``threshold``: None or +infinity (no limit), else a number >= 0; NaN and negative
  numbers are refused (SQLite would bind NaN as NULL, silently "no limit"); typed
  (``threshold_from_text``), also "inf" and "calibrated" (the gallery's own);
- ids (faces, people) and offsets: whole numbers 0 .. ``MAX_ID``, what every
  database stores; a larger one names nothing;
- ``nprobe`` (IVF lists a query reads) and ``lists`` (IVF lists to train): None
  (the default), else a whole number from 1 (``lists``: from 0, an exact index).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InvalidParameterError

MAX_K = 2**63 - 1
# The largest id (face, person, edit) and offset a database stores: a signed 64-bit
# integer everywhere (SQLite's INTEGER, BIGINT on the servers). A larger one names nothing.
MAX_ID = 2**63 - 1
CALIBRATED = "calibrated"


def check_k(k: int | None) -> int | None:
    """k as every strategy takes it: None (no limit) or 1 .. MAX_K."""
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidParameterError(f"k must be a whole number, not {k!r}")
    if k < 1:
        raise InvalidParameterError(f"k must be at least 1, not {k}")
    return min(int(k), MAX_K)


def check_threshold(threshold: float | None) -> float | None:
    """A distance threshold: None or +infinity (no limit), else a number >= 0."""
    if threshold is None:
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"threshold must be a number, not {threshold!r}") from None
    if math.isnan(value):
        raise InvalidParameterError("threshold must be a number, found NaN")
    if value < 0:
        raise InvalidParameterError(f"threshold must be >= 0, found {threshold}")
    return None if math.isinf(value) else value


def threshold_from_text(text: str | float, calibrated: bool = True) -> float | str:
    """A threshold as a person types it (the command line, a web form): a number
    from 0, "inf" for no limit, or "calibrated" (the gallery's own) if `calibrated`."""
    if isinstance(text, str) and text.strip().lower() == CALIBRATED:
        if calibrated:
            return CALIBRATED
        raise InvalidParameterError("threshold must be a number here, not 'calibrated'")
    try:
        value = float(text)
    except (TypeError, ValueError):
        what = "a number or 'calibrated'" if calibrated else "a number"
        raise InvalidParameterError(f"threshold must be {what}, not {text!r}") from None
    check_threshold(value)
    return value


def is_stored_id(value: object) -> bool:
    """Whether `value` is a whole number a database can hold as an id (0 .. MAX_ID)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return False
    return 0 <= value <= MAX_ID


def check_count(name: str, value: int | None, low: int) -> int | None:
    """None, or a whole number >= low (nprobe: 1, lists: 0)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidParameterError(f"{name} must be a whole number >= {low}, not {value!r}")
    return int(value)


def check_nprobe(nprobe: int | None) -> int | None:
    return check_count("nprobe", nprobe, 1)
