"""Tuning a collection's fusion without labels: what `m3search index tune --pseudo N` stores, against tuning on
labelled queries and against the library default, all judged on held-out labelled queries of the same
collection (nDCG@10, recall@100).

Labelled tuning uses the dataset's `--tune-split` (SciFact: train) or, for a set with one split (XQuAD-R), the
queries outside the fixed 300-question sample that docs/RESULTS.md reports; the held-out queries are the
`--test-split` (that sample for XQuAD-R). Pseudo-queries are sentences of the collection's own documents.

    PYTHONPATH=src python benchmarks/pseudo_tune.py --collection /work/cache/fusion2/scifact \\
        --dataset ../shared/data/scifact
    PYTHONPATH=src python benchmarks/pseudo_tune.py --dataset xquad-r:../shared/data/xquad_r/xquad-r \\
        --query-lang en --doc-lang de --collection /work/cache/fusion2/xquad/xquad-r-en-de-paragraph

Prints a table, writes benchmarks/results/pseudo_tune-<task>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from m3search import Collection
from m3search.encoders.runtimes.hardware import cpu_record
from m3search.eval.datasets import RetrievalTask, load_tasks, slice_task
from m3search.eval.engine import CollectionSearcher
from m3search.eval.report import slug
from m3search.eval.runner import RunSpec, run_task, tune_fusion
from m3search.eval.tune import judged_task, sample_pseudo_queries
from m3search.search.fusion import DEFAULT_FUSION, FUSIONS, default_weights

ROOT = Path(__file__).resolve().parent
#: docs/RESULTS.md's XQuAD-R sample: the first 300 questions of a pair (`slice_task`).
SAMPLE = 300
MEASURES = ["ndcg@10", "recall@100"]


def splits(args: argparse.Namespace) -> tuple[RetrievalTask, RetrievalTask]:
    """(labelled tuning queries, held-out test queries), disjoint."""
    langs = {"query_lang": args.query_lang, "doc_lang": args.doc_lang} if args.query_lang else {}
    (test,) = load_tasks(args.dataset, split=args.test_split, **langs)
    if args.tune_split:
        (tune,) = load_tasks(args.dataset, split=args.tune_split, **langs)
        return slice_task(tune, max_queries=args.labelled), test
    reported = slice_task(test, max_queries=SAMPLE)
    rest = [q for q in test.queries if q not in reported.queries][: args.labelled]
    tune = RetrievalTask(
        test.name, "tune", test.corpus, {q: test.queries[q] for q in rest}, {q: test.qrels[q] for q in rest}
    )
    return tune, reported


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, required=True, help="the dataset's corpus, indexed")
    ap.add_argument("--dataset", required=True, help="as `m3search eval --dataset`")
    ap.add_argument("--query-lang", default=None)
    ap.add_argument("--doc-lang", default=None)
    ap.add_argument("--tune-split", default=None, help="labelled tuning split (default: train for BEIR sets)")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--labelled", type=int, default=400, help="labelled tuning queries (at most)")
    ap.add_argument("--pseudo", type=int, default=400, help="pseudo-queries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fusion", default=",".join(FUSIONS), help="fusions tuned (as `index tune --fusion`)")
    ap.add_argument("--runtime", default="torch-fp32")
    args = ap.parse_args()
    if args.tune_split is None and not args.dataset.startswith(("xquad-r:", "squad:")):
        args.tune_split = "train"
    tune, test = splits(args)
    fusions = args.fusion.split(",")
    result: dict = {"args": vars(args), "cpu": cpu_record()["model name"], "tuned": {}}
    with Collection.open(args.collection, runtime=args.runtime, readonly=True) as collection:
        searcher = CollectionSearcher(collection).reusing_queries()
        mode = collection.default_mode
        pseudo_texts, pseudo_qrels = sample_pseudo_queries(collection, args.pseudo, seed=args.seed)
        sources = {
            "labelled": judged_task(tune.name, dict(tune.queries), tune.qrels),
            "pseudo": judged_task(tune.name, pseudo_texts, pseudo_qrels),
        }
        runs = [RunSpec(kind) for kind in ("dense", "sparse", "colbert")]
        runs.append(
            RunSpec(mode, DEFAULT_FUSION, default_weights(DEFAULT_FUSION, mode), tag="library default")
        )
        for name, task in sources.items():
            start = time.perf_counter()
            choice = tune_fusion(searcher, task, mode=mode, fusions=fusions)
            result["tuned"][name] = {
                "queries": len(task.queries),
                "seconds": time.perf_counter() - start,
                "fusion": choice.fusion,
                "weights": list(choice.weights),
                "tuning_score": choice.score,
                "default_score": choice.default_score,
            }
            runs.append(RunSpec(mode, choice.fusion, choice.weights, tag=f"tuned on {name}"))
        scored = run_task(searcher, test, runs, measures=MEASURES, progress=False)
    result["test"] = {"task": test.name, "queries": len(test.queries)}
    result["test"]["runs"] = {r.spec.label: r.metrics for r in scored}
    out = ROOT / "results" / f"pseudo_tune-{slug(test.name)}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        f"{test.name}: tuned on {len(sources['labelled'].queries)} labelled / "
        f"{len(sources['pseudo'].queries)} pseudo-queries, judged on {len(test.queries)} held-out queries\n"
    )
    print("| run | " + " | ".join(MEASURES) + " |\n|---|" + "---:|" * len(MEASURES))
    for label, metrics in result["test"]["runs"].items():
        print(f"| {label} | " + " | ".join(f"{metrics[m]:.4f}" for m in MEASURES) + " |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
