"""Bounded load test of `m3search serve` on loopback: N concurrent clients for T seconds, zero errors.

Each phase starts its own server, warms it up, then runs `--clients` asyncio clients that each send one
request after another (a single short text: the common search-query case; `--endpoint search` searches a
collection of the bundled 40-document sample) until `--duration` seconds or
`--max-requests` have passed. The anchor phase is the same server with micro-batching off (`--batch-size 1`),
measured in the same run, so the table quotes throughput and latency as ratios against it.

    python benchmarks/server_load.py --clients 20 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from m3search.server.demo import demo_documents
from m3search.server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
LOAD_COLLECTION = "load"
SCIFACT_QUERIES = ROOT.parent / "shared" / "data" / "scifact" / "queries.jsonl"
FALLBACK_TEXTS = [
    "What is the capital of France?",
    "How do vaccines train the immune system?",
    "Wie funktioniert die Photosynthese?",
    "¿Cuál es el río más largo del mundo?",
    "机器学习是什么？",
    "Что такое квантовая запутанность?",
    "Best practices for hybrid search",
]


def load_texts() -> list[str]:
    """Short real queries (SciFact) when the shared data is there, else a built-in multilingual handful."""
    if SCIFACT_QUERIES.is_file():
        with SCIFACT_QUERIES.open(encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    return FALLBACK_TEXTS


def request_for(endpoint: str, text: str, rng: random.Random) -> tuple[str, dict]:
    """The path and JSON body of one request."""
    if endpoint == "embeddings":
        return "/v1/embeddings", {"input": text, "input_type": "query"}
    if endpoint == "embed":
        return "/embed", {"texts": [text], "dense": True, "sparse": rng.random() < 0.5, "input_type": "query"}
    if endpoint == "search":
        return f"/collections/{LOAD_COLLECTION}/search", {"query": text, "k": 10, "highlight": True}
    return "/similarity", {"source": text, "targets": [rng.choice(FALLBACK_TEXTS)]}


def create_search_collection(url: str) -> None:
    """Collection `load` with the bundled 40-document multilingual sample, for `--endpoint search`."""
    documents = demo_documents(None)
    assert httpx.post(url + "/collections", json={"name": LOAD_COLLECTION}).status_code == 201
    response = httpx.post(
        f"{url}/collections/{LOAD_COLLECTION}/documents", json={"documents": documents}, timeout=600
    )
    response.raise_for_status()


async def run_clients(
    url: str, endpoint: str, clients: int, duration: float, max_requests: int, texts: list[str]
) -> tuple[list[float], list[str], float]:
    """Latencies (s) of successful requests, error descriptions, and the wall time of the phase."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        deadline = time.perf_counter() + duration

        async def client(seed: int) -> None:
            nonlocal sent
            rng = random.Random(seed)
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                path, body = request_for(endpoint, rng.choice(texts), rng)
                started = time.perf_counter()
                try:
                    response = await http.post(path, json=body)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return latencies, errors, time.perf_counter() - started


def metric(url: str, name: str) -> float:
    """One unlabelled value from /metrics."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def run_phase(name: str, args: argparse.Namespace, batch_size: int, texts: list[str], work: Path) -> dict:
    """Start a server, warm it up, load it, and summarize."""
    server_args = ["--model", args.model, "--batch-size", str(batch_size), "--runtime", args.runtime]
    with ServerProcess(server_args + ["--collections", str(work / name)], work / f"{name}.log") as server:
        if args.endpoint == "search":
            create_search_collection(server.url)
        asyncio.run(run_clients(server.url, args.endpoint, 2, 2.0, 20, texts))  # warm-up, not counted
        batches0, texts0 = (
            metric(server.url, "m3search_encode_batches_total"),
            metric(server.url, "m3search_encode_texts_total"),
        )
        latencies, errors, wall = asyncio.run(
            run_clients(server.url, args.endpoint, args.clients, args.duration, args.max_requests, texts)
        )
        batches = metric(server.url, "m3search_encode_batches_total") - batches0
        encoded = metric(server.url, "m3search_encode_texts_total") - texts0
    lat_ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "phase": name,
        "batch_size": batch_size,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 1),
        "p90_ms": round(float(np.percentile(lat_ms, 90)), 1),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 1),
        "max_ms": round(float(lat_ms.max()), 1),
        "texts_per_model_call": round(encoded / batches, 2) if batches else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="intfloat/multilingual-e5-small")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument(
        "--endpoint", choices=["embeddings", "embed", "similarity", "search"], default="embeddings"
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds per phase.")
    parser.add_argument("--max-requests", type=int, default=100_000, help="Bound on requests per phase.")
    parser.add_argument("--batch-size", type=int, default=64, help="Micro-batch size of the measured phase.")
    parser.add_argument("--no-anchor", action="store_true", help="Skip the unbatched anchor phase.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "server_load.json")
    args = parser.parse_args()

    texts = load_texts()
    with tempfile.TemporaryDirectory() as tmp:
        phases = [run_phase("batched", args, args.batch_size, texts, Path(tmp))]
        if not args.no_anchor:
            phases.append(run_phase("unbatched (anchor)", args, 1, texts, Path(tmp)))

    anchor = phases[-1]
    header = (
        f"{'phase':<20} {'req':>6} {'err':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'texts/call':>10} "
        f"{'x anchor req/s':>14}"
    )
    print(f"{args.clients} clients x {args.duration:.0f} s, POST {args.endpoint}, model {args.model}")
    print(header)
    for p in phases:
        ratio = p["throughput_rps"] / anchor["throughput_rps"] if anchor["throughput_rps"] else float("nan")
        p["throughput_vs_anchor"] = round(ratio, 2)
        print(
            f"{p['phase']:<20} {p['requests']:>6} {p['errors']:>4} {p['throughput_rps']:>7} {p['p50_ms']:>7} "
            f"{p['p99_ms']:>7} {p['texts_per_model_call']:>10} {ratio:>14.2f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "model": args.model,
                "endpoint": args.endpoint,
                "clients": args.clients,
                "duration_s": args.duration,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "phases": phases,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")
    errors = sum(p["errors"] for p in phases)
    if errors:
        print(f"FAILED: {errors} errors; samples: {[p['error_samples'] for p in phases]}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
