"""The shared test photos and the gallery the pipeline tests index."""

from __future__ import annotations

import os
from pathlib import Path

FACES = Path(
    os.environ.get("FACEVEC_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces")
)
if not FACES.is_dir():  # the work tree may sit elsewhere than beside shared/
    FACES = Path("/work/shared/faces")

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


def photo(name: str) -> str:
    return str(FACES / name)
