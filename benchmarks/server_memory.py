"""Resident memory of `m3search serve` before, during and after big requests (issue 12 item 5).

Starts the server on loopback (e5-small by default), warms it up, then sends a bounded sequence of big requests
one after another: a 10 MB text (truncated), a 10 MB search query, a chunked text of `--chunk-chars`
characters, and a burst of full-length texts, reading the server's RSS (`/proc/PID/status`) after each and
again after an idle pause. Run it once per code version to compare; the table prints MB.

    python benchmarks/server_memory.py --label after
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import httpx

from m3search.encoders.runtimes.hardware import cpu_record
from m3search.server.memory import rss_mb
from m3search.server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
TEN_MB = "lorem ipsum dolor sit amet " * (10 * 1024 * 1024 // 27)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="intfloat/multilingual-e5-small")
    parser.add_argument("--label", default="run")
    parser.add_argument("--chunk-chars", type=int, default=20_000, help="characters of the chunked text")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to wait before the last reading")
    args = parser.parse_args()

    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            ["--model", args.model, "--collections", f"{tmp}/collections", "--max-body-mb", "32"],
            Path(tmp) / "server.log",
        )
        with server, httpx.Client(base_url=server.url, timeout=900) as client:
            pid = server.proc.pid

            def step(name: str, method: str = "", path: str = "", body: dict | None = None) -> None:
                started = time.perf_counter()
                status = client.request(method, path, json=body).status_code if method else 0
                rows.append(
                    (f"{name} ({status})" if method else name, rss_mb(pid), time.perf_counter() - started)
                )

            client.post("/collections", json={"name": "m"})
            client.post("/collections/m/documents", json={"documents": [{"id": 1, "text": "lorem ipsum"}]})
            client.post("/v1/embeddings", json={"input": ["warm up"] * 8})
            step("warm")
            step("/embed 10 MB text", "POST", "/embed", {"texts": [TEN_MB]})
            step("search 10 MB query", "POST", "/collections/m/search", {"query": TEN_MB})
            chunked = TEN_MB[: args.chunk_chars]
            step(
                "/embed chunked", "POST", "/embed", {"texts": [chunked], "chunking": "chunk", "colbert": True}
            )
            full = [TEN_MB[i * 4000 : (i + 1) * 4000] for i in range(32)]
            step("/embed 32 full-length texts", "POST", "/embed", {"texts": full, "colbert": True})
            time.sleep(args.idle)
            step(f"idle {args.idle:g} s")
            log = (Path(tmp) / "server.log").read_text()[-2000:]

    print(f"{'step':40s} {'RSS MB':>8s} {'seconds':>8s}")
    for name, mb, seconds in rows:
        print(f"{name:40s} {mb:8.0f} {seconds:8.1f}")
    out = ROOT / "benchmarks" / "results" / f"server_memory-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "label": args.label,
                "model": args.model,
                "steps": [{"step": n, "rss_mb": round(m, 1), "seconds": round(s, 2)} for n, m, s in rows],
                "cpu": cpu_record(),
                "python": platform.python_version(),
                "server_log_tail": log,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
