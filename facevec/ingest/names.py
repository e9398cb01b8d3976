"""File names as text: every name the operating system can hold gets one exact,
reversible text form, the one stored in ``img_name``, ``identity`` and the ledger.

A POSIX file name is bytes; the databases store text. A name that is valid UTF-8
is stored as it is. A byte that is not part of valid UTF-8 is written ``\\xHH``
(two lowercase hex digits), and a backslash ``\\\\`` so that the form stays
reversible: ``b"Jos\\xe9.jpg"`` (Latin-1) is stored as ``Jos\\xe9.jpg`` and
``a\\b.jpg`` as ``a\\\\b.jpg``. ``path_from_text`` gives the file's path back.
On Windows, where names are Unicode and the backslash is the separator, paths are
stored as they are.
"""

from __future__ import annotations

import os
import re

_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def path_to_text(path: str | bytes | os.PathLike) -> str:
    """The stored text form of a file path (see the module docstring)."""
    if os.sep == "\\":
        return os.fsdecode(path)
    raw = os.fsencode(path)
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    text = raw.decode("utf-8", "surrogateescape").replace("\\", "\\\\")
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in text)


def path_from_text(text: str) -> str:
    """The path (as os functions take it) of a stored text form."""
    if os.sep == "\\":
        return text

    def unescape(match: re.Match[str]) -> str:
        token = match.group(1)
        return "\\" if token == "\\" else chr(0xDC00 + int(token[1:], 16))

    raw = _ESCAPED.sub(unescape, text).encode("utf-8", "surrogateescape")
    return os.fsdecode(raw)
