"""ColBERT storage forms on real data: bytes and retrieval quality of every `colbert_dtype`, re-check, pruning.

Token vectors of multilingual-e5-small (384-d, float32) for SciFact test (a fixed 1,000-abstract sample that
keeps every judged abstract, `--scifact-docs 0` for all 5,183) and XQuAD-R paragraphs, English questions against
ar/de/zh paragraphs, encoded once and cached (`--cache`, with each vector's token id for pruning). For each task
and each variant (dtype, re-check depth, punctuation pruning) the same vectors are upserted into a collection
(BM25 sparse over e5's tokenizer) and searched with cached query vectors (BM25 weights from the collection) and
the library's search defaults (each fusion's default weights, `normalize` and candidate depth unless given):
nDCG@10 of `colbert` and `all` (weighted; `--rrf` adds RRF), bytes per token and per document of the ColBERT
store, all against float16 in the same run. `binary` is the library's (1/16 of float16: no sign bits for the 16
dimensions of least spread, a float16 scale per token); `binary (every bit)` is format 4's binary (a bit for every
dimension, dim/8 + 2 bytes a token), written by the library with one constant replaced (`BINARY_FORMS`). Then
exhaustive ColBERT-only MaxSim over each corpus with the vectors in each stored form.

    nice -n 19 env PYTHONPATH=src python benchmarks/colbert_quantization.py --cache /work/cache/colbert/enc

Encoding takes ~2 docs/s on 2 busy cores the first time (`nice`). Prints tables, writes
benchmarks/results/colbert_quantization.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np

from m3search import Collection
from m3search.encoders import load_encoder
from m3search.encoders.runtimes.hardware import cpu_record
from m3search.eval.datasets import RetrievalTask, load_beir, load_tasks, slice_task
from m3search.eval.engine import CollectionSearcher
from m3search.eval.metrics import evaluate
from m3search.eval.report import slug
from m3search.eval.runner import RunSpec, plan_runs, run_task
from m3search.index import multivector
from m3search.index.multivector import (
    CENTER_SAMPLE,
    EXACT_FILE,
    MultiVectorStore,
    fit_center,
)
from m3search.search.fusion import DEFAULT_NORMALIZE, NORMALIZATIONS
from m3search.search.planner import QueryVectors, default_candidates

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


@dataclass(frozen=True)
class Variant:
    """One way of storing ColBERT: a dtype, re-check depth, token pruning; `form`: a binary form other than the
    library's default (`BINARY_FORMS`)."""

    dtype: str
    recheck: int = 0
    prune: str | None = None
    form: str = ""

    @property
    def label(self) -> str:
        extra = [f"recheck {self.recheck}"] * bool(self.recheck) + [f"pruned ({self.prune})"] * bool(
            self.prune
        )
        return " + ".join([self.dtype + f" ({self.form})" * bool(self.form), *extra])


VARIANTS = (
    Variant("float16"),
    Variant("int8"),
    Variant("2bit"),
    Variant("binary"),
    Variant("binary", recheck=30),
    Variant("binary", recheck=50),
    Variant("binary", form="every bit"),
    Variant("binary", recheck=30, form="every bit"),
    Variant("float16", prune="punctuation"),
    Variant("binary", prune="punctuation"),
)


def query_vectors(task: RetrievalTask, enc: EncodedTask) -> dict[str, QueryVectors]:
    """The task's query texts' cached dense and ColBERT vectors (each collection adds its BM25 weights)."""
    return {
        task.queries[q]: QueryVectors(
            enc.query_dense[i], colbert=enc.query_tokens[enc.query_offsets[i] : enc.query_offsets[i + 1]]
        )
        for i, q in enumerate(enc.query_ids)
        if q in task.queries
    }


#: binary forms other than the library's, written by the library with one module attribute replaced:
#: (module, attribute, value). "every bit": format 4's binary, no dimension dropped
BINARY_FORMS = {"every bit": (multivector, "BINARY_DROP_FROM_DIM", 1 << 30)}


