"""The embedding cache: model outputs keyed by (model, output kinds, settings, text hash), shared on disk.

Re-indexing a text that was encoded before (the same document upserted again, a collection rebuilt with other
index settings, an evaluation run twice) reads its vectors back instead of running the model. Entries are an
optimisation, not data: the cache uses `synchronous=NORMAL`, and a failed cache read or write only logs.
ColBERT vectors are kept as float16, the precision collections store them in.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3search.settings import home_dir
from m3search.store.database import pack_sparse, unpack_sparse

log = logging.getLogger(__name__)

CHUNK = 500


def default_cache_path() -> Path:
    """`$M3SEARCH_HOME/embedding-cache.sqlite`."""
    return home_dir() / "embedding-cache.sqlite"


class EmbeddingCache:
    """A SQLite table of encoded texts; `get`/`put` take a key prefix naming the model and settings."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS entries (key BLOB PRIMARY KEY, dense BLOB, sparse BLOB, "
            "colbert BLOB, colbert_dim INTEGER)"
        )
        self._mutex = threading.Lock()

    @staticmethod
    def _key(prefix: str, text: str) -> bytes:
        return hashlib.sha256(prefix.encode() + b"\x00" + text.encode("utf-8")).digest()

    def get(self, prefix: str, texts: Sequence[str]) -> dict[int, dict[str, Any]]:
        """index in `texts` -> {"dense", "sparse", "colbert"} for the texts found."""
        keys = [self._key(prefix, t) for t in texts]
        by_key: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            by_key.setdefault(key, []).append(i)
        out: dict[int, dict[str, Any]] = {}
        unique = list(by_key)
        try:
            with self._mutex:
                for start in range(0, len(unique), CHUNK):
                    chunk = unique[start : start + CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for key, dense, sparse, colbert, dim in self._conn.execute(
                        f"SELECT key, dense, sparse, colbert, colbert_dim FROM entries WHERE key IN ({marks})",
                        chunk,
                    ):
                        vectors = {
                            "dense": None if dense is None else np.frombuffer(dense, np.float32),
                            "sparse": None if sparse is None else unpack_sparse(sparse),
                            "colbert": None
                            if colbert is None
                            else np.frombuffer(colbert, np.float16).reshape(-1, dim),
                        }
                        for i in by_key[key]:
                            out[i] = vectors
        except sqlite3.Error as exc:
            log.warning("embedding cache %s unreadable (%s); encoding everything", self.path, exc)
            return {}
        return out

    def put(self, prefix: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Store vectors per text (best effort)."""
        rows = []
        for text, v in entries.items():
            colbert = v.get("colbert")
            rows.append(
                (
                    self._key(prefix, text),
                    None if v.get("dense") is None else np.asarray(v["dense"], np.float32).tobytes(),
                    None if v.get("sparse") is None else pack_sparse(v["sparse"]),
                    None if colbert is None else np.asarray(colbert, np.float16).tobytes(),
                    None if colbert is None else int(np.shape(colbert)[1]),
                )
            )
        try:
            with self._mutex:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.warning("could not write to the embedding cache %s: %s", self.path, exc)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()
