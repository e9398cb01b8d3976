"""Many large uploads at once: facevec serve's peak memory and time.

A small PNG can declare a huge image: a 7680 x 5170 PNG (39.7 megapixels, under the
server's 40 MP limit) of a flat background with one face is a few hundred KB, and
decodes to about 120 MB of pixels. --uploads clients (16) post such photos, each a
different one (so no result comes from the embedding cache), to /api/find of one
``facevec serve`` process at the same moment; the run reports every answer's status,
the wall time until the last answer, the server's CPU time and its peak RSS (VmHWM).

    python benchmarks/bench_uploads.py                 # this checkout
    python benchmarks/bench_uploads.py --checkout DIR  # another checkout of facevec

--checkout runs the server from another source tree (its compiled modules copied in),
for a before/after comparison on the same machine; --rounds alternates the two.
The photos are cached in benchmarks/data/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
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
WIDTH, HEIGHT = 7680, 5170  # 39.7 MP


def photos(count: int) -> list[bytes]:
    """`count` different 39.7 MP PNGs, each a flat canvas with one shared test face."""
    from PIL import Image

    DATA.mkdir(parents=True, exist_ok=True)
    found = []
    face = Image.open(FACES / "img1.jpg").convert("RGB")
    for number in range(count):
        path = DATA / f"upload-{WIDTH}x{HEIGHT}-{number}.png"
        if not path.exists():
            canvas = Image.new("RGB", (WIDTH, HEIGHT), (200 - number, 190, 180))
            canvas.paste(face, (WIDTH // 2, HEIGHT // 2))
            canvas.save(path, format="PNG")
        found.append(path.read_bytes())
    return found


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db: Path, port: int, checkout: str | None) -> subprocess.Popen:
    # python -m imports facevec from its working directory first: the checkout's.
    where = checkout or str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=where)
    command = [sys.executable, "-m", "facevec", "serve", "--db", str(db), "--port", str(port)]
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


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


def post_all(port: int, uploads: list[bytes]) -> tuple[list[int], float]:
    """Every upload posted at the same moment; (statuses, seconds until the last answer)."""
    statuses = [0] * len(uploads)
    barrier = threading.Barrier(len(uploads) + 1)

    def client(number: int) -> None:
        body, boundary = multipart(uploads[number], f"large-{number}.png")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        barrier.wait()
        try:
            conn.request("POST", "/api/find", body, headers)
            response = conn.getresponse()
            response.read()
            statuses[number] = response.status
        except OSError:
            statuses[number] = -1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(uploads))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return statuses, time.perf_counter() - started


def process_figures(pid: int) -> tuple[float, float]:
    """(peak RSS in GB, CPU seconds) of a live process, from /proc."""
    with open(f"/proc/{pid}/status") as handle:
        peak = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak / 2**20, (int(fields[11]) + int(fields[12])) / ticks


def one_run(label: str, checkout: str | None, uploads: list[bytes]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as work:
        db = Path(work) / "gallery.db"
        vectors = np.random.default_rng(7).normal(0, 0.06, (1000, 128)).astype(np.float32)
        facevec.add(db, [f"synthetic/{i}.jpg" for i in range(1000)], vectors)
        port = free_port()
        server = start_server(db, port, checkout)
        try:
            # The model loads on the first search: load it before the clock starts.
            post_all(port, [_small_face()])
            idle_peak, idle_cpu = process_figures(server.pid)
            statuses, seconds = post_all(port, uploads)
            peak, cpu = process_figures(server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(120)
            except subprocess.TimeoutExpired:
                server.kill()
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    return {
        "label": label,
        "statuses": counts,
        "seconds": seconds,
        "cpu_seconds": cpu - idle_cpu,
        "peak_rss_gb": peak,
        "idle_peak_rss_gb": idle_peak,
    }


def _small_face() -> bytes:
    return (FACES / "img1.jpg").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--checkout", default=None, help="compare with this source tree")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    uploads = photos(args.uploads)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {args.uploads} uploads of {WIDTH}x{HEIGHT} PNG "
        f"({WIDTH * HEIGHT / 1e6:.1f} MP, {np.mean([len(u) for u in uploads]) / 1e3:.0f} KB each)"
    )
    sides = [("this checkout", None)]
    if args.checkout:
        sides.insert(0, (f"checkout {args.checkout}", args.checkout))
    results = []
    for _ in range(args.rounds):
        for label, checkout in sides:
            result = one_run(label, checkout, uploads)
            print(json.dumps(result), flush=True)
            results.append(result)
    print("\n| server | answers | wall s | server CPU s | peak RSS GB |")
    print("|---|---|---:|---:|---:|")
    for result in results:
        answers = ", ".join(f"{n}x{status}" for status, n in result["statuses"].items())
        print(
            f"| {result['label']} | {answers} | {result['seconds']:.1f} | "
            f"{result['cpu_seconds']:.1f} | {result['peak_rss_gb']:.2f} |"
        )


if __name__ == "__main__":
    main()