def binary_form(form: str) -> AbstractContextManager:
    """While active, the library writes binary ColBERT codes in `form` ("": its own)."""
    return mock.patch.object(*BINARY_FORMS[form]) if form else nullcontext()


def collection_runs(
    task: RetrievalTask,
    enc: EncodedTask,
    variant: Variant,
    runs: list[RunSpec],
    scratch: Path,
    encoder,
    queries: dict[str, QueryVectors],
    normalize: str | None = None,
    candidates: int | None = None,
    reranks: Sequence[int | None] = (None,),
) -> dict:
    """Upsert the cached vectors (text too, for BM25) into a collection storing ColBERT as `variant`; run `runs`
    with `normalize`, `candidates` and each ColBERT re-rank depth of `reranks` (None: the library's defaults;
    with several depths each run's label ends in its depth)."""
    path = scratch / variant.label.replace(" ", "_")
    col = Collection.create(
        path,
        encoder=encoder,
        outputs=["dense", "sparse", "colbert"],
        colbert_dtype=variant.dtype,
        colbert_recheck=variant.recheck,
        colbert_prune=variant.prune,
        cache=False,
    )
    tokens = 0
    try:
        with binary_form(variant.form):  # the codes are made when rows are written to a segment
            for i in range(0, len(enc.doc_ids), 500):
                batch = []
                for j, d in enumerate(enc.doc_ids[i : i + 500], start=i):
                    colbert = enc.doc_tokens(j)
                    if variant.prune:  # what the collection does to the vectors it encodes itself
                        colbert = colbert[~encoder.prunable_tokens(enc.doc_token_ids(j))]
                    tokens += len(colbert)
                    batch.append(
                        {"id": d, "text": task.corpus[d].full_text, "dense": enc.dense[j], "colbert": colbert}
                    )
                col.upsert(batch)
            col.compact()
        files = list(path.rglob("colbert*"))
        stored = sum(f.stat().st_size for f in files if f.name != EXACT_FILE)
        exact = sum(f.stat().st_size for f in files if f.name == EXACT_FILE)
        measured = {}
        for rerank in reranks:
            searcher = CollectionSearcher(
                col, normalize, candidates, reuse_queries=True, shared=dict(queries), rerank=rerank
            )
            for r in run_task(searcher, task, runs, measures=MEASURES, depth=100, progress=False):
                label = r.spec.label + (f" (rerank {rerank or 'default'})" if len(reranks) > 1 else "")
                measured[label] = {**r.metrics, "latency_p50_ms": r.latency_summary()["p50"]}
    finally:
        col.close()
        shutil.rmtree(path, ignore_errors=True)
    return {
        "tokens": tokens,
        "colbert_bytes": stored,
        "exact_bytes": exact,
        "bytes_per_token": stored / max(tokens, 1),
        "bytes_per_document": stored / len(enc.doc_ids),
        "runs": measured,
    }


#: what the stores score with (the binary forms as in `BINARY_FORMS`); "signs only" is plain sign bits without
#: center or scales, for comparison
STORED_FORMS = ("float32", "float16", "int8", "2bit", "binary", "binary (every bit)", "signs only")


def stored_form(block: np.ndarray, name: str, centers: dict[str, np.ndarray]) -> np.ndarray:
    """`block` (float32 token vectors) as the values a store of dtype `name` scores with (binary forms: under
    their `centers`)."""
    if name == "float32":
        return block
    if name == "float16":
        return block.astype(np.float16).astype(np.float32)
    if name == "signs only":
        return np.where(block >= 0, 1.0, -1.0).astype(np.float32)
    store = MultiVectorStore.from_rows([block], dtype=name.split()[0], center=centers.get(name))  # type: ignore[arg-type]
    return store.row(0)


