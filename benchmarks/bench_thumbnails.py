"""The pictures a person's page loads: full photos scaled by the browser, against
thumbnails made by the server (facevec.web.thumbnails); and what a thumbnail costs.

The shared test photos are indexed into a temporary gallery (folders become people)
and served in this process (FastAPI's test client). For every person page: the bytes
of its pictures as the page loads them now (GET /api/faces/{id}/photo.jpg and
thumbnail.jpg), against the full photos and stored crops it loaded before. Then, per
face: the CPU time of a thumbnail made from the photo (cold), served from the
server's memory (warm), and answered 304 to a browser that has it.

    python benchmarks/bench_thumbnails.py [--photos DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def cpu_ms(run, repeat: int = 1) -> float:
    started = time.process_time()
    for _ in range(repeat):
        run()
    return (time.process_time() - started) * 1000 / repeat


def main() -> None:
    from pipeline_photos import FACES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=FACES)
    args = parser.parse_args()

    from web_support import client_for

    import facevec

    work = Path(tempfile.mkdtemp(prefix="bench-thumbnails-"))
    try:
        photos = work / "photos" / "someone"
        shutil.copytree(args.photos, photos, ignore=shutil.ignore_patterns("*.md"))
        db = work / "g.db"
        facevec.index(work / "photos", db, progress=False, people_from_folders=True)
        with client_for(db, photos=[work / "photos"], embed_workers=0) as http:
            before = after = pages = 0
            for person in http.get("/api/people").json():
                page = http.get(f"/people/{person['id']}").text
                pages += 1
                shown = re.findall(r'<img[^>]* src="(/api/faces/\d+/[a-z.]+)"', page)
                after += sum(len(http.get(url).content) for url in set(shown))
                detail = http.get(f"/api/people/{person['id']}").json()
                for photo in detail["photos"]:
                    if photo["photo_url"]:
                        before += len(http.get(photo["photo_url"]).content)
                for face in detail["faces"]:
                    before += len(http.get(f"/api/faces/{face['face_id']}/crop.png").content)
            print(
                f"person pages: {pages}; pictures loaded before {before / 2**20:.2f} MiB, "
                f"now {after / 2**20:.2f} MiB ({before / max(after, 1):.1f}x less)"
            )

            faces = [
                f["face_id"]
                for p in http.get("/api/people").json()
                for f in http.get(f"/api/people/{p['id']}").json()["faces"]
            ]
            cache = http.app.state.thumbnails
            cold = warm = unchanged = 0.0
            for face_id in faces:
                url = f"/api/faces/{face_id}/thumbnail.jpg"
                cache._items.clear()
                cache._held = 0
                cold += cpu_ms(lambda url=url: http.get(url))
                warm += cpu_ms(lambda url=url: http.get(url), 5)
                tag = http.get(url).headers["etag"]
                unchanged += cpu_ms(
                    lambda url=url, tag=tag: http.get(url, headers={"If-None-Match": tag}), 5
                )
            n = len(faces)
            print(
                f"face thumbnails (160 px), {n} faces, CPU ms per request: made "
                f"{cold / n:.1f}, from memory {warm / n:.2f}, 304 {unchanged / n:.2f}"
            )
            sizes = [os.path.getsize(p) for p in photos.iterdir()]
            print(
                f"photos: {len(sizes)}, mean {sum(sizes) / len(sizes) / 1024:.0f} KiB; "
                f"load average {os.getloadavg()[0]:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
