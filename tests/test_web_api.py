"""The REST API on the session's gallery, on SQLite, PostgreSQL and MariaDB.

Every answer is compared with the Python API's own on the same database; errors
carry the command line's message.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3

import numpy as np
import pytest
from backends import STRATEGIES
from pipeline_photos import FACES
from web_support import AUTH, client_for, png_bytes

import facevec


@pytest.fixture
def client(gallery_on, gallery):
    """(backend, db, client) of a server on the session's gallery, on each backend."""
    backend, db = gallery_on
    with client_for(db, photos=[gallery, FACES]) as test_client:
        yield backend, db, test_client


def upload(name: str, data: bytes | None = None) -> tuple[str, bytes, str]:
    return (name, data if data is not None else (FACES / name).read_bytes(), "image/jpeg")


def stored_vector(gallery_db, photo: str) -> np.ndarray:
    with sqlite3.connect(gallery_db) as conn:
        (blob,) = conn.execute(
            "SELECT embedding FROM face_meta WHERE img_name LIKE ?", (f"%/{photo}",)
        ).fetchone()
    return np.frombuffer(blob, dtype="<f4")


def test_find_by_photo_equals_facevec_find_with_every_strategy(client, photos):
    backend, db, http = client
    for strategy in STRATEGIES[backend]:
        response = http.post(
            "/api/find", files={"photo": upload("img1.jpg")}, data={"strategy": strategy}
        )
        assert response.status_code == 200, response.text
        (face,) = response.json()["faces"]
        (expected,) = facevec.find(photos("img1.jpg"), db, strategy=strategy)
        assert [m["face_id"] for m in face["matches"]] == list(expected.face_id)
        np.testing.assert_allclose(
            [m["distance"] for m in face["matches"]], expected.distance, atol=1e-6
        )
        assert face["matches"][0]["img_name"].endswith("/img1.jpg")
        assert face["matches"][0]["identity"] == "id01"
        assert all(m["verified"] for m in face["matches"])
        box = face["source"]
        assert box == {
            "x": int(expected.source_x[0]),
            "y": int(expected.source_y[0]),
            "w": int(expected.source_w[0]),
            "h": int(expected.source_h[0]),
        }


def test_find_options_k_threshold_metric_and_similarity_search(client, photos):
    backend, db, http = client
    data = {"k": "3", "metric": "cosine", "similarity_search": "true"}
    response = http.post("/api/find", files={"photo": upload("img2.jpg")}, data=data)
    (face,) = response.json()["faces"]
    (expected,) = facevec.find(
        photos("img2.jpg"), db, k=3, distance_metric="cosine", similarity_search=True
    )
    assert len(face["matches"]) == 3
    assert [m["face_id"] for m in face["matches"]] == list(expected.face_id)
    tight = http.post(
        "/api/find", files={"photo": upload("img2.jpg")}, data={"threshold": "0.0001"}
    )
    (face,) = tight.json()["faces"]
    assert [m["img_name"].rsplit("/", 1)[1] for m in face["matches"]] == ["img2.jpg"]


def test_multi_face_photo_gives_each_face_its_box_even_without_matches(client):
    _, _, http = client
    response = http.post(
        "/api/find", files={"photo": upload("selfie-many-people.jpg")}, data={"threshold": "0"}
    )
    faces = response.json()["faces"]
    assert len(faces) == 4
    assert all(face["source"]["w"] > 0 for face in faces)
    # Threshold 0 keeps only the photo's own faces (distance 0): each finds itself.
    assert [len(face["matches"]) for face in faces] == [1, 1, 1, 1]


def test_find_by_vector_on_every_strategy(client, gallery_db):
    backend, db, http = client
    vector = stored_vector(gallery_db, "img7.jpg")
    for strategy in STRATEGIES[backend]:
        response = http.post(
            "/api/find/vector",
            json={"vector": vector.tolist(), "k": 4, "strategy": strategy},
        )
        assert response.status_code == 200, response.text
        (face,) = response.json()["faces"]
        assert face["source"] == {"x": None, "y": None, "w": None, "h": None}
        (expected,) = facevec.find(vector, db, k=4, strategy=strategy)
        assert [m["face_id"] for m in face["matches"]] == list(expected.face_id)
        assert face["matches"][0]["img_name"].endswith("/img7.jpg")
        assert face["matches"][0]["distance"] == pytest.approx(0, abs=1e-6)