def exhaustive_maxsim(task: RetrievalTask, enc: EncodedTask, chunk: int = 16_384) -> dict:
    """ColBERT-only ranking of the whole corpus for every query, with token vectors in each stored form."""
    qt, q_starts = enc.query_tokens, enc.query_offsets[:-1]
    q_len = np.diff(enc.query_offsets)[:, None]
    n_docs, offsets = len(enc.doc_ids), enc.offsets
    scores = {name: np.zeros((len(enc.query_ids), n_docs), np.float32) for name in STORED_FORMS}
    sample = np.asarray(enc.tokens[:CENTER_SAMPLE], np.float32)  # as a collection's first flush
    centers = {}
    for form in ("", *BINARY_FORMS):
        with binary_form(form):
            centers["binary" + f" ({form})" * bool(form)] = fit_center(sample)
    first = 0
    while first < n_docs:  # blocks of whole documents, about `chunk` token vectors each
        last = min(n_docs, max(first + 1, int(np.searchsorted(offsets, offsets[first] + chunk, "right")) - 1))
        block = np.asarray(enc.tokens[offsets[first] : offsets[last]], np.float32)
        bounds = offsets[first:last] - offsets[first]
        for name in STORED_FORMS:
            tokens = stored_form(block, name, centers)
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
        out[name] = {
            **metrics,
            "top10_overlap_vs_float32": float(
                np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(top, ref_top)])
            ),
        }
    return out


