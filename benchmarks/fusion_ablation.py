"""Fusion ablation on XQuAD-R: every fusion with and without the per-query sparse signal, on the same candidates.

For each English→X task the collection `m3search eval --collection DIR` built is opened, every question is
encoded once (dense and ColBERT vectors shared by all tasks; BM25 weights and the query's BM25 ceiling from each
collection), and the first-stage candidates (dense top-N ∪ BM25 top-N, as the planner takes them) are scored
exactly in all three modes and cached under `--workdir`. Rankings are then fused by `m3search.search.fusion`
itself, so each row is what `Collection.search` returns with those settings, for a dozen settings at the cost of
one encoding. Cheap to re-run once cached; encoding takes ~10 min a task on 2 busy cores.

    m3search eval --model intfloat/multilingual-e5-small --dataset xquad-r:../shared/data/xquad_r/xquad-r \\
        --query-lang en --doc-lang all --max-queries 3 --runtime torch-fp32 --modes dense,sparse,colbert \\
        --collection /work/cache/fusion/xquad --output /tmp/index-only       # builds the collections once
    PYTHONPATH=src python benchmarks/fusion_ablation.py --collections /work/cache/fusion/xquad \\
        --workdir /work/cache/fusion/exp --langs ar,de,el,en,es,hi

Prints a Markdown table of nDCG@10 per task and writes benchmarks/results/fusion_ablation.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
import platform
import time
from pathlib import Path

import numpy as np

from m3search import Collection
from m3search.encoders.runtimes.hardware import cpu_record
from m3search.eval.datasets import load_tasks, slice_task
from m3search.eval.engine import load_model
from m3search.eval.metrics import evaluate
from m3search.eval.report import slug
from m3search.search import planner
from m3search.search.fusion import rrf_fusion, signal_weights, weighted_fusion
from m3search.search.planner import QueryVectors
from m3search.store.backends.base import SearchPlan

ROOT = Path(__file__).resolve().parent
KINDS = ("dense", "sparse", "colbert")
W = (0.4, 0.2, 0.4)
#: (mode, (fusion, normalize, weights)) rows; None: the single mode.
ROWS = [("dense", None), ("sparse", None), ("colbert", None)]
for _mode in ("dense+sparse", "all"):
    ROWS += [
        (_mode, ("weighted", "minmax", W)),
        (_mode, ("weighted", "signal", W)),
        (_mode, ("rrf", "minmax", (1.0, 1.0, 1.0))),
        (_mode, ("rrf", "minmax", W)),
        (_mode, ("rrf", "signal", W)),
        (_mode, ("dbsf", "minmax", W)),
        (_mode, ("dbsf", "signal", W)),
    ]
#: How much weight ColBERT needs to lead here (what a per-collection `m3search index tune` can find).
ROWS += [("all", ("weighted", "signal", (0.2, 0.2, 0.6))), ("all", ("weighted", "signal", (0.1, 0.2, 0.7)))]


def _record(seen: list, found: planner.Candidates) -> list[tuple[int, float, dict[str, float]]]:
    """A ranker that keeps the candidates, with every one's ColBERT score (the search asks for them late, for
    its re-rank depth only), and returns them all, in their order."""
    if found.late is not None and "colbert" not in found.scores:
        found.scores["colbert"] = found.late(np.arange(len(found.keys)))
    seen.append(found)
    return [(int(key), 0.0, {}) for key in found.keys]


def dump(task, path: Path, encoder, shared: dict[str, QueryVectors], depth: int) -> list[dict]:
    """Each query's candidates (ids), their exact per-mode scores, first-stage ranks and BM25 ceiling, as the
    collection's backend gathers them for mode `all` (the fusion step replaced by one that records them)."""
    collection = Collection.open(path, encoder=encoder)
    plan = SearchPlan("all", 1, depth)
    records = []
    for qid, text in task.queries.items():
        if text not in shared:
            shared[text] = collection.encode_query(text)
        bm25 = collection.encode_query(text, ["sparse"])
        query = QueryVectors(shared[text].dense, bm25.sparse, shared[text].colbert, bm25.sparse_ceiling)
        seen: list[planner.Candidates] = []
        hits = collection.backend.search(query, plan, functools.partial(_record, seen))
        found = seen[-1]  # the version the hits were read from (the backend retries on a concurrent change)
        records.append(
            {
                "qid": qid,
                "ids": [h.id for h in hits],
                "scores": found.scores,
                "ranks": {k: planner._ranks(k, found) for k in ("dense", "sparse")},
                "ceiling": bm25.sparse_ceiling,
                "rel": dict(task.qrels[qid]),
            }
        )
    collection.close()
    return records