def test_verify_two_photos_equals_facevec_verify(client, photos):
    _, _, http = client
    response = http.post(
        "/api/verify", files={"photo1": upload("img1.jpg"), "photo2": upload("img2.jpg")}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    expected = facevec.verify(photos("img1.jpg"), photos("img2.jpg"))
    assert result["verified"] is True and expected["verified"] is True
    assert result["distance"] == pytest.approx(expected["distance"], abs=1e-9)
    assert result["model"] == "Dlib"
    assert result["facial_areas"] == json.loads(json.dumps(expected["facial_areas"]))
    different = http.post(
        "/api/verify", files={"photo1": upload("img1.jpg"), "photo2": upload("img8.jpg")}
    ).json()
    assert different["verified"] is False and different["distance"] > 0.6


def test_info_equals_facevec_info(client):
    _, db, http = client
    response = http.get("/api/info")
    assert response.status_code == 200
    assert response.json() == facevec.info(db)


def test_face_crop_and_location(client, gallery_db):
    _, db, http = client
    (frame,) = facevec.find(stored_vector(gallery_db, "img4.jpg"), db, k=1)
    face_id = int(frame.face_id[0])
    crop = http.get(f"/api/faces/{face_id}/crop.png")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
    assert crop.content.startswith(b"\x89PNG")
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(crop.content)).size == (150, 150)  # Dlib's input
    located = http.get(f"/api/faces/{face_id}").json()
    assert located["img_name"].endswith("/img4.jpg") and located["identity"] == "id01"
    assert located["photo_url"] == "/photos" + located["img_name"]
    photo = http.get(located["photo_url"])
    assert photo.status_code == 200 and photo.content == (FACES / "img4.jpg").read_bytes()
    missing = http.get("/api/faces/987654321/crop.png")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "NotStoredError",
        "detail": "the gallery holds no face 987654321",
    }


# Errors: 4xx with facevec's message, never a 500 ------------------------------------


def test_an_upload_that_is_not_an_image_is_422_with_the_pipelines_message(client):
    _, _, http = client
    response = http.post("/api/find", files={"photo": upload("notes.jpg", b"just some text")})
    assert response.status_code == 422
    assert response.json() == {
        "error": "NotAnImageError",
        "detail": "notes.jpg cannot be decoded as an image (not a known image format)",
    }
    empty = http.post("/api/find", files={"photo": upload("empty.jpg", b"")})
    assert empty.status_code == 422 and empty.json()["detail"] == "empty.jpg is empty (0 bytes)"
    truncated = (FACES / "img1.jpg").read_bytes()[:300]
    broken = http.post("/api/find", files={"photo": upload("cut.jpg", truncated)})
    assert broken.status_code == 422 and broken.json()["error"] == "NotAnImageError"


def test_a_photo_without_a_face_is_422(client):
    _, _, http = client
    response = http.post("/api/find", files={"photo": upload("sky.png", png_bytes(300, 200))})
    assert response.status_code == 422
    assert response.json() == {
        "error": "NoFaceError",
        "detail": "no face found in image bytes (detector dlib)",
    }


def test_wrong_model_is_422_naming_both(client, gallery_db):
    _, _, http = client
    vector = stored_vector(gallery_db, "img1.jpg")
    response = http.post("/api/find/vector", json={"vector": vector[:64].tolist()})
    assert response.status_code == 422
    assert response.json()["error"] == "ModelMismatchError"
    assert "holds 128-dimensional Dlib vectors" in response.json()["detail"]
    by_photo = http.post(
        "/api/find", files={"photo": upload("img1.jpg")}, data={"model_name": "Facenet"}
    )
    assert by_photo.status_code == 422
    assert re.search(r"holds Dlib vectors .*not Facenet", by_photo.json()["detail"])


