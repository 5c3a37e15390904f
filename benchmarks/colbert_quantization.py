"""ColBERT storage precision on real text: float16 and int8 token vectors against float32.

Encodes SciFact abstracts and test queries (real data from ../shared/data) with a bge-m3-layout model, stores
the ColBERT vectors as float16 and as int8 (m3search's two options), and compares MaxSim scores and rankings
with float32: mean/max absolute score error, top-10 overlap with the float32 ranking, and nDCG@10 of
ColBERT-only ranking against the SciFact judgements. Without network access the default model is the tiny
random bge-m3 built by `m3search.testing` (real text, random weights: the agreement figures are meaningful,
the nDCG figures are not); pass `--model BAAI/bge-m3` where the real weights are available.

    python benchmarks/colbert_quantization.py [--model DIR_OR_ID] [--docs 1000]

Prints a table and writes benchmarks/results/colbert_quantization.json.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from m3search.encoders import BGEM3Encoder
from m3search.index.multivector import MultiVectorStore

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "scifact"


def load_scifact(n_docs: int) -> tuple[list[str], list[str], list[str], dict[str, set[str]]]:
    """(doc ids, doc texts, query texts, qrels) restricted to test queries whose relevant docs are kept."""
    qrels: dict[str, set[str]] = {}
    for line in (DATA / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(qid, set()).add(did)
    relevant = set().union(*qrels.values())
    docs = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines()]
    kept = [d for d in docs if d["_id"] in relevant] + [d for d in docs if d["_id"] not in relevant]
    kept = kept[:n_docs]
    ids = {d["_id"] for d in kept}
    queries = {json.loads(line)["_id"]: json.loads(line)["text"]
               for line in (DATA / "queries.jsonl").read_text().splitlines()}
    qrels = {q: r & ids for q, r in qrels.items() if r & ids and q in queries}
    return ([d["_id"] for d in kept], [f"{d['title']}\n{d['text']}" for d in kept],
            [queries[q] for q in qrels], qrels)


def ndcg10(ranking: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranking[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="bge-m3 model id or directory (default: a tiny random one)")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            from m3search.testing import build_random_m3

            args.model = str(build_random_m3(Path(scratch) / "bge-m3-tiny"))
            model_note = "tiny random bge-m3 (2 layers, 64-d): agreement meaningful, nDCG not"
        else:
            model_note = args.model
        encoder = BGEM3Encoder(args.model, runtime="torch-fp32")
    doc_ids, texts, queries, qrels = load_scifact(args.docs)
    docs = encoder.encode_documents(texts, return_dense=False, return_colbert=True, max_length=args.max_length,
                                    show_progress_bar=True).colbert
    qvecs = encoder.encode_queries(queries, return_dense=False, return_colbert=True).colbert
    stores = {"float32": None, "float16": MultiVectorStore.from_rows(docs, "float16"),
              "int8": MultiVectorStore.from_rows(docs, "int8")}
    rows = np.arange(len(docs))
    result: dict = {"model": model_note, "docs": len(docs), "queries": len(queries),
                    "tokens": int(sum(len(d) for d in docs))}
    reference = []
    for q in qvecs:  # float32 MaxSim, the reference semantics
        reference.append(np.array([(q @ d.T).max(axis=1).mean() for d in docs], np.float32))
    for name, store in stores.items():
        errors, overlaps, ndcgs = [], [], []
        for q, ref, qid in zip(qvecs, reference, qrels):
            scores = ref if store is None else store.maxsim(q, rows)
            errors.append(np.abs(scores - ref))
            top = np.argsort(-scores)[:10]
            overlaps.append(len(set(top) & set(np.argsort(-ref)[:10])) / 10)
            ndcgs.append(ndcg10([doc_ids[i] for i in top], qrels[qid]))
        err = np.concatenate(errors)
        bytes_per_token = {"float32": 4, "float16": 2, "int8": 1}[name] * encoder.colbert_dim + (4 if name == "int8" else 0)
        result[name] = {"mean_abs_error": float(err.mean()), "max_abs_error": float(err.max()),
                        "top10_overlap": float(np.mean(overlaps)), "ndcg@10": float(np.mean(ndcgs)),
                        "bytes_per_token": bytes_per_token}
    print(f"{result['docs']} SciFact documents ({result['tokens']:,} tokens), {result['queries']} queries; "
          f"model: {model_note}")
    print(f"{'storage':<8} {'bytes/token':>11} {'mean |err|':>11} {'max |err|':>10} {'top-10 overlap':>15} "
          f"{'nDCG@10':>8}")
    for name in stores:
        r = result[name]
        print(f"{name:<8} {r['bytes_per_token']:>11} {r['mean_abs_error']:>11.2e} {r['max_abs_error']:>10.2e} "
              f"{r['top10_overlap']:>15.3f} {r['ndcg@10']:>8.4f}")
    out = ROOT / "results" / "colbert_quantization.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
