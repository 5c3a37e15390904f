"""Long documents: Multiple CLS (`chunking="mcls"`) against chunk-and-merge and truncation, dense retrieval.

Builds long documents by concatenating SciFact abstracts, and XQuAD-R paragraphs of one language, in a fixed
shuffled order (`--per-doc` units each); a query is relevant to the long document that holds its relevant
abstract or paragraph. Encodes them with the offline multilingual-e5-small (512-token limit, so documents of
a few thousand tokens play the part that documents beyond 8192 tokens play for bge-m3) on torch-fp32, once
per method, and ranks them by dense cosine.

    python benchmarks/long_documents.py --docs 16 --per-doc 6 --queries 80

Writes benchmarks/results/long_documents-<time>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_speed import cpu_info, write_report  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODEL = "intfloat/multilingual-e5-small"


def long_task(task: Any, docs: int, per_doc: int, queries: int, seed: int = 0) -> dict[str, Any]:
    """`docs` long documents of `per_doc` units each (every relevant unit of the sampled queries included,
    the rest distractors), and the sampled queries re-judged against them."""
    rng = random.Random(seed)
    qids = sorted(task.queries)
    rng.shuffle(qids)
    capacity = docs * per_doc
    units: list[str] = []
    chosen: list[str] = []
    for qid in qids:
        rel = [d for d in task.qrels[qid] if d not in units]
        if len(chosen) == queries or len(units) + len(rel) > capacity:
            break
        units += rel
        chosen.append(qid)
    rest = sorted(set(task.corpus) - set(units))
    rng.shuffle(rest)
    units += rest[: capacity - len(units)]
    rng.shuffle(units)
    groups = [units[i : i + per_doc] for i in range(0, len(units), per_doc)]
    where = {u: f"long-{g}" for g, group in enumerate(groups) for u in group}
    return {
        "texts": {
            f"long-{g}": "\n".join(task.corpus[u].full_text for u in group) for g, group in enumerate(groups)
        },
        "queries": {q: task.queries[q] for q in chosen},
        "qrels": {q: {where[d]: 1 for d in task.qrels[q]} for q in chosen},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=16, help="long documents per dataset")
    parser.add_argument("--per-doc", type=int, default=6, help="abstracts or paragraphs per long document")
    parser.add_argument("--queries", type=int, default=80, help="queries per dataset (at most)")
    parser.add_argument(
        "--intervals", default="64,128", help="MCLS intervals to try (content tokens per CLS)"
    )
    parser.add_argument("--xquad-pair", default="en-de", help="query-document languages of XQuAD-R")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np

    from m3search.encoders import load_encoder
    from m3search.eval.datasets import load_beir, squad_task
    from m3search.eval.metrics import evaluate, ranking_from_scores

    encoder = load_encoder(MODEL, sparse="none", runtime="torch-fp32")
    q_lang, d_lang = args.xquad_pair.split("-")
    xq = DATA / "xquad_r" / "xquad-r"
    tasks = {
        "scifact": load_beir(DATA / "scifact"),
        f"xquad-r {args.xquad_pair}": squad_task(
            xq / f"{q_lang}.json", xq / f"{d_lang}.json", query_lang=q_lang, doc_lang=d_lang
        ),
    }
    methods: dict[str, dict[str, Any]] = {
        "truncate (first 512 tokens)": {"chunking": "truncate"},
        "chunk (512, overlap 64, mean)": {"chunking": "chunk", "chunk_overlap": 64},
    }
    for interval in (int(i) for i in args.intervals.split(",")):
        methods[f"mcls (a CLS every {interval})"] = {"chunking": "mcls", "mcls_interval": interval}
    results: dict[str, Any] = {}
    for name, task in tasks.items():
        data = long_task(task, args.docs, args.per_doc, args.queries)
        ids = list(data["texts"])
        texts = [data["texts"][i] for i in ids]
        lengths = encoder.count_tokens(texts)
        q = encoder.encode_queries(list(data["queries"].values()), return_dense=True).dense
        results[name] = {
            "documents": len(ids),
            "queries": len(data["queries"]),
            "doc_tokens": {"mean": float(np.mean(lengths)), "max": int(max(lengths))},
            "methods": {},
        }
        for label, options in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            d = encoder.encode_documents(texts, return_dense=True, **options).dense
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            scores = q @ d.T
            run = {
                qid: ranking_from_scores(dict(zip(ids, map(float, row))))
                for qid, row in zip(data["queries"], scores)
            }
            metrics = evaluate(data["qrels"], run, ("ndcg@10", "recall@1", "mrr@10"))
            results[name]["methods"][label] = {**metrics, "seconds": seconds, "cpu_seconds": cpu}
            print(f"{name} {label}: {metrics} ({seconds:.0f}s)", file=sys.stderr)
    report = {
        "benchmark": "long_documents",
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": MODEL,
        "runtime": encoder.describe().get("runtime"),
        "machine": {"cpu": cpu_info(), "cpus": os.cpu_count()},
        "results": results,
    }
    print(_table(report))
    print(f"\nwrote {write_report('long_documents', report)}")
    return report


def _table(report: dict[str, Any]) -> str:
    lines = [
        "| dataset (long docs, mean/max tokens, queries) | method | nDCG@10 | recall@1 | MRR@10 | CPU s |"
    ]
    lines.append("|---|---|---|---|---|---|")
    for name, r in report["results"].items():
        where = f"{name} ({r['documents']}, {r['doc_tokens']['mean']:.0f}/{r['doc_tokens']['max']}, {r['queries']})"
        for label, m in r["methods"].items():
            lines.append(
                f"| {where} | {label} | {m['ndcg@10']:.3f} | {m['recall@1']:.3f} | {m['mrr@10']:.3f} "
                f"| {m['cpu_seconds']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