def load_tasks_for(args: argparse.Namespace) -> list[tuple[RetrievalTask, Path]]:
    """SciFact test (a fixed sample of `--scifact-docs` documents, every judged one kept) and the XQuAD-R pairs."""
    scifact = load_beir(args.data, split="test")
    if args.scifact_docs:
        scifact = slice_task(scifact, max_docs=args.scifact_docs)
    tasks = [
        (scifact, args.cache / (f"scifact-{args.scifact_docs // 1000}k" if args.scifact_docs else "scifact"))
    ]
    pairs = [p for p in args.xquad_pairs.split(",") if p]
    for task in load_tasks(
        f"xquad-r:{args.xquad}", query_lang="en", doc_lang=",".join(p.split("-")[1] for p in pairs)
    ):
        tasks.append((slice_task(task, max_queries=args.xquad_queries), args.cache / slug(task.name)))
    return [(slice_task(t, max_queries=args.queries), folder) for t, folder in tasks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--xquad", type=Path, default=DATA.parent / "xquad_r" / "xquad-r")
    ap.add_argument("--xquad-pairs", default="en-ar,en-de,en-zh")
    ap.add_argument("--xquad-queries", type=int, default=300)
    ap.add_argument("--scifact-docs", type=int, default=1000, help="0: the whole corpus (5,183 abstracts)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".work" / "colbert-e5-small")
    ap.add_argument("--queries", type=int, default=None, help="search a fixed sample of each task's queries")
    ap.add_argument("--rrf", action="store_true", help="also run `all` with RRF fusion")
    ap.add_argument(
        "--normalize",
        default=None,
        choices=NORMALIZATIONS,
        help="fusion's score normalization (default: the library's; none: the reference formula)",
    )
    ap.add_argument(
        "--candidates", type=int, default=None, help="candidates per first stage (default: the library's)"
    )
    ap.add_argument(
        "--rerank",
        type=int,
        nargs="+",
        default=[None],
        help="ColBERT re-rank depths to compare, each in the same collection (default: the library's; "
        "at least twice the candidates: every candidate)",
    )
    ap.add_argument(
        "--variants",
        default="",
        help="run only these variants (labels, comma-separated; float16 always runs)",
    )
    ap.add_argument("--only", default="", help="run only the tasks whose name contains this")
    ap.add_argument("--encode-only", action="store_true", help="encode and cache the vectors, then stop")
    ap.add_argument("--output", type=Path, default=ROOT / "results" / "colbert_quantization.json")
    args = ap.parse_args()
    chosen = [v for v in args.variants.split(",") if v]
    unknown = set(chosen) - {v.label for v in VARIANTS}
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {[v.label for v in VARIANTS]}")
    tasks = [
        (task, EncodedTask.build(task, folder, MODEL))
        for task, folder in load_tasks_for(args)
        if args.only in task.name
    ]
    if args.encode_only:
        return
    encoder = load_encoder(MODEL, sparse="bm25", runtime="torch-fp32")
    runs = plan_runs(("colbert", "all"), ("weighted", "rrf") if args.rrf else ("weighted",))
    result: dict = {
        "model": MODEL,
        "cpu": cpu_record(),
        "normalize": args.normalize or DEFAULT_NORMALIZE,
        "tasks": {},
    }
    with tempfile.TemporaryDirectory(prefix="colbert-quant-", dir=args.cache) as scratch:
        for task, enc in tasks:
            print(
                f"{task.name}: {len(enc.doc_ids):,} documents, {len(enc.query_ids)} queries", file=sys.stderr
            )
            queries = query_vectors(task, enc)
            entry: dict = {
                "task": task.describe(),
                "tokens": int(enc.offsets[-1]),
                "colbert_dim": int(enc.tokens.shape[1]),
                "candidates": args.candidates or default_candidates(len(enc.doc_ids)),
                "variants": {},
            }
            for variant in VARIANTS:
                if variant == VARIANTS[0] or not chosen or variant.label in chosen:  # float16: the reference
                    entry["variants"][variant.label] = collection_runs(
                        task,
                        enc,
                        variant,
                        runs,
                        Path(scratch),
                        encoder,
                        queries,
                        args.normalize,
                        args.candidates,
                        args.rerank,
                    )
            entry["exhaustive_maxsim"] = exhaustive_maxsim(task, enc)
            result["tasks"][task.name] = entry
            report_task(task.name, entry)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(
                json.dumps(result, indent=2)
            )  # after each task: a long run keeps its parts
    report_summary(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"written to {args.output}")


def report_task(name: str, entry: dict) -> None:
    print(f"\n{name}: {entry['tokens']:,} token vectors ({entry['colbert_dim']}-d)")
    base = entry["variants"]["float16"]
    labels = list(base["runs"])
    print(
        f"{'variant':<34} {'B/token':>8} {'B/doc':>8} {'exact B/doc':>11} "
        + " ".join(f"{x:>15}" for x in labels)
    )
    for label, v in entry["variants"].items():
        cells = " ".join(
            f"{v['runs'][x]['ndcg@10']:>8.4f} ({v['runs'][x]['ndcg@10'] - base['runs'][x]['ndcg@10']:+.3f})"
            for x in labels
        )
        print(
            f"{label:<34} {v['bytes_per_token']:>8.1f} {v['bytes_per_document']:>8.0f} "
            f"{v['exact_bytes'] / entry['task']['documents']:>11.0f} {cells}"
        )
    print(
        "exhaustive ColBERT-only MaxSim: "
        + ", ".join(
            f"{k} {r['ndcg@10']:.4f} (top-10 overlap {r['top10_overlap_vs_float32']:.3f})"
            for k, r in entry["exhaustive_maxsim"].items()
        )
    )


def report_summary(result: dict) -> None:
    """Mean nDCG@10 change against float16 over the tasks, per variant and run."""
    tasks = list(result["tasks"].values())
    labels = list(tasks[0]["variants"]["float16"]["runs"])
    print(f"\nmean nDCG@10 change vs float16 over {len(tasks)} tasks (points = 0.01)")
    print(f"{'variant':<34} {'bytes vs float16':>16} " + " ".join(f"{x:>15}" for x in labels))
    summary = {}
    for label in tasks[0]["variants"]:
        deltas = {
            x: float(
                np.mean(
                    [
                        t["variants"][label]["runs"][x]["ndcg@10"]
                        - t["variants"]["float16"]["runs"][x]["ndcg@10"]
                        for t in tasks
                    ]
                )
            )
            for x in labels
        }
        ratio = float(
            np.mean(
                [
                    t["variants"][label]["colbert_bytes"] / t["variants"]["float16"]["colbert_bytes"]
                    for t in tasks
                ]
            )
        )
        summary[label] = {"bytes_ratio": ratio, "ndcg@10_delta": deltas}
        print(f"{label:<34} {ratio:>16.4f} " + " ".join(f"{deltas[x]:>+15.4f}" for x in labels))
    result["summary"] = summary


if __name__ == "__main__":
    main()
