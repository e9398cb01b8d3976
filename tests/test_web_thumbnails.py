"""Face and photo thumbnails made on the server: the face's box cut from its photo
and scaled down, the photo scaled down; cached (ETag, Cache-Control, 304); only
photos the server shows (a symlink out of --photos is not followed); a face with no
photo to cut from falls back to its stored crop; a bad id is a 404, never a 500."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from pipeline_photos import FACES
from web_support import client_for

import facevec
from facevec.web import api as web_api
from facevec.web import thumbnails

pytestmark = pytest.mark.photo_set


def image_of(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def a_face(http) -> dict:
    """A face of a photo with two faces (so the box matters), as /api/faces/{id} says."""
    found = http.post("/api/find", files={"photo": ("c.jpg", (FACES / "couple.jpg").read_bytes())})
    face_id = found.json()["faces"][1]["matches"][0]["face_id"]
    return http.get(f"/api/faces/{face_id}").json()


def reference_crop(path, box, size):
    """The same square around the box, cut from the fully decoded photo by Pillow."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    left, top, right, bottom = thumbnails.square_around(box, *image.size)
    return image.crop((left, top, right, bottom)).resize((size, size))


def test_a_face_thumbnail_is_its_box_cut_from_its_photo_and_cached(gallery_db, gallery):
    with client_for(gallery_db, photos=[gallery, FACES]) as http:
        face = a_face(http)
        assert face["thumbnail_url"] == f"/api/faces/{face['face_id']}/thumbnail.jpg"
        answer = http.get(face["thumbnail_url"])
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/jpeg"
        assert answer.headers["cache-control"] == "max-age=86400"
        tag = answer.headers["etag"]
        shown = image_of(answer.content)
        assert shown.size == (160, 160)
        box = tuple(face["box"][key] for key in "xywh")
        assert http.get(face["photo_url"]).status_code == 200  # served: under --photos
        expected = reference_crop(face["img_name"], box, 160)
        difference = np.abs(np.asarray(shown, float) - np.asarray(expected, float)).mean()
        assert difference < 12, difference  # the same region (JPEG and draft scaling aside)
        other = reference_crop(face["img_name"], (0, 0, box[2], box[3]), 160)
        assert np.abs(np.asarray(shown, float) - np.asarray(other, float)).mean() > difference

        # The browser's copy is current: 304, no body; another size is another picture.
        again = http.get(face["thumbnail_url"], headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        small = http.get(face["thumbnail_url"] + "?size=64")
        assert image_of(small.content).size == (64, 64) and small.headers["etag"] != tag

        # The photo, scaled down on its longest side.
        photo = http.get(f"/api/faces/{face['face_id']}/photo.jpg?size=300")
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        from PIL import Image

        with Image.open(face["img_name"]) as full:
            width, height = full.size
        scaled = image_of(photo.content).size
        assert max(scaled) == 300
        assert abs(scaled[0] / scaled[1] - width / height) < 0.02


def test_the_server_keeps_the_latest_thumbnails_and_a_changed_photo_is_a_new_one(
    tmp_path, monkeypatch
):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(FACES / "img2.jpg", folder / "img2.jpg")
    db = tmp_path / "g.db"
    facevec.index(folder, db, progress=False)
    made = []
    real = web_api.render_thumbnail
    monkeypatch.setattr(
        web_api, "render_thumbnail", lambda *a, **k: made.append(1) or real(*a, **k)
    )
    with client_for(db, photos=[folder]) as http:
        face_id = int(facevec.find(str(folder / "img2.jpg"), db)[0].face_id[0])
        url = f"/api/faces/{face_id}/thumbnail.jpg"
        first = http.get(url)
        assert first.status_code == 200 and len(made) == 1
        assert http.get(url).content == first.content and len(made) == 1  # from memory
        os.utime(folder / "img2.jpg", ns=(1, 1))  # the file changed: another ETag
        changed = http.get(url)
        assert changed.headers["etag"] != first.headers["etag"] and len(made) == 2
        stale = http.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert stale.status_code == 200

        # A symlink in the photo folder to a file outside it: not read, the stored crop.
        outside = tmp_path / "outside.jpg"
        shutil.copy(FACES / "img2.jpg", outside)
        (folder / "img2.jpg").unlink()
        (folder / "img2.jpg").symlink_to(outside)
        sent = http.get(url, follow_redirects=False)
        assert sent.status_code == 307
        assert sent.headers["location"] == f"/api/faces/{face_id}/crop.png?placeholder=true"
        assert http.get(url).content[:4] == b"\x89PNG"  # the crop the model saw
        photo = http.get(f"/api/faces/{face_id}/photo.jpg")
        assert photo.status_code == 404 and photo.json()["error"] == "NotStoredError"
        assert len(made) == 2


def test_thumbnails_of_faces_not_stored_or_not_shown(gallery_db):
    with client_for(gallery_db) as http:  # no --photos: no photo is shown
        for kind in ("thumbnail.jpg", "photo.jpg"):
            missing = http.get(f"/api/faces/987654321/{kind}")
            assert missing.status_code == 404 and missing.json()["error"] == "NotStoredError"
            assert http.get(f"/api/faces/-1/{kind}").status_code == 422
            assert http.get(f"/api/faces/abc/{kind}").status_code == 422
        assert http.get("/api/faces/1/thumbnail.jpg?size=4000").status_code == 422
        assert http.get("/api/faces/1/thumbnail.jpg?size=nan").status_code == 422
        sent = http.get("/api/faces/1/thumbnail.jpg", follow_redirects=False)
        assert sent.status_code == 307 and "/crop.png" in sent.headers["location"]
        assert http.get("/api/faces/1/photo.jpg").status_code == 404


def test_an_exif_turned_photo_gives_the_face_upright(tmp_path):
    from PIL import Image

    with Image.open(FACES / "img2.jpg") as opened:
        upright = opened.convert("RGB")
    width, height = upright.size
    upright.save(tmp_path / "upright.jpg", quality=95)
    # The pixels stored turned a quarter, the EXIF tag saying to turn them back.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to show
    upright.transpose(Image.Transpose.ROTATE_90).save(
        tmp_path / "turned.jpg", quality=95, exif=exif
    )
    box = (width // 4, height // 4, width // 3, height // 3)
    made = [
        image_of(thumbnails.render(thumbnails.Region(str(tmp_path / name), box, 96), 10**8))
        for name in ("upright.jpg", "turned.jpg")
    ]
    difference = np.abs(np.asarray(made[0], float) - np.asarray(made[1], float)).mean()
    assert made[0].size == made[1].size == (96, 96) and difference < 8, difference
    # Over the pixel limit, or not a photo: nothing (the endpoint falls back).
    assert thumbnails.render(thumbnails.Region(str(tmp_path / "upright.jpg"), box, 96), 100) is None
    (tmp_path / "text.jpg").write_text("not a photo")
    assert thumbnails.render(thumbnails.Region(str(tmp_path / "text.jpg"), box, 96), 10**8) is None
