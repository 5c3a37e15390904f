"""ONNX Runtime with and without spinning worker threads: CPU and wall time of the same int8 graph, interleaved.

Runs `auto`'s probe batch (4 x 128 tokens, all heads) through two sessions of one exported graph that differ
only in `session.intra_op.allow_spinning`, alternating, and reports the best and every repetition.

    python benchmarks/onnx_spinning.py GRAPH --model-dir benchmarks/.work/bge-m3-random-full

Writes benchmarks/results/onnx_spinning-<time>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_speed import WORK, cpu_info, write_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("graph", type=Path)
    parser.add_argument("--model-dir", type=Path, default=WORK / "bge-m3-random-full")
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import onnxruntime as ort

    from m3search.encoders.runtimes.auto import speed_batch
    from m3search.encoders.transformer import load_tokenizer

    ids, mask = speed_batch(load_tokenizer(args.model_dir))
    sessions = {}
    for spin in ("1", "0"):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        sessions[f"allow_spinning={spin}"] = ort.InferenceSession(str(args.graph), options)
    feed = {"input_ids": ids, "attention_mask": mask}
    for session in sessions.values():
        session.run(None, feed)
    reps: dict[str, list[tuple[float, float]]] = {name: [] for name in sessions}
    for _ in range(args.reps):
        for name, session in sessions.items():
            t0, c0 = time.perf_counter(), time.process_time()
            session.run(None, feed)
            reps[name].append((time.perf_counter() - t0, time.process_time() - c0))
    report = {
        "benchmark": "onnx_spinning",
        "graph": str(args.graph),
        "tokens": int(mask.sum()),
        "threads": args.threads,
        "cpu": cpu_info(),
        "reps": reps,
    }
    for name, values in reps.items():
        print(
            f"{name}: best wall {min(v[0] for v in values):.2f}s, best CPU {min(v[1] for v in values):.2f}s"
        )
    out = write_report("onnx_spinning", report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