def test_bad_parameters_are_400_with_facevecs_message(client, gallery_db):
    backend, _, http = client
    vector = stored_vector(gallery_db, "img1.jpg").tolist()

    def find(**query):
        return http.post("/api/find/vector", json={"vector": vector, **query})

    cases = [
        (
            {"metric": "manhattan"},
            "UnknownMetricError",
            "unknown distance metric 'manhattan'; choose one of: euclidean, cosine, euclidean_l2",
        ),
        (
            {"strategy": "magic"},
            "UnknownStrategyError",
            "unknown search strategy 'magic'; choose one of: extension, knn, relational, client",
        ),
        ({"k": 0}, "InvalidParameterError", "k must be at least 1, not 0"),
        ({"threshold": -1}, "InvalidParameterError", "threshold must be >= 0, found -1.0"),
    ]
    for query, error, message in cases:
        response = find(**query)
        assert response.status_code == 400, query
        assert response.json() == {"error": error, "detail": message}
    zeros = http.post("/api/find/vector", json={"vector": [0.0] * 128})
    assert zeros.status_code == 400 and zeros.json()["error"] == "InvalidVectorError"
    assert zeros.json()["detail"].startswith("the query embedding is all zeros")
    if backend != "sqlite":
        knn = find(strategy="knn")
        assert knn.status_code == 400
        assert "the knn strategy needs SQLite" in knn.json()["detail"]
    typed = find(k="many")
    assert typed.status_code == 422
    assert typed.json()["detail"].startswith("k: Input should be a valid integer")
    missing = http.post("/api/find", data={"k": "2"})
    assert missing.status_code == 422 and missing.json()["detail"].startswith("photo: ")


def test_openapi_documents_every_endpoint_and_the_bearer_token(client):
    _, _, http = client
    schema = http.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [
        ("/api/info", "get"),
        ("/api/find", "post"),
        ("/api/find/vector", "post"),
        ("/api/verify", "post"),
        ("/api/add", "post"),
        ("/api/index", "post"),
        ("/api/jobs/{job_id}", "get"),
        ("/api/jobs/{job_id}", "delete"),
        ("/api/ledger/problems", "get"),
        ("/api/faces/{face_id}/crop.png", "get"),
    ]:
        assert method in paths[path], path
    assert paths["/api/add"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/api/find"]["post"]
    assert "/search" not in paths and "/gallery" not in paths  # pages are not the API
    assert schema["components"]["schemas"]["Match"]["properties"]["distance"]["type"] == "number"


# Writes ------------------------------------------------------------------------------


def test_add_vectors_then_find_them(gallery_on, tmp_path):
    backend, _ = gallery_on
    from backends import fresh_database

    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, ["seed.jpg"], [np.ones(128, dtype=np.float32)])
        with client_for(db) as http:
            vectors = np.random.default_rng(7).normal(size=(3, 128)).astype(np.float32)
            response = http.post(
                "/api/add",
                json={
                    "img_names": ["a.jpg", "a.jpg", "b.jpg"],
                    "embeddings": vectors.tolist(),
                    "identities": ["ann", "ann", None],
                },
                headers=AUTH,
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"added": 3}
            found = http.post(
                "/api/find/vector", json={"vector": vectors[2].tolist(), "k": 1}
            ).json()
            match = found["faces"][0]["matches"][0]
            assert (match["img_name"], match["face_index"]) == ("b.jpg", 0)
            assert match["distance"] == pytest.approx(0, abs=1e-6)
            assert facevec.info(db)["faces"] == 4
            # Errors keep what is stored.
            ragged = http.post(
                "/api/add",
                json={"img_names": ["c", "d"], "embeddings": [[1.0] * 128, [1.0] * 5]},
                headers=AUTH,
            )
            assert ragged.status_code == 400 and ragged.json()["error"] == "VectorError"
            other = http.post(
                "/api/add",
                json={"img_names": ["c"], "embeddings": [[1.0] * 128], "model_name": "Facenet"},
                headers=AUTH,
            )
            assert other.status_code == 422 and "holds Dlib vectors" in other.json()["detail"]
            assert facevec.info(db)["faces"] == 4


def test_index_job_runs_in_the_background_and_the_ledger_names_its_problems(
    gallery_on, tmp_path, gallery_maker
):
    backend, _ = gallery_on
    from backends import fresh_database

    folder = gallery_maker(tmp_path / "photos", {"id01": ["img1.jpg"], "": ["img8.jpg"]})
    (folder / "notes.jpg").write_text("not a photo")
    (folder / "sky.png").write_bytes(png_bytes(300, 200))
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, ["seed.jpg"], [np.ones(128, dtype=np.float32)])
        with client_for(db, photos=[folder, FACES]) as http:
            started = http.post("/api/index", json={"folder": str(folder)}, headers=AUTH)
            assert started.status_code == 202, started.text
            job = started.json()
            assert started.headers["location"] == f"/api/jobs/{job['id']}"
            http.app.state.jobs.wait(job["id"], timeout=300)
            done = http.get(f"/api/jobs/{job['id']}").json()
            assert done["state"] == "done", done
            assert (done["done"], done["total"]) == (4, 4)
            report = done["report"]
            assert (report["indexed"], report["no_face"], report["not_image"]) == (2, 1, 1)
            assert http.get("/api/jobs").json()[0]["id"] == job["id"]
            problems = http.get("/api/ledger/problems").json()
            assert problems["total"] == 2
            why = {
                os.path.basename(f["path"]): (f["outcome"], f["message"]) for f in problems["files"]
            }
            assert why["notes.jpg"] == (
                "not_image",
                f"{folder / 'notes.jpg'} cannot be decoded as an image (not a known image format)",
            )
            assert why["sky.png"][0] == "no_face"
            assert facevec.info(db)["faces"] == 3
            found = http.post("/api/find", files={"photo": upload("img2.jpg")}).json()
            names = [m["img_name"] for m in found["faces"][0]["matches"]]
            assert names == [str(folder / "id01" / "img1.jpg")]


