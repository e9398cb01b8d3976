"""The photos under a folder, and the folders that could not be listed."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..engine.decode import AVIF_EXTENSIONS, HEIF_EXTENSIONS, RAW_EXTENSIONS
from .names import path_to_text

# Files with other extensions (README.md, labels.csv, .DS_Store...) are not photos
# and are not looked at; a file named like a photo always gets a ledger row.
IMAGE_EXTENSIONS = (
    frozenset(
        {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".jp2", ".ppm", ".pgm"}
    )
    | HEIF_EXTENSIONS
    | AVIF_EXTENSIONS
    | RAW_EXTENSIONS
)


@dataclass
class Walk:
    """Photo paths under a folder (sorted), and each folder that could not be listed
    (stored text form -> reason): nothing under those was seen."""

    folder: str
    unlisted: dict[str, str] = field(default_factory=dict)

    def photos(self) -> Iterator[str]:
        def failed(err: OSError) -> None:
            where = err.filename if err.filename is not None else self.folder
            self.unlisted[path_to_text(where)] = err.strerror or str(err)

        for root, dirs, files in os.walk(self.folder, onerror=failed):
            dirs.sort()
            for name in sorted(files):
                if (
                    not name.startswith(".")
                    and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                ):
                    yield os.path.join(root, name)

    def saw(self, text_path: str) -> bool:
        """False for a path under a folder that could not be listed."""
        return not any(text_path.startswith(folder.rstrip("/") + "/") for folder in self.unlisted)


def readable(path: str, within: Sequence[str] | None) -> str:
    """The path to open for the photo `path`: itself, or with `within` (real paths)
    its real path; OSError for a link (of the file or a folder) leading out of them."""
    if within is None:
        return path
    real = os.path.realpath(path)
    if not inside(real, within):
        raise OSError(errno.EACCES, "it links outside the folders this run may read")
    return real


def folder_spellings(folder: str | os.PathLike[str]) -> list[str]:
    """How a folder is stored, best first: its canonical form (absolute, symlinks and
    '.', '..' and '//' resolved, so //abs/folder, /abs/./folder and a link to it
    are one folder, whose photos are indexed once), then, where it differs, the
    absolute form earlier versions stored, which a gallery that holds it keeps."""
    real = os.path.realpath(os.fspath(folder))
    absolute = os.path.abspath(os.fspath(folder))
    if absolute.startswith("//") and not absolute.startswith("///"):
        absolute = absolute[1:]  # POSIX leaves '//' to the system: Linux and macOS read '/'
    return [real] if absolute == real else [real, absolute]


def inside(real: str, roots: Sequence[str]) -> bool:
    """Whether the real path `real` is one of the real paths `roots` or under one."""
    for root in roots:
        try:
            if os.path.commonpath([real, root]) == root:
                return True
        except ValueError:  # different drives (Windows)
            continue
    return False


def identity_of(path: str, folder: str) -> str | None:
    """The person folder in the layout gallery/<person>/<photo>; None at top level."""
    parent = os.path.relpath(os.path.dirname(path), folder)
    return None if parent in (".", "") else path_to_text(os.path.basename(parent))
