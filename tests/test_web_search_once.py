"""A searched photo goes through the network once: POST /api/search and the search
page answer find and identify from one embedding; and every search answer names the
stored faces it left out (bad rows), as the Python API does."""

from __future__ import annotations

import importlib.util
import struct
import uuid

import numpy as np
import pytest
from pipeline_photos import FACES
from web_support import client_for

import facevec
import facevec.engine.embed as embed
from facevec.storage.database import open_database

PEOPLE = importlib.util.find_spec("facevec.people") is not None


def fresh_photo(name: str) -> bytes:
    """The photo with a comment segment: same pixels, a hash no cache has seen."""
    jpeg = (FACES / name).read_bytes()
    comment = uuid.uuid4().hex.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


@pytest.fixture
def embeddings(monkeypatch) -> list[str]:
    """The photos embedded from now on (decode, detect, embed), by name."""
    done: list[str] = []
    real = embed.decode_and_embed

    def counting(data, name="image", *args, **kwargs):
        done.append(name)
        return real(data, name, *args, **kwargs)

    monkeypatch.setattr(embed, "decode_and_embed", counting)
    return done


@pytest.mark.photo_set
def test_the_search_api_embeds_the_photo_once_for_find_and_identify(gallery_db, embeddings):
    with client_for(gallery_db, embed_workers=0) as http:
        photo = fresh_photo("img2.jpg")
        answer = http.post("/api/search", files={"photo": ("img2.jpg", photo, "image/jpeg")})
        assert answer.status_code == 200, answer.text
        assert len(embeddings) == 1, embeddings
        (face,) = answer.json()["faces"]
        upload = {"photo": ("img2.jpg", photo, "image/jpeg")}
        found = http.post("/api/find", files=upload, data={"k": 5, "similarity_search": True})
        assert len(embeddings) == 1  # the same photo again: from the cache
        expected = found.json()["faces"][0]["matches"]
        assert len(face["matches"]) == 5  # as the page: the 5 nearest, with their verdicts
        assert [(m["face_id"], m["verified"]) for m in face["matches"]] == [
            (m["face_id"], m["verified"]) for m in expected
        ]
        if PEOPLE:
            identified = facevec.people.identify(str(FACES / "img2.jpg"), gallery_db)
            assert face["identified"]["decision"] == identified.decision[0] == "matched"
            assert face["identified"]["person"] == identified.person[0] == "id01"
            assert all("person_id" in m for m in face["matches"])
            named = [m for m in face["matches"] if m["person"] == "id01"]
            assert named and all(isinstance(m["person_id"], int) for m in named)


@pytest.mark.photo_set
def test_the_search_page_embeds_the_photo_once(gallery_db, embeddings):
    with client_for(gallery_db, embed_workers=0) as http:
        photo = fresh_photo("couple.jpg")
        page = http.post("/search", files={"photo": ("couple.jpg", photo, "image/jpeg")})
        assert page.status_code == 200, page.text
        assert page.text.count('class="query-face"') == 2
        if PEOPLE:
            assert page.text.count('class="who-is') == 2
        assert embeddings == ["image bytes"], embeddings


def test_search_answers_name_the_stored_faces_they_left_out(tmp_path):
    db = tmp_path / "bad.db"
    vectors = np.random.default_rng(5).normal(size=(20, 16)).astype(np.float32)
    facevec.add(db, [f"/p{i}.jpg" for i in range(20)], vectors)
    with open_database(db) as database, database.transaction():
        (face_id,) = database.query("SELECT id FROM face_meta WHERE img_name = '/p9.jpg'")[0]
        database.execute(
            "UPDATE face_meta SET embedding = {p} WHERE id = {p}", (bytes(12), face_id)
        )
        database.execute("DELETE FROM face_embeddings WHERE face_id = {p}", (face_id,))
    with client_for(db) as http:
        query = {"vector": vectors[3].tolist(), "k": 3, "similarity_search": True}
        with pytest.warns(facevec.errors.SkippedFacesWarning):
            answer = http.post("/api/find/vector", json=query)
        assert answer.status_code == 200, answer.text
        (face,) = answer.json()["faces"]
        assert face["matches"][0]["img_name"] == "/p3.jpg"
        assert face["skipped"] == [
            {
                "face_id": face_id,
                "img_name": "/p9.jpg",
                "face_index": 0,
                "reason": "is 12 bytes, not 16 float32 values (64 bytes)",
            }
        ]
    sound = tmp_path / "sound.db"
    facevec.add(sound, [f"/p{i}.jpg" for i in range(20)], vectors)
    with client_for(sound) as http:
        assert http.post("/api/find/vector", json=query).json()["faces"][0]["skipped"] == []
