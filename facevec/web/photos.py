"""Which files the server may read: only photos under the folders it was given.

A path is resolved (symlinks, ``..``) to its real path before it is compared with
the real paths of the roots, so neither ``..`` nor a symlink inside a root that
points elsewhere reaches a file outside them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from ..errors import AccessDeniedError, FolderNotFoundError
from ..ingest import IMAGE_EXTENSIONS, path_from_text
from ..ingest.walk import inside


def servable_photo(img_name: str, roots: Sequence[str]) -> str | None:
    """The real path of the photo `img_name` (its stored text form) if the server
    may send it, else None.

    It may if, symlinks resolved, it is a regular file with a photo's extension
    under one of `roots`.
    """
    if not roots or not img_name or "\x00" in img_name:
        return None
    try:
        path = path_from_text(img_name)
    except ValueError:  # not a text form facevec writes (e.g. \x2e): names no file
        return None
    if not os.path.isabs(path):
        return None
    real = os.path.realpath(path)
    if not inside(real, roots):
        return None
    if os.path.splitext(real)[1].lower() not in IMAGE_EXTENSIONS:
        return None
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except OSError:
        return None
    return real


def folder_to_index(folder: str, roots: Sequence[str]) -> str:
    """`folder` as the path to index, if it lies under one of the server's roots."""
    if not roots:
        raise AccessDeniedError(
            "this server indexes only folders under its photo folders, and it was given "
            "none: start facevec serve with --photos DIR"
        )
    if "\x00" in folder or not os.path.isabs(folder):
        raise AccessDeniedError(f"give the folder to index as an absolute path, not {folder!r}")
    if not inside(os.path.realpath(folder), roots):
        raise AccessDeniedError(
            f"{folder} is outside the photo folders this server was given (--photos)"
        )
    if not os.path.isdir(folder):
        raise FolderNotFoundError(f"{folder} is not a directory")
    return os.path.abspath(folder)
