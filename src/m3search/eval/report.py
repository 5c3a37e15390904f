"""Evaluation reports: results.json (the record), a Markdown table (for docs), PNG plots, TREC run files.

results.json, schema `m3search.eval/1`:
    {"schema", "created", "m3search", "model", "settings": {measures, depth, modes, fusions, weights, ...},
     "tasks": [{"task": {name, split, documents, queries, judgments},
                "index": {documents, seconds, docs_per_s, reused (the path, when an existing collection
                          was searched instead of indexing)},
                "runs": [{"label", "mode", "fusion", "weights", "metrics": {measure: mean},
                          "recall_curve": [R@1, ..., R@depth], "latency_ms": {mean, p50, p95}}]}],
     "tuning": optional `TuneResult.to_dict()`}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from m3search import __version__
from m3search.errors import InvalidInputError
from m3search.eval.runner import RunResult
from m3search.extras import require

SCHEMA = "m3search.eval/1"
_LABELS = {"ndcg": "nDCG", "recall": "R", "mrr": "MRR", "map": "MAP"}


def measure_label(measure: str) -> str:
    """`ndcg@10` -> `nDCG@10` for table headers and plot axes."""
    name, _, k = measure.partition("@")
    return f"{_LABELS.get(name, name)}@{k}"


def slug(name: str) -> str:
    """A file-name-safe form of a task name: `xquad-r/en-zh/paragraph` -> `xquad-r_en-zh_paragraph`."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_")


def task_entry(
    task: Mapping[str, Any], index: Mapping[str, float], runs: Iterable[RunResult]
) -> dict[str, Any]:
    """One task's part of results.json."""
    return {"task": dict(task), "index": dict(index), "runs": [r.to_dict() for r in runs]}


