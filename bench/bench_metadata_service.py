"""Issue 9's benchmark: how fast ``rkt metadata-service`` answers a pod.

A real ``rkt metadata-service`` (private socket, free port) with one pod
registered at 127.0.0.1; each request is a new connection, as ``wget`` in a pod
makes. The baseline is the floor of the same stack: the standard library's
threading HTTP server answering a fixed string. Reported: the median and 99th
percentile latency of ``GET pod/uuid``, ``GET pod/manifest`` and ``POST
pod/hmac/sign``, and the ratio of the median to the baseline's.
Target: a few milliseconds.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

from common import workdir

from rkt_testing.env import RktEnv
from rkt_testing.metadata import MetadataServiceProcess, register

UUID = "5b0cbd5e-2d6f-4c50-8f3a-1f0e2d3c4b5a"
ROUNDS = 500


def latencies(request: Callable[[], int], rounds: int = ROUNDS) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        status = request()
        times.append(time.perf_counter() - start)
        assert status == 200, status
    return sorted(times)


def get(port: int, path: str, body: bytes | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        connection.request("POST" if body else "GET", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class Fixed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "36")
        self.end_headers()
        self.wfile.write(UUID.encode())

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def line(name: str, times: list[float], floor: float) -> dict[str, object]:
    median = statistics.median(times)
    p99 = times[int(len(times) * 0.99) - 1]
    print(f"{name:<36} median {median * 1000:6.2f} ms   p99 {p99 * 1000:6.2f} ms   "
          f"ratio to the bare server {median / floor:5.2f}", flush=True)
    return {"name": name, "median_ms": round(median * 1000, 3),
            "p99_ms": round(p99 * 1000, 3), "ratio": round(median / floor, 3)}


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-mds-")
    env = RktEnv(base / "rkt")
    service = MetadataServiceProcess(env, base / "mds.sock").start()
    bare = ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    threading.Thread(target=bare.serve_forever, daemon=True).start()
    try:
        pod = {"acVersion": "0.8.11", "acKind": "PodManifest", "annotations": [],
               "apps": [{"name": "app", "image": {"name": "bench.example/app",
                                                  "id": "sha512-" + "0" * 128}}]}
        image = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "bench.example/app"}
        token = register(service.socket_path, UUID, "127.0.0.1", pod, {"app": image})
        prefix = f"/{token}/acMetadata/v1"
        floor_times = latencies(lambda: get(bare.server_address[1], "/"))
        floor = statistics.median(floor_times)
        results = [line("bare ThreadingHTTPServer", floor_times, floor)]
        port = service.port
        results.append(line("GET pod/uuid", latencies(lambda: get(port, f"{prefix}/pod/uuid")),
                            floor))
        results.append(line("GET pod/manifest",
                            latencies(lambda: get(port, f"{prefix}/pod/manifest")), floor))
        form = urlencode({"content": "x" * 1024}).encode()
        results.append(line("POST pod/hmac/sign (1 KiB)",
                            latencies(lambda: get(port, f"{prefix}/pod/hmac/sign", form)),
                            floor))
        return results
    finally:
        bare.shutdown()
        service.stop()
        import shutil

        shutil.rmtree(Path(base), ignore_errors=True)


if __name__ == "__main__":
    main()