def test_index_refuses_folders_outside_the_photo_roots(gallery_db_copy, tmp_path, gallery):
    with client_for(gallery_db_copy, photos=[gallery]) as http:
        outside = http.post("/api/index", json={"folder": str(tmp_path)}, headers=AUTH)
        assert outside.status_code == 403
        assert outside.json()["error"] == "AccessDeniedError"
        sneaky = http.post("/api/index", json={"folder": f"{gallery}/../../.."}, headers=AUTH)
        assert sneaky.status_code == 403
        relative = http.post("/api/index", json={"folder": "photos"}, headers=AUTH)
        assert relative.status_code == 403
        missing = http.post("/api/index", json={"folder": f"{gallery}/nobody"}, headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"] == "FolderNotFoundError"
    with client_for(gallery_db_copy) as http:  # no --photos: nothing to index
        response = http.post("/api/index", json={"folder": str(gallery)}, headers=AUTH)
        assert response.status_code == 403 and "--photos" in response.json()["detail"]


def test_a_second_job_waits_for_the_first_and_cancel_keeps_finished_work(
    gallery_db_copy, tmp_path, gallery_maker, monkeypatch
):
    """Cancelling stops a run as Ctrl-C does; a rerun finishes it without duplicates."""
    import threading

    from facevec.web import jobs as web_jobs

    folder = gallery_maker(tmp_path / "photos", {"": ["img1.jpg", "img2.jpg", "img4.jpg"]})
    first_file_done = threading.Event()
    release = threading.Event()
    real_index = web_jobs.index

    def paused_index(*args, on_progress, **kwargs):
        def progress(done, total):
            if done == 1:
                first_file_done.set()
                release.wait(60)
            on_progress(done, total)

        kwargs["batch_size"] = 1  # each photo committed on its own
        return real_index(*args, on_progress=progress, **kwargs)

    monkeypatch.setattr(web_jobs, "index", paused_index)
    with client_for(gallery_db_copy, photos=[folder, FACES]) as http:
        job = http.post("/api/index", json={"folder": str(folder)}, headers=AUTH).json()
        assert first_file_done.wait(120)
        busy = http.post("/api/index", json={"folder": str(folder)}, headers=AUTH)
        assert busy.status_code == 409 and busy.json()["error"] == "JobRunningError"
        running = http.get(f"/api/jobs/{job['id']}").json()
        assert running["state"] == "running" and running["total"] == 3
        assert http.delete(f"/api/jobs/{job['id']}").status_code == 401
        cancelled = http.delete(f"/api/jobs/{job['id']}", headers=AUTH)
        assert cancelled.status_code == 200
        release.set()
        http.app.state.jobs.wait(job["id"], timeout=120)
        stopped = http.get(f"/api/jobs/{job['id']}").json()
        assert stopped["state"] == "cancelled" and stopped["report"]["indexed"] == 1
        monkeypatch.setattr(web_jobs, "index", real_index)
        again = http.post("/api/index", json={"folder": str(folder)}, headers=AUTH).json()
        http.app.state.jobs.wait(again["id"], timeout=300)
        report = http.get(f"/api/jobs/{again['id']}").json()["report"]
        assert (report["unchanged"], report["indexed"]) == (1, 2)
        assert http.get("/api/jobs/nope").status_code == 404


def test_searches_run_while_an_index_job_writes(gallery_db_copy, tmp_path, gallery_maker):
    """SQLite in WAL mode: vector searches answer, right, while the job commits batches."""
    import threading

    folder = gallery_maker(tmp_path / "new", {"": ["img26.jpg", "img27.jpg", "img28.jpg"]})
    vector = stored_vector(gallery_db_copy, "img7.jpg").tolist()
    with client_for(gallery_db_copy, photos=[folder, FACES]) as http:
        (expected,) = facevec.find(vector, gallery_db_copy, k=3)
        job = http.post(
            "/api/index", json={"folder": str(folder), "batch_size": 1}, headers=AUTH
        ).json()
        answers, during = [], []

        def search():
            while len(answers) < 200:
                state = http.app.state.jobs.get(job["id"]).state
                response = http.post("/api/find/vector", json={"vector": vector, "k": 3})
                answers.append(response)
                if state == "running" and http.app.state.jobs.get(job["id"]).active:
                    during.append(response)
                if not http.app.state.jobs.get(job["id"]).active:
                    return

        threads = [threading.Thread(target=search) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        http.app.state.jobs.wait(job["id"], timeout=300)
        assert http.get(f"/api/jobs/{job['id']}").json()["state"] == "done"
    assert during, "no search finished while the job ran"
    assert all(response.status_code == 200 for response in answers)
    for response in answers:
        ids = [m["face_id"] for m in response.json()["faces"][0]["matches"]]
        assert ids == list(expected.face_id)


def test_thresholds_inf_1e400_and_calibrated_are_taken_as_the_command_line_takes_them(
    gallery_db_copy, gallery
):
    """inf (and 1e400, which JSON reads as inf) mean no limit, "calibrated" the gallery's
    own; NaN and negatives are refused with find's message."""
    import importlib.util

    db = str(gallery_db_copy)
    faces = facevec.info(db)["faces"]
    vector = stored_vector(gallery_db_copy, "img1.jpg").tolist()
    photo = {"photo": upload("img2.jpg")}
    with client_for(db, photos=[gallery, FACES]) as http:
        for literal in ("Infinity", "1e400"):
            body = json.dumps({"vector": vector}).replace("}", f', "threshold": {literal}}}')
            found = http.post(
                "/api/find/vector", content=body, headers={"Content-Type": "application/json"}
            )
            assert found.status_code == 200, found.text
            matches = found.json()["faces"][0]["matches"]
            assert len(matches) == faces and {m["threshold"] for m in matches} == {None}
        for text in ("inf", "1e400", "INF"):
            found = http.post("/api/find", files=photo, data={"threshold": text})
            assert found.status_code == 200, found.text
            assert len(found.json()["faces"][0]["matches"]) == faces
        for text, message in (
            ("nan", "threshold must be a number, found NaN"),
            ("-1", "threshold must be >= 0, found -1.0"),
            ("abc", "threshold must be a number or 'calibrated', not 'abc'"),
        ):
            refused = http.post("/api/find", files=photo, data={"threshold": text})
            assert refused.status_code == 400
            assert refused.json() == {"error": "InvalidParameterError", "detail": message}
        same = http.post(
            "/api/verify",
            files={"photo1": upload("img1.jpg"), "photo2": upload("img22.jpg")},
            data={"threshold": "inf"},
        )
        assert same.status_code == 200 and same.json()["verified"] is True
        assert same.json()["threshold"] is None
        nan = http.post(
            "/api/verify",
            files={"photo1": upload("img1.jpg"), "photo2": upload("img22.jpg")},
            data={"threshold": "nan"},
        )
        assert nan.status_code == 400 and nan.json()["detail"] == (
            "threshold must be a number, found NaN"
        )
        if importlib.util.find_spec("facevec.people") is None:
            return
        not_yet = http.post("/api/identify", files=photo, data={"threshold": "calibrated"})
        assert not_yet.json()["error"] == "NotCalibratedError" and not_yet.status_code < 500
        assert "facevec calibrate" in not_yet.json()["detail"]
        figures = facevec.calibrate(db)
        identified = http.post("/api/identify", files=photo, data={"threshold": "calibrated"})
        assert identified.status_code == 200, identified.text
        expected = facevec.identify(
            FACES.joinpath("img2.jpg").read_bytes(), db, threshold="calibrated"
        )
        assert identified.json()["faces"] == json.loads(expected.to_json(orient="records"))
        found = http.post("/api/find", files=photo, data={"threshold": "calibrated"})
        assert found.status_code == 200
        thresholds = [m["threshold"] for m in found.json()["faces"][0]["matches"]]
        assert thresholds and thresholds == pytest.approx([figures["threshold"]] * len(thresholds))