def build_results(
    *,
    model: str,
    settings: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    tuning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole results.json document."""
    results = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "m3search": __version__,
        "model": model,
        "settings": dict(settings),
        "tasks": list(tasks),
    }
    if tuning is not None:
        results["tuning"] = dict(tuning)
    return results


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results.json written by `write_report`, checking its schema."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read evaluation results {path}: {exc}") from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        raise InvalidInputError(f"{path} is not an m3search evaluation result (schema {SCHEMA})")
    return results


def hybrid_verdicts(task: Mapping[str, Any], measure: str) -> list[str]:
    """Sentences saying, for each hybrid run, whether it beats the best single mode on `measure`."""
    runs = task["runs"]
    singles = [r for r in runs if r["fusion"] is None]
    hybrids = [r for r in runs if r["fusion"] is not None]
    if not singles or not hybrids:
        return []
    best = max(singles, key=lambda r: r["metrics"][measure])
    label = measure_label(measure)
    lines = [f"Best single mode: **{best['label']}** ({label} {best['metrics'][measure]:.4f})."]
    for run in hybrids:
        delta = run["metrics"][measure] - best["metrics"][measure]
        verdict = "ties it" if abs(delta) < 1e-12 else "beats it" if delta > 0 else "does not beat it"
        lines.append(f"- {run['label']}: {run['metrics'][measure]:.4f}, {verdict} ({delta:+.4f}).")
    return lines


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the first column left-aligned, the others (numbers) right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: Mapping[str, Any]) -> str:
    """Markdown tables: one per task (every measure and latency), then a summary across tasks if several."""
    measures = results["settings"]["measures"]
    primary = measures[0]
    out = [
        f"# Retrieval evaluation: {results['model']}",
        "",
        f"m3search {results['m3search']}, {results['created']}.",
        "",
    ]
    for entry in results["tasks"]:
        task, index = entry["task"], entry["index"]
        built = (
            f"searched the existing collection {index['reused']}"
            if index.get("reused")
            else f"indexed in {index['seconds']:.1f} s ({index['docs_per_s']:.1f} docs/s)"
        )
        out += [
            f"## {task['name']} ({task['split']})",
            "",
            f"{task['queries']} queries, {task['documents']} documents; {built}.",
            "",
        ]
        header = ["run"] + [measure_label(m) for m in measures] + ["ms/query"]
        rows = [
            [r["label"], *(f"{r['metrics'][m]:.4f}" for m in measures), f"{r['latency_ms']['mean']:.1f}"]
            for r in entry["runs"]
        ]
        out += markdown_table(header, rows) + [""]
        out += [
            (
                f"![{measure_label(primary)} per run]({slug(task['name'])}_metrics.png) "
                f"![recall@k]({slug(task['name'])}_recall.png)"
            ),
            "",
        ]
        verdicts = hybrid_verdicts(entry, primary)
        out += verdicts + ([""] if verdicts else [])
    if len(results["tasks"]) > 1:
        labels = [r["label"] for r in results["tasks"][0]["runs"]]
        out += [f"## Summary: {measure_label(primary)}", ""]
        rows = [
            [e["task"]["name"]] + [f"{r['metrics'][primary]:.4f}" for r in e["runs"]]
            for e in results["tasks"]
        ]
        means = [
            sum(e["runs"][i]["metrics"][primary] for e in results["tasks"]) / len(results["tasks"])
            for i in range(len(labels))
        ]
        out += markdown_table(["task"] + labels, rows + [["mean"] + [f"{m:.4f}" for m in means]]) + [""]
        out += [f"![{measure_label(primary)} per task](summary_{slug(primary)}.png)", ""]
    if "tuning" in results:
        t = results["tuning"]
        out += [
            "## Tuned fusion weights",
            "",
            (
                f"{t['method']} search on the {t['dev_split']!r} split: best (dense, sparse, colbert) = "
                f"{tuple(t['best'])} with dev {measure_label(t['metric'])} {t['best_score']:.4f} over "
                f"{len(t['trials'])} trials."
            ),
            "",
        ]
    return "\n".join(out)


def _pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend (the `eval` extra)."""
    require("matplotlib", "eval", "plotting evaluation reports").use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_task(entry: Mapping[str, Any], measures: Sequence[str], out_dir: Path) -> list[Path]:
    """Two PNGs for one task: each measure per run (grouped bars) and the recall@k curves."""
    plt = _pyplot()
    name = entry["task"]["name"]
    runs = entry["runs"]
    paths = []
    fig, ax = plt.subplots(
        figsize=(max(8.0, 1.2 * len(measures) + 0.3 * len(runs) + 2.5), 4.2), layout="constrained"
    )
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(measures))]
        ax.bar(xs, [run["metrics"][m] for m in measures], width, label=run["label"])
    ax.set_xticks(range(len(measures)), [measure_label(m) for m in measures])
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{name} ({entry['task']['split']})")
    fig.legend(loc="outside right upper", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    paths.append(out_dir / f"{slug(name)}_metrics.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8.0, 4.2), layout="constrained")
    for run in runs:
        curve = run["recall_curve"]
        ax.plot(range(1, len(curve) + 1), curve, label=run["label"])
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{name}: recall@k")
    fig.legend(loc="outside right upper", fontsize="small")
    ax.grid(alpha=0.3)
    paths.append(out_dir / f"{slug(name)}_recall.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def plot_summary(results: Mapping[str, Any], measure: str, out_dir: Path) -> Path:
    """One PNG across tasks: `measure` per task, one bar per run."""
    plt = _pyplot()
    tasks = results["tasks"]
    labels = [r["label"] for r in tasks[0]["runs"]]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(tasks) + 4.5), 4.2), layout="constrained")
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [t["runs"][i]["metrics"][measure] for t in tasks], width, label=label)
    ax.set_xticks(
        range(len(tasks)), [t["task"]["name"] for t in tasks], rotation=45, ha="right", fontsize="small"
    )
    ax.set_ylabel(measure_label(measure))
    ax.set_ylim(0, 1.02)
    fig.legend(loc="outside right upper", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    path = out_dir / f"summary_{slug(measure)}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_trec_runs(task_name: str, runs: Iterable[RunResult], out_dir: Path) -> list[Path]:
    """One TREC run file per run (`qid Q0 docid rank score label`), readable by trec_eval."""
    folder = out_dir / "runs" / slug(task_name)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in runs:
        path = folder / f"{slug(run.spec.label)}.trec"
        with path.open("w", encoding="utf-8") as f:
            for qid, hits in run.hits.items():
                for rank, (doc, score) in enumerate(hits, 1):
                    f.write(f"{qid} Q0 {doc} {rank} {score!r} {slug(run.spec.label)}\n")
        paths.append(path)
    return paths


def write_json_and_markdown(results: Mapping[str, Any], text: str, out: Path) -> list[Path]:
    """results.json and results.md (`text`) in `out`."""
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(text + "\n", encoding="utf-8")
    return [json_path, md_path]


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write results.json, results.md and the plots into `out_dir`; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_json_and_markdown(results, markdown(results), out)
    measures = results["settings"]["measures"]
    for entry in results["tasks"]:
        paths += plot_task(entry, measures, out)
    if len(results["tasks"]) > 1:
        paths.append(plot_summary(results, measures[0], out))
    return paths
