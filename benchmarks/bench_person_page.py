"""The people pages at a real library's size: a person with --faces faces (5,000) in
a gallery of --people people (3,000), served by ``facevec serve`` on loopback.

For the person page (GET /people/{id}), the people page (GET /people) and the JSON a
page or a program reads (GET /api/people/{id}: all the faces; GET
/api/people/{id}/faces: one page; GET /api/people?q=: the person picker), the
median time to the whole response and its size over --repeat requests. The page's
HTML is what the browser must receive and lay out before its first paint (the
pictures load lazily after), so its size and time stand for the time to first paint.

--checkout runs the same requests against a server from another source tree (its
compiled modules copied in), for a before/after comparison on the same gallery.

    python benchmarks/bench_person_page.py
    python benchmarks/bench_person_page.py --checkout ../facevec-before

The gallery is built once in benchmarks/data/ (random Dlib-like vectors; the
people written straight through facevec's storage layer, in one transaction).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"


LOOSE = 300  # faces of no one: the people page offers to give them to someone


def gallery(faces: int, people: int) -> Path:
    """benchmarks/data/person-page-<faces>-<people>.db: Ann with `faces` faces,
    `people` others of one face each (a third of them named), LOOSE faces of no one."""
    import facevec
    from facevec.people.gallery import open_gallery
    from facevec.storage import people as store

    path = DATA / f"person-page-{faces}-{people}.db"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.db")
    partial.unlink(missing_ok=True)
    count = faces + people + LOOSE
    vectors = np.random.default_rng(7).standard_normal((count, 128)).astype(np.float32) * 0.06
    names = [f"library/{i // 500:03d}/photo{i:06d}.jpg" for i in range(count)]
    for begin in range(0, count, 10_000):
        facevec.add(partial, names[begin : begin + 10_000], vectors[begin : begin + 10_000])
    with open_gallery(partial) as (database, _):
        ids = [int(row[0]) for row in database.query("SELECT id FROM face_meta ORDER BY id")]
        with database.transaction():
            ann = store.create_person(database, "Ann")
            rows = [(face, ann, "confirmed", None) for face in ids[:faces]]
            for i, face in enumerate(ids[faces : faces + people]):
                person = store.create_person(database, f"Someone {i:04d}" if i % 3 == 0 else None)
                rows.append((face, person, "suggested", 0.3))
            store.assign(database, rows)
    partial.rename(path)
    return path


def chromium():
    """Headless Chromium (the system's, as the browser tests drive it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_web_browser import _chromium

    return _chromium(Path(tempfile.mkdtemp(prefix="bench-person-page-chromium-")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db: Path, port: int, checkout: str | None) -> subprocess.Popen:
    # python -m imports facevec from its working directory first: the checkout's.
    where = checkout or str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=where)
    command = [sys.executable, "-m", "facevec", "serve", "--db", str(db), "--port", str(port)]
    command += ["--embed-workers", "0"]
    server = subprocess.Popen(
        command, cwd=where, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/info")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start: " + server.stderr.read().decode())


def timed(port: int, path: str, repeat: int) -> tuple[float, int, int, bytes]:
    """(median ms to the whole response, bytes, status, the body) of GET path."""
    times, body, status = [], b"", 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for _ in range(repeat):
        started = time.perf_counter()
        conn.request("GET", path, headers={"Accept": "text/html,application/json"})
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        status = response.status
    conn.close()
    return statistics.median(times), len(body), status, body


def painted(browser, port: int, path: str, repeat: int) -> tuple[float, None, int]:
    """(median ms to the first contentful paint, -, elements) of the page in Chromium."""
    times = []
    for _ in range(repeat):
        browser.get("about:blank")
        browser.get(f"http://127.0.0.1:{port}{path}")
        paint = None
        deadline = time.monotonic() + 30
        while paint is None and time.monotonic() < deadline:  # the entry comes after load
            paint = browser.execute_script(
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "return p ? p.startTime : null;"
            )
            if paint is None:
                time.sleep(0.02)
        times.append(paint if paint is not None else float("nan"))
    count = browser.execute_script("return document.getElementsByTagName('*').length")
    return statistics.median(times), None, count


def run(label: str, db: Path, checkout: str | None, repeat: int, browser=None) -> list[tuple]:
    work = Path(tempfile.mkdtemp(prefix="bench-person-page-"))
    copy = work / "g.db"
    shutil.copy(db, copy)
    port = free_port()
    server = start_server(copy, port, checkout)
    rows: list[tuple] = []
    loads: list[float] = []  # the 1-minute load average as each was measured
    try:
        _, _, _, listing = timed(port, "/api/people?name=Ann", 1)
        ann = int(re.search(rb'"id":\s*(\d+)', listing).group(1))
        for what, path in (
            ("person page", f"/people/{ann}"),
            ("people page", "/people"),
            ("person JSON, all faces", f"/api/people/{ann}"),
            ("person JSON, one page of faces", f"/api/people/{ann}/faces?limit=100"),
            ("person picker, q=some", "/api/people?q=some&limit=21"),
        ):
            ms, size, status, body = timed(port, path, repeat)
            if status == 404:
                rows.append((label, what, None, None, "route"))
                loads.append(os.getloadavg()[0])
                continue
            assert status == 200, (path, status, body[:300])
            if "q=" in path and re.search(rb'"label":\s*"(?![^"]*[Ss]ome)', body):
                rows.append((label, what, None, None, "q"))  # q not understood: everyone
                loads.append(os.getloadavg()[0])
                continue
            # Faces and people in it: checkboxes and list options, or JSON records.
            pictures = sum(
                body.count(marker)
                for marker in (b'class="face-pick"', b"<option", b'"face_id"', b'"label"')
            )
            rows.append((label, what, ms, size, pictures))
            loads.append(os.getloadavg()[0])
        if browser is not None:
            for what, path in (("person page", f"/people/{ann}"), ("people page", "/people")):
                rows.append((label, f"{what} in Chromium", *painted(browser, port, path, repeat)))
                loads.append(os.getloadavg()[0])
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    return [(*row, load) for row, load in zip(rows, loads, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=5000, help="the person's faces")
    parser.add_argument("--people", type=int, default=3000, help="other people")
    parser.add_argument("--repeat", type=int, default=5, help="requests per route")
    parser.add_argument("--checkout", default=None, help="compare with this source tree")
    parser.add_argument(
        "--browser", action="store_true", help="also the pages' first paint in headless Chromium"
    )
    args = parser.parse_args()
    db = gallery(args.faces, args.people)
    sides = [("this checkout", None)]
    if args.checkout:
        sides.insert(0, (f"checkout {args.checkout}", args.checkout))
    browser = chromium() if args.browser else None
    print(f"person of {args.faces} faces, {args.people} other people; median of {args.repeat}")
    print("| server | response | ms | KiB | faces and people in it | load |")
    print("|---|---|---:|---:|---:|---:|")
    try:
        results = [
            row
            for label, checkout in sides
            for row in run(label, db, checkout, args.repeat, browser)
        ]
    finally:
        if browser is not None:
            browser.quit()
    for side, what, ms, size, pictures, load in results:
        if ms is None:
            missing = "no such route" if pictures == "route" else "q ignored: not a search"
            print(f"| {side} | {what} | ({missing}) | | | {load:.1f} |")
        elif size is None:  # in Chromium: the first contentful paint, the elements
            print(
                f"| {side} | {what} | {ms:.0f} (first paint) | | {pictures} elements | {load:.1f} |"
            )
        else:
            print(f"| {side} | {what} | {ms:.0f} | {size / 1024:.0f} | {pictures} | {load:.1f} |")


if __name__ == "__main__":
    main()
