"""Everything the command line prints goes through here, terminal-safe.

File, folder and person names come from the photos' owners, and a name may hold
control characters: ``Evil\\x1b]0;PWNED\\x07`` printed raw would retitle the
terminal or recolour it. Every printer of ``facevec.cli`` therefore prints with
``echo`` (text, tables, CSV) or ``echo_json`` (JSON), never ``click.echo`` itself
(``tests/test_cli_output.py`` checks): control characters (C0, DEL, C1) and the
bidirectional overrides are written as ``\\xHH`` / ``\\uHHHH``, the form file names
are stored in. Tables escape each cell (``printable_frame``) before they are laid
out, so columns stay aligned and a newline in a name stays in its cell.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from typing import Any

import click

_CONTROLS = (*range(0x20), *range(0x7F, 0xA0))
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))

# Control characters (C0, DEL, C1) and bidirectional overrides would be obeyed by the
# terminal: they are printed escaped.
_UNPRINTABLE = {
    **{code: f"\\x{code:02x}" for code in _CONTROLS},
    **{code: f"\\u{code:04x}" for code in _BIDI},
}
_UNPRINTABLE_BUT_NEWLINE = {code: text for code, text in _UNPRINTABLE.items() if code != 0x0A}
# In JSON, ensure_ascii leaves only DEL raw (it escapes C0, C1 and every non-ASCII).
_JSON_UNSAFE = {0x7F: "\\u007f"}


def printable(text: object) -> str:
    """`text` safe to print on a terminal: control characters escaped as \\xHH."""
    return str(text).translate(_UNPRINTABLE)


def server_message(error: BaseException) -> str:
    """A database driver's error on one line: its message, and its DETAIL and HINT
    lines (PostgreSQL's), not the statement excerpt and caret under it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = lines[:1] + [line for line in lines[1:] if line.startswith(("DETAIL:", "HINT:"))]
    return "; ".join(kept)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """facevec's own warnings (facevec.errors: skipped photos, skipped faces) printed
    as one "warning: ..." line each on stderr, not as Python shows a warning (file,
    line and source); any other warning goes on as it came."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            for warning in caught:
                if warning.category.__module__ == "facevec.errors":
                    click.echo(f"warning: {printable(warning.message)}", err=True)
                else:
                    warnings.warn_explicit(
                        warning.message, warning.category, warning.filename, warning.lineno
                    )


def printable_lines(text: object) -> str:
    """`text` safe to print, its lines kept: every control character but the newline
    escaped."""
    return str(text).translate(_UNPRINTABLE_BUT_NEWLINE)


def printable_frame(frame: Any) -> Any:
    """A copy of a pandas DataFrame whose text cells are `printable`."""
    shown = frame.copy()
    for column in shown.columns:
        if shown[column].dtype == object:
            shown[column] = shown[column].map(lambda v: printable(v) if isinstance(v, str) else v)
    return shown


def echo(message: object = "", err: bool = False, nl: bool = True) -> None:
    """Print text for a person: lines kept, every other control character escaped."""
    click.echo(printable_lines(message), err=err, nl=nl)


def echo_json(text: str) -> None:
    """Print JSON text made with ensure_ascii (json.dumps', pandas' to_json default)."""
    click.echo(text.translate(_JSON_UNSAFE))


def echo_frame(frame: Any, output_format: str, empty: str | None = None) -> None:
    """A DataFrame as a table, CSV or JSON records; `empty` replaces an empty table."""
    if output_format == "json":
        # Through json: pandas writes "/" as "\/", which JSON allows and nobody wants.
        echo_json(json.dumps(json.loads(frame.to_json(orient="records")), indent=2))
    elif output_format == "csv":
        echo(printable_frame(frame).to_csv(index=False), nl=False)
    elif frame.empty and empty is not None:
        echo(empty)
    else:
        echo(printable_frame(frame).to_string(index=False))