def fused(record: dict, mode: str, fusion: str, normalize: str, weights) -> np.ndarray:
    """The candidates' fused scores under these settings, by m3search's own fusion functions."""
    kinds = planner.MODE_KINDS[mode]
    scores = {k: np.asarray(record["scores"][k], np.float64) for k in kinds}
    w = {k: weights[KINDS.index(k)] for k in kinds}
    if normalize == "signal":
        w = signal_weights(w, scores, record["ceiling"])
    if fusion == "rrf":
        order = {k: np.argsort(np.argsort(-scores[k], kind="stable"), kind="stable") + 1 for k in kinds}
        return rrf_fusion({k: np.asarray(record["ranks"].get(k, order[k])) for k in kinds}, w)
    return weighted_fusion(scores, w, "dbsf" if fusion == "dbsf" else normalize)


def single(record: dict, kind: str) -> np.ndarray:
    """One mode's ranking: its own first-stage list (ColBERT re-ranks the dense one)."""
    gate = "dense" if kind == "colbert" else kind
    return np.where(np.asarray(record["ranks"][gate]) > 0, record["scores"][kind], -np.inf)


def label(mode: str, spec) -> str:
    if spec is None:
        return mode
    fusion, normalize, weights = spec
    return f"{mode} ({fusion} {'/'.join(f'{w:g}' for w in weights)}, {normalize})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="../shared/data/xquad_r/xquad-r")
    parser.add_argument("--collections", type=Path, required=True, help="`m3search eval --collection` folder")
    parser.add_argument("--workdir", type=Path, required=True, help="where candidates are cached")
    parser.add_argument("--langs", default="ar,de,el,en,es,hi")
    parser.add_argument("--max-queries", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    tasks = load_tasks(f"xquad-r:{args.dataset}", query_lang="en", doc_lang=args.langs)
    encoder, shared, table = None, {}, {}
    args.workdir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        task = slice_task(task, max_queries=args.max_queries)
        cached = args.workdir / f"{slug(task.name)}.pkl"
        if not cached.is_file():
            encoder = encoder or load_model(
                "intfloat/multilingual-e5-small", outputs=KINDS, runtime="torch-fp32"
            )
            start = time.perf_counter()
            records = dump(task, args.collections / slug(task.name), encoder, shared, args.candidates)
            print(f"{task.name}: {len(records)} queries in {time.perf_counter() - start:.0f} s", flush=True)
            cached.write_bytes(pickle.dumps(records))
        records = pickle.loads(cached.read_bytes())
        qrels = {r["qid"]: r["rel"] for r in records}
        table[task.name] = {}
        for mode, spec in ROWS:
            run = {}
            for r in records:
                scores = single(r, mode) if spec is None else fused(r, mode, *spec)
                order = [i for i in np.argsort(-scores, kind="stable")[:10] if np.isfinite(scores[i])]
                run[r["qid"]] = [r["ids"][i] for i in order]  # a single mode returns only its own list
            table[task.name][label(mode, spec)] = evaluate(qrels, run, ["ndcg@10"])["ndcg@10"]
    names = list(table)
    print("| run | " + " | ".join(n.split("/")[1] for n in names) + " | mean |")
    print("|---|" + "---:|" * (len(names) + 1))
    for mode, spec in ROWS:
        values = [table[n][label(mode, spec)] for n in names]
        print(
            f"| {label(mode, spec)} | "
            + " | ".join(f"{v:.4f}" for v in values)
            + f" | {np.mean(values):.4f} |"
        )
    out = ROOT / "results" / "fusion_ablation.json"
    out.write_text(
        json.dumps(
            {
                "ndcg@10": table,
                "settings": vars(args) | {"collections": str(args.collections), "workdir": str(args.workdir)},
                "cpu": cpu_record(),
                "python": platform.python_version(),
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
