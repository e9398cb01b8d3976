"""The test photos: the repository's examples/, and the larger set.

examples/ (ten small photos, credited in examples/README.md) is in every clone; the
tests of tests/test_examples_pipeline.py run the whole pipeline on it.

The larger set is 55 photos of deepface's unit-test data set (MIT licence,
https://github.com/serengil/deepface, folder tests/unit/dataset), listed with their
identities and checksums in tests/photo_set.csv. The tests look for them in
../shared/faces beside the checkout, or in the folder FACEVEC_FACES names (a clone of
deepface: FACEVEC_FACES=../deepface/tests/unit/dataset). Without them, the tests that
need them (marked ``photo_set``, from the fixtures they use) skip and say why.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# absolute: galleries are made of symlinks to these photos
FACES = Path(os.environ.get("FACEVEC_FACES") or ROOT.parent / "shared" / "faces").absolute()
PHOTO_SET = ROOT / "tests" / "photo_set.csv"
WHERE = (
    "they are deepface's MIT-licensed test set (github.com/serengil/deepface, folder "
    "tests/unit/dataset, the files tests/photo_set.csv lists); put them in ../shared/faces "
    "or set FACEVEC_FACES to their folder"
)

with open(PHOTO_SET, newline="") as _handle:
    _ROWS = list(csv.DictReader(_handle))
#: The photos of the larger set, by name, and the identities of those labelled.
PHOTO_NAMES = tuple(row["file"] for row in _ROWS)
LABELS = {row["file"]: row["identity"] for row in _ROWS if row["identity"]}

# The gallery: img1's seven same-identity photos, one photo each of four other
# labelled people, two multi-face photos and the WebP named .jpg. (img67.jpg's second
# detection, a background patch, is under the default confidence floor.)
GALLERY_LAYOUT = {
    "id01": [
        "img1.jpg",
        "img2.jpg",
        "img4.jpg",
        "img5.jpg",
        "img6.jpg",
        "img7.jpg",
        "img10.jpg",
        "img11.jpg",
    ],
    "id02": ["img12.jpg"],
    "id03": ["img8.jpg"],
    "id04": ["img22.jpg"],
    "id05": ["img25.jpg"],
    "": ["couple.jpg", "selfie-many-people.jpg", "img47.jpg"],
}
GALLERY_FACES = {"couple.jpg": 2, "selfie-many-people.jpg": 4}


def check_photo_set(folder: Path) -> str | None:
    """None when `folder` holds the larger set as tests/photo_set.csv lists it, else why not."""
    if not folder.is_dir():
        return f"the larger test photos are not at {folder}: {WHERE}"
    for row in _ROWS:
        path = folder / row["file"]
        if not path.is_file():
            return f"the larger test photos lack {row['file']} in {folder}: {WHERE}"
        if hashlib.sha256(path.read_bytes()).hexdigest() != row["sha256"]:
            return f"{path} is not the photo tests/photo_set.csv lists: {WHERE}"
    return None


@functools.cache
def why_no_photo_set() -> str | None:
    """check_photo_set(FACES), once per run."""
    return check_photo_set(FACES)


def photo(name: str) -> str:
    return str(FACES / name)
