"""Retrieval evaluation on real data: datasets, metrics, the query runner, weight tuning and reports."""

from m3search.eval.datasets import Document, RetrievalTask, load_beir, load_tasks, slice_task, squad_task
from m3search.eval.metrics import DEFAULT_MEASURES, evaluate, per_query, recall_curve

__all__ = [
    "DEFAULT_MEASURES",
    "Document",
    "RetrievalTask",
    "evaluate",
    "load_beir",
    "load_tasks",
    "per_query",
    "recall_curve",
    "slice_task",
    "squad_task",
]
