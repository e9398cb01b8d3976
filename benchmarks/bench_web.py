"""Load test of facevec serve on loopback: concurrent searches, alone and during an ingest.

A gallery of --faces random 128-d vectors (cached in benchmarks/data/) is copied
to a temporary file and served by ``facevec serve`` in a child process (uvicorn,
one worker). --clients threads each keep one HTTP connection and post vectors to
/api/find/vector (k=10) for --seconds; the run reports throughput, p50/p99
latency and errors. Then the same while an index job (/api/index, started
through the API, one worker: the server's process) embeds the shared test photos
into the same gallery, and once more alone (the machine's drift).

    python benchmarks/bench_web.py                      # 100k faces, 20 clients, 30 s
    python benchmarks/bench_web.py --strategy knn --seconds 10

--photo-searches measures searches by photo instead (POST /api/find with a JPEG):
one client, then --photo-clients clients (16), each phase while an index job embeds
a fresh copy of the shared test photos into the gallery, on a server embedding in its
own process (--embed-workers 0: one photo at a time) and on one with its pool of
embedding processes (--embed-workers, default one per core), alternated --rounds
times. Each request's photo is one of the labelled test photos with a comment of its
own (a different hash: never an answer from the embedding cache).

    python benchmarks/bench_web.py --photo-searches --faces 10000 --seconds 40

Bounded: at most --seconds per phase and --max-requests per client.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

import facevec

DATA = Path(__file__).resolve().parent / "data"
FACES = Path(
    os.environ.get("FACEVEC_FACES") or Path(__file__).resolve().parents[2] / "shared" / "faces"
)
SEED = 20240601
DIM = 128
TOKEN = "bench-token"


def vectors(n: int, start: int = 0) -> np.ndarray:
    """Dlib-like vectors: the same every run (norm about 0.7, as Dlib's)."""
    rng = np.random.default_rng(SEED + start)
    return (rng.standard_normal((n, DIM), dtype=np.float32) * 0.06).astype(np.float32)


def gallery(n: int) -> Path:
    """benchmarks/data/web-<n>.db: n faces added through facevec.add, built once."""
    path = DATA / f"web-{n}.db"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    chunk = 10_000
    for begin in range(0, n, chunk):
        rows = min(chunk, n - begin)
        names = [f"synthetic/{begin + i:07d}.jpg" for i in range(rows)]
        facevec.add(partial, names, vectors(rows, begin))
        print(f"  gallery: {begin + rows}/{n} faces", file=sys.stderr)
    conn = facevec.connect(str(partial))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    partial.rename(path)
    print(f"  built {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    db: Path, photos: Path, port: int, embed_workers: int | None = None
) -> subprocess.Popen:
    """facevec serve in a child process, once it answers."""
    command = [sys.executable, "-m", "facevec", "serve", "--db", str(db), "--port", str(port)]
    command += ["--photos", str(photos), "--token", TOKEN]
    if embed_workers is not None:
        command += ["--embed-workers", str(embed_workers)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, _ = request(port, "GET", "/api/info")
            if status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start: " + server.stderr.read().decode())


def request(port: int, method: str, path: str, body=None, token: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def load(
    port: int, clients: int, seconds: float, strategy: str | None, max_requests: int, n: int
) -> dict:
    """`clients` threads posting find requests for `seconds`; latencies and errors."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    queries = vectors(256, 0)[: min(256, n)] + vectors(256, 999_999)[: min(256, n)] * 0.1
    barrier = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        barrier.wait()
        sent = 0
        while not stop.is_set() and sent < max_requests:
            query = {"vector": queries[(number * 31 + sent) % len(queries)].tolist(), "k": 10}
            if strategy:
                query["strategy"] = strategy
            body = json.dumps(query)
            started = time.perf_counter()
            try:
                conn.request("POST", "/api/find/vector", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    errors.append(f"{response.status}: {payload[:200]!r}")
                elif len(json.loads(payload)["faces"][0]["matches"]) == 0:
                    errors.append("no match for a query near a stored face")
            except Exception as err:  # counted, and a fresh connection for the next one
                errors.append(f"{type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            latencies[number].append(time.perf_counter() - started)
            sent += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(180)
    elapsed = time.perf_counter() - began
    flat = np.array([value for client in latencies for value in client]) * 1000
    return {
        "load": os.getloadavg()[0],  # the machine's 1-minute load at the phase's end
        "requests": int(flat.size),
        "seconds": elapsed,
        "throughput": flat.size / elapsed,
        "p50_ms": float(np.percentile(flat, 50)) if flat.size else float("nan"),
        "p99_ms": float(np.percentile(flat, 99)) if flat.size else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def print_row(name: str, result: dict, extra: str = "") -> None:
    print(
        f"| {name} | {result['requests']} | {result['throughput']:.1f} | "
        f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {result['errors']} | "
        f"{result['load']:.1f} |{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--strategy", default=None, help="default: the server's (extension)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per client")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds, not counted")
    parser.add_argument(
        "--photo-searches", action="store_true", help="searches by photo, before and after"
    )
    parser.add_argument("--photo-clients", type=int, default=16)
    parser.add_argument("--embed-workers", type=int, default=None, help="default: the server's")
    parser.add_argument("--rounds", type=int, default=1, help="photo searches: alternations")
    args = parser.parse_args()
    if args.photo_searches:
        photo_searches(args)
        return

    source = gallery(args.faces)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as work:
        db = Path(work) / "gallery.db"
        shutil.copyfile(source, db)
        port = free_port()
        server = start_server(db, FACES, port)
        try:
            run(args, port)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(120)
            except subprocess.TimeoutExpired:
                server.kill()


def run(args: argparse.Namespace, port: int) -> None:
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {args.faces} faces, {args.clients} clients, "
        f"{args.seconds:g} s per phase, strategy {args.strategy or 'default'}"
    )
    load(port, args.clients, args.warmup, args.strategy, args.max_requests, args.faces)
    print("\n| phase | requests | req/s | p50 ms | p99 ms | errors | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    alone = load(port, args.clients, args.seconds, args.strategy, args.max_requests, args.faces)
    print_row("searches alone", alone)

    # The ingest: the shared test photos (55, 0.3-5 s each), really embedded.
    status, job = request(port, "POST", "/api/index", {"folder": str(FACES)}, token=TOKEN)
    if status != 202:
        raise RuntimeError(f"index job refused: {status} {job}")
    while request(port, "GET", f"/api/jobs/{job['id']}")[1]["done"] < 1:
        time.sleep(0.2)
    before = request(port, "GET", f"/api/jobs/{job['id']}")[1]
    during = load(port, args.clients, args.seconds, args.strategy, args.max_requests, args.faces)
    after = request(port, "GET", f"/api/jobs/{job['id']}")[1]
    ingest = (
        f" ingest: {after['done'] - before['done']} photos embedded and committed during the "
        f"phase ({after['state']} at its end)"
    )
    print_row("searches during an ingest", during, ingest)
    request(port, "DELETE", f"/api/jobs/{job['id']}", token=TOKEN)
    while request(port, "GET", f"/api/jobs/{job['id']}")[1]["state"] == "running":
        time.sleep(0.2)
    # Once more alone: how much of the difference is the machine's own drift.
    again = load(port, args.clients, args.seconds, args.strategy, args.max_requests, args.faces)
    print_row("searches alone, again", again)
    for result in (alone, during, again):
        for error in result["first_errors"]:
            print("error:", error)


# Searches by photo -------------------------------------------------------------


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment (COM) after its start: the same pixels,
    another hash."""
    comment = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def labelled_photos() -> list[bytes]:
    """The labelled shared test photos (one known face each), in labels.csv's order."""
    with open(FACES / "labels.csv", newline="") as handle:
        return [(FACES / row["file"]).read_bytes() for row in csv.DictReader(handle)]


def photos_to_index(root: Path, name: str) -> Path:
    """A fresh folder under the server's photos: a copy of every shared test photo,
    each with a comment of its own (new files with new hashes: all embedded)."""
    folder = root / name
    folder.mkdir(parents=True)
    for path in sorted(FACES.glob("*.jpg")):
        (folder / path.name).write_bytes(with_comment(path.read_bytes(), f"{name}/{path.name}"))
    return folder


def multipart(fields: dict[str, str], photo: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="q.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + photo
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def photo_load(
    port: int, clients: int, seconds: float, queries: list[bytes], max_requests: int, tag: str
) -> dict:
    """`clients` threads posting photos to /api/find for `seconds`; latencies and errors.
    Every request's photo is new to the server (a comment of its own)."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        barrier.wait()
        sent = 0
        while not stop.is_set() and sent < max_requests:
            photo = queries[(number * 7 + sent) % len(queries)]
            body, content_type = multipart(
                {"k": "5"}, with_comment(photo, f"{tag}/{number}/{sent}")
            )
            started = time.perf_counter()
            try:
                conn.request("POST", "/api/find", body, {"Content-Type": content_type})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    errors.append(f"{response.status}: {payload[:200]!r}")
                elif not json.loads(payload)["faces"]:
                    errors.append("no face found in a labelled photo")
            except Exception as err:  # counted, and a fresh connection for the next one
                errors.append(f"{type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            latencies[number].append(time.perf_counter() - started)
            sent += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(900)
    elapsed = time.perf_counter() - began
    flat = np.array([value for client in latencies for value in client]) * 1000
    return {
        "load": os.getloadavg()[0],
        "requests": int(flat.size),
        "seconds": elapsed,
        "throughput": flat.size / elapsed,
        "p50_ms": float(np.percentile(flat, 50)) if flat.size else float("nan"),
        "p95_ms": float(np.percentile(flat, 95)) if flat.size else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def children_of(pid: int) -> list[int]:
    """The child processes of `pid` (Linux: /proc/PID/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def photo_phase(port: int, args, queries, root: Path, name: str, clients: int) -> dict:
    """One measured phase: an index job on a fresh folder, and `clients` searching."""
    folder = photos_to_index(root, name)
    status, job = request(port, "POST", "/api/index", {"folder": str(folder)}, token=TOKEN)
    if status != 202:
        raise RuntimeError(f"index job refused: {status} {job}")
    while request(port, "GET", f"/api/jobs/{job['id']}")[1]["done"] < 1:
        time.sleep(0.2)
    before = request(port, "GET", f"/api/jobs/{job['id']}")[1]
    result = photo_load(port, clients, args.seconds, queries, args.max_requests, name)
    after = request(port, "GET", f"/api/jobs/{job['id']}")[1]
    result["indexed"] = after["done"] - before["done"]
    result["job_state"] = after["state"]
    request(port, "DELETE", f"/api/jobs/{job['id']}", token=TOKEN)
    while request(port, "GET", f"/api/jobs/{job['id']}")[1]["state"] == "running":
        time.sleep(0.2)
    return result


def photo_server_run(args, queries, work: Path, label: str, workers: int | None) -> list:
    """A fresh server (gallery copied anew): warm-up, one client, then many; and
    whether its embedding processes outlive it."""
    db = work / f"gallery-{label}.db"
    shutil.copyfile(gallery(args.faces), db)
    root = work / f"photos-{label}"
    root.mkdir()
    port = free_port()
    server = start_server(db, root, port, workers)
    try:
        photo_load(port, args.photo_clients, args.warmup, queries, 4, f"{label}-warmup")
        workers_seen = children_of(server.pid)
        rows = []
        for clients in (1, args.photo_clients):
            name = f"{label}-{clients}"
            rows.append((label, clients, photo_phase(port, args, queries, root, name, clients)))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
    deadline = time.monotonic() + 10  # the resource tracker ends once it sees the server gone
    while any(alive(pid) for pid in workers_seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers_seen if alive(pid)]
    print(f"  {label}: {len(workers_seen)} child processes, {len(left)} left after stop")
    return rows


def photo_searches(args: argparse.Namespace) -> None:
    queries = labelled_photos()
    after = "pool" if args.embed_workers is None else f"pool of {args.embed_workers}"
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {args.faces} faces; searches by photo "
        f"({len(queries)} labelled photos); 1 and {args.photo_clients} clients, "
        f"{args.seconds:g} s per phase, each beside an index job"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-web-photos-") as work:
        for round_number in range(args.rounds):
            for label, workers in (("in-process", 0), (after, args.embed_workers)):
                tag = f"{label} r{round_number + 1}".replace(" ", "-")
                rows += photo_server_run(args, queries, Path(work), tag, workers)
    print(
        "\n| server | clients | searches | searches/s | p50 ms | p95 ms | errors "
        "| photos indexed meanwhile | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, clients, r in rows:
        print(
            f"| {label} | {clients} | {r['requests']} | {r['throughput']:.2f} | "
            f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['errors']} | {r['indexed']} | "
            f"{r['load']:.1f} |"
        )
    print()
    by = {(label, clients): r for label, clients, r in rows}
    for label in dict.fromkeys(label for label, _, _ in rows):
        one, many = by[(label, 1)], by[(label, args.photo_clients)]
        print(
            f"{label}: {args.photo_clients} clients / 1 client throughput "
            f"{many['throughput'] / one['throughput']:.2f}x (target for the pool: 1.8x); "
            f"p95 {many['p95_ms'] / 1000:.1f} s"
        )
    for _, _, r in rows:
        for error in r["first_errors"]:
            print("error:", error)


if __name__ == "__main__":
    main()
