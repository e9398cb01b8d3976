"""Contact sheets: a person's face crops in one PNG, to look at rather than read.

Each tile is the stored ``face_image`` (the aligned face the model saw), framed
by where the assignment came from (green: confirmed, blue: folder, orange:
suggested) and captioned with the face id and, for suggestions, the score.
Suggestions with the highest score (least like the rest) come first after the
faces people vouched for, so doubtful ones are the first to see.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

from ..storage.people import PersonFace

FRAME = {"confirmed": (46, 160, 67), "folder": (31, 119, 180), "suggested": (255, 127, 14)}
ORDER = {"confirmed": 0, "folder": 1, "suggested": 2}
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def sheet_order(faces: Sequence[PersonFace]) -> list[PersonFace]:
    return sorted(faces, key=lambda f: (ORDER[f.source], -(f.score or 0.0), f.face_id))


def contact_sheet(
    title: str,
    faces: Sequence[PersonFace],
    images: dict[int, bytes | None],
    path: str | os.PathLike[str],
    columns: int = 8,
    tile: int = 112,
) -> str:
    """Write the sheet to `path` (PNG); returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    faces = sheet_order(faces)
    columns = max(1, min(columns, len(faces) or 1))
    rows = max(1, math.ceil(len(faces) / columns))
    border, caption, header = 4, 16, 28
    cell_w, cell_h = tile + 2 * border, tile + 2 * border + caption
    sheet = Image.new("RGB", (columns * cell_w, header + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.text((6, 6), f"{title}: {len(faces)} faces", fill=INK, font=font)
    for position, face in enumerate(faces):
        left = (position % columns) * cell_w
        top = header + (position // columns) * cell_h
        draw.rectangle(
            (left, top, left + cell_w - 1, top + tile + 2 * border - 1), fill=FRAME[face.source]
        )
        crop = _crop(images.get(face.face_id), tile)
        if crop is None:
            draw.rectangle(
                (left + border, top + border, left + border + tile - 1, top + border + tile - 1),
                fill=(230, 230, 230),
            )
            draw.text((left + border + 6, top + border + tile // 2 - 6), "no image", fill=INK)
        else:
            sheet.paste(crop, (left + border, top + border))
        text = f"#{face.face_id}"
        if face.source == "suggested" and face.score is not None:
            text += f" {face.score:.2f}"
        draw.text((left + border, top + tile + 2 * border + 1), text, fill=INK, font=font)
    sheet.save(os.fspath(path), format="PNG")
    return os.fspath(path)


def _crop(data: bytes | None, tile: int):  # type: ignore[no-untyped-def]
    from PIL import Image, UnidentifiedImageError

    if not data:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError):
        return None
    image = image.convert("RGB")
    image.thumbnail((tile, tile))
    framed = Image.new("RGB", (tile, tile), BACKGROUND)
    framed.paste(image, ((tile - image.width) // 2, (tile - image.height) // 2))
    return framed
