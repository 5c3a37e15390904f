"""ColBERT storage precision on real data: retrieval quality with float16 and int8 token vectors.

SciFact (BEIR test split: all 300 queries, the full 5,183-abstract corpus) encoded once with the real
multilingual-e5-small model (dense vector + its token vectors, float32), cached under `benchmarks/.work/`
and reused by every later run (and by `benchmarks/embedding_geometry.py`). Two measurements:

1. Collections: the same vectors upserted into a `colbert_dtype="float16"` and an `"int8"` collection (BM25
   sparse over e5's tokenizer), searched through `m3search.eval` with text queries: nDCG@10 and Recall@100
   of the `colbert` and `all` modes (and the ColBERT-free modes once, for context).
2. Exhaustive MaxSim over the whole corpus in float32, float16 and int8 (the stored forms): score error
   against float32, top-10 overlap with the float32 ranking and nDCG@10 of ColBERT-only ranking.

    flock /tmp/m3search-heavy.lock env PYTHONPATH=src python benchmarks/colbert_quantization.py

Encoding takes ~15 min on 2 busy cores the first time. Prints tables, writes
benchmarks/results/colbert_quantization.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from m3search import Collection
from m3search.encoders import load_encoder
from m3search.eval.datasets import RetrievalTask, load_beir
from m3search.eval.engine import CollectionSearcher
from m3search.eval.metrics import evaluate
from m3search.eval.runner import RunSpec, run_task
from m3search.index.multivector import quantize_int8
from m3search.scoring import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "scifact"
MODEL = "intfloat/multilingual-e5-small"
ENCODE_BLOCK = 256
MEASURES = ("ndcg@10", "recall@10", "recall@100")


class EncodedTask:
    """Float32 dense and token vectors of a task's documents and queries, cached as `.npy` files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        names = json.loads((folder / "ids.json").read_text())
        self.doc_ids, self.query_ids = names["documents"], names["queries"]
        self.dense = np.load(folder / "dense.npy")
        self.tokens = np.load(folder / "tokens.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy")
        self.query_dense = np.load(folder / "query_dense.npy")
        self.query_tokens = np.load(folder / "query_tokens.npy")
        self.query_offsets = np.load(folder / "query_offsets.npy")
        self.token_ids = np.load(folder / "token_ids.npy")

    def doc_tokens(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]])

    def doc_token_ids(self, i: int) -> np.ndarray:
        return self.token_ids[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def build(cls, task: RetrievalTask, folder: Path, model: str) -> EncodedTask:
        """Encode (once) and cache; later calls load the cache."""
        if (folder / "ids.json").is_file():
            return cls(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        encoder = load_encoder(model, sparse="none", runtime="torch-fp32")
        doc_ids = list(task.corpus)
        texts = [task.corpus[d].full_text for d in doc_ids]
        dense, lengths, ids = [], [], []
        start = time.perf_counter()
        with open(tmp / "tokens.f32", "wb") as raw:
            for i in range(0, len(texts), ENCODE_BLOCK):
                out = encoder.encode_documents(
                    texts[i : i + ENCODE_BLOCK], return_dense=True, return_colbert=True
                )
                dense.append(out.dense)
                ids += out.colbert_ids
                for m in out.colbert:
                    raw.write(np.ascontiguousarray(m, np.float32).tobytes())
                    lengths.append(len(m))
                done = i + len(out.dense)
                print(
                    f"\rencoded {done}/{len(texts)} ({done / (time.perf_counter() - start):.1f} docs/s)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        print(file=sys.stderr)
        dim = encoder.colbert_dim
        flat = np.fromfile(tmp / "tokens.f32", np.float32).reshape(-1, dim)
        np.save(tmp / "tokens.npy", flat)
        del flat
        (tmp / "tokens.f32").unlink()
        np.save(tmp / "dense.npy", np.concatenate(dense))
        np.save(tmp / "token_ids.npy", np.concatenate(ids).astype(np.int32))
        np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        query_ids = list(task.queries)
        q = encoder.encode_queries(
            [task.queries[i] for i in query_ids], return_dense=True, return_colbert=True
        )
        np.save(tmp / "query_dense.npy", q.dense)
        np.save(tmp / "query_tokens.npy", np.concatenate(q.colbert).astype(np.float32))
        np.save(
            tmp / "query_offsets.npy",
            np.concatenate([[0], np.cumsum([len(m) for m in q.colbert])]).astype(np.int64),
        )
        (tmp / "ids.json").write_text(
            json.dumps(
                {
                    "model": model,
                    "documents": doc_ids,
                    "queries": query_ids,
                    "encode_s": time.perf_counter() - start,
                }
            )
        )
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return cls(folder)


def collection_runs(
    task: RetrievalTask, enc: EncodedTask, dtype: str, runs: list[RunSpec], scratch: Path
) -> dict:
    """Upsert the cached vectors (text too, for BM25) into a collection storing ColBERT as `dtype`; run `runs`."""
    encoder = load_encoder(MODEL, sparse="bm25", runtime="torch-fp32")
    col = Collection.create(
        scratch / dtype,
        encoder=encoder,
        outputs=["dense", "sparse", "colbert"],
        colbert_dtype=dtype,
        cache=False,
    )
    try:
        for i in range(0, len(enc.doc_ids), 500):
            col.upsert(
                [
                    {
                        "id": d,
                        "text": task.corpus[d].full_text,
                        "dense": enc.dense[j],
                        "colbert": enc.doc_tokens(j),
                    }
                    for j, d in enumerate(enc.doc_ids[i : i + 500], start=i)
                ]
            )
        col.compact()
        colbert_bytes = sum(f.stat().st_size for f in (scratch / dtype).rglob("colbert*.npy"))
        results = run_task(CollectionSearcher(col), task, runs, measures=MEASURES, depth=100, progress=False)
    finally:
        col.close()
        shutil.rmtree(scratch / dtype, ignore_errors=True)
    return {
        "colbert_bytes": colbert_bytes,
        "runs": {r.spec.label: {**r.metrics, "latency_p50_ms": r.latency_summary()["p50"]} for r in results},
    }


def exhaustive_maxsim(task: RetrievalTask, enc: EncodedTask, chunk: int = 16_384) -> dict:
    """ColBERT-only ranking of the whole corpus for every query, with token vectors in each stored form."""
    qt, q_starts = enc.query_tokens, enc.query_offsets[:-1]
    q_len = np.diff(enc.query_offsets)[:, None]
    n_docs, offsets = len(enc.doc_ids), enc.offsets
    scores = {
        name: np.zeros((len(enc.query_ids), n_docs), np.float32) for name in ("float32", "float16", "int8")
    }
    first = 0
    while first < n_docs:  # blocks of whole documents, about `chunk` token vectors each
        last = min(n_docs, max(first + 1, int(np.searchsorted(offsets, offsets[first] + chunk, "right")) - 1))
        block = np.asarray(enc.tokens[offsets[first] : offsets[last]], np.float32)
        codes, scales = quantize_int8(block)
        forms = {
            "float32": block,
            "float16": block.astype(np.float16).astype(np.float32),
            "int8": codes.astype(np.float32) * scales[:, None],
        }
        bounds = offsets[first:last] - offsets[first]
        for name, tokens in forms.items():
            best = np.maximum.reduceat(qt @ tokens.T, bounds, axis=1)  # (query tokens, documents)
            scores[name][:, first:last] = np.add.reduceat(best, q_starts, axis=0) / q_len
        first = last
    out = {}
    reference = scores["float32"]
    ref_top = np.argsort(-reference, axis=1)[:, :10]
    for name, s in scores.items():
        top = np.argsort(-s, axis=1)[:, :100]
        run = {qid: [enc.doc_ids[i] for i in row] for qid, row in zip(enc.query_ids, top)}
        metrics = evaluate(task.qrels, run, ["ndcg@10", "recall@100"])
        err = np.abs(s - reference)
        out[name] = {
            **metrics,
            "top10_overlap_vs_float32": float(
                np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(top, ref_top)])
            ),
            "mean_abs_error": float(err.mean()),
            "max_abs_error": float(err.max()),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=ROOT / ".work" / "scifact-e5-small")
    ap.add_argument("--encode-only", action="store_true", help="encode and cache the vectors, then stop")
    args = ap.parse_args()
    task = load_beir(args.data, split="test")
    enc = EncodedTask.build(task, args.cache, MODEL)
    if args.encode_only:
        return
    result: dict = {
        "model": MODEL,
        "task": task.describe(),
        "tokens": int(enc.offsets[-1]),
        "colbert_dim": int(enc.tokens.shape[1]),
    }
    weights = tuple(DEFAULT_WEIGHTS)
    colbert_runs = [RunSpec("colbert"), RunSpec("all", "weighted", weights), RunSpec("all", "rrf", weights)]
    context_runs = [RunSpec("dense"), RunSpec("sparse"), RunSpec("dense+sparse", "weighted", weights)]
    with tempfile.TemporaryDirectory(prefix="colbert-quant-", dir=ROOT / ".work") as scratch:
        result["collections"] = {
            "float16": collection_runs(task, enc, "float16", colbert_runs + context_runs, Path(scratch)),
            "int8": collection_runs(task, enc, "int8", colbert_runs, Path(scratch)),
        }
    result["exhaustive_maxsim"] = exhaustive_maxsim(task, enc)
    report(result)
    out = ROOT / "results" / "colbert_quantization.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


def report(result: dict) -> None:
    t = result["task"]
    print(
        f"SciFact {t['split']}: {t['documents']:,} documents ({result['tokens']:,} token vectors, "
        f"{result['colbert_dim']}-d), {t['queries']} queries; model {result['model']}"
    )
    f16, i8 = result["collections"]["float16"], result["collections"]["int8"]
    print(
        f"\n{'run':<24} {'float16 nDCG@10':>16} {'int8 nDCG@10':>13} {'float16 R@100':>14} {'int8 R@100':>11}"
    )
    for label, r in f16["runs"].items():
        q = i8["runs"].get(label)
        print(
            f"{label:<24} {r['ndcg@10']:>16.4f} {q['ndcg@10'] if q else float('nan'):>13.4f} "
            f"{r['recall@100']:>14.4f} {q['recall@100'] if q else float('nan'):>11.4f}"
        )
    print(f"ColBERT store bytes: float16 {f16['colbert_bytes']:,}, int8 {i8['colbert_bytes']:,}")
    print(
        f"\n{'exhaustive MaxSim':<18} {'nDCG@10':>8} {'R@100':>7} {'top-10 overlap':>15} {'mean |err|':>11} "
        f"{'max |err|':>10}"
    )
    for name, r in result["exhaustive_maxsim"].items():
        print(
            f"{name:<18} {r['ndcg@10']:>8.4f} {r['recall@100']:>7.4f} {r['top10_overlap_vs_float32']:>15.3f} "
            f"{r['mean_abs_error']:>11.2e} {r['max_abs_error']:>10.2e}"
        )


if __name__ == "__main__":
    main()
