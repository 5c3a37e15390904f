"""The metadata index of a segment (or of the incremental level): what filters run on, without touching SQLite.

For every metadata path (a dotted field name, as filters write it) the index holds typed entries (row, kind,
value), grouped by path and ordered by row:

- the values that SQLite's `json_each(metadata, path)` yields — the value itself, each element of an array, each
  member of an object (the filter semantics were first defined in SQL over `json_each`, and stay exactly so);
  `kind` is null / true / false / number / text; a number's `value` is the number (float64), a text's its rank
  among the index's distinct strings, sorted by code point, so string ranges become rank ranges;
- a `present` entry where the value is an array or an object, so that `$exists` sees empty ones too.

Segments are immutable, so this is written once next to the vectors and memory-mapped: a filter on a field
reads only that field's entries (13 bytes each) and evaluates as numpy comparisons — milliseconds at a million
documents, the first time too. Hand-written because it is part of the storage format; an SQLite expression
index per field would have to be declared ahead, and cannot answer "any element of an array" without a scan.
Integers are compared as float64: exact up to 2^53.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3search.threads import load_array

NULL, TRUE, FALSE, NUMBER, TEXT, PRESENT = range(6)

PATHS_FILE = "meta_paths.json"
ARRAYS = {
    "entry_ptr": "meta_entry_ptr.npy",
    "rows": "meta_rows.npy",
    "kinds": "meta_kinds.npy",
    "values": "meta_values.npy",
    "strings": "meta_strings.npy",
    "string_offsets": "meta_string_offsets.npy",
}

Path_ = tuple[str, ...]


def _scalar(value: Any) -> tuple[int, Any] | None:
    """(kind, value) of a JSON scalar; None for arrays and objects."""
    if value is None:
        return NULL, 0.0
    if value is True:
        return TRUE, 0.0
    if value is False:
        return FALSE, 0.0
    if isinstance(value, (int, float)):
        return NUMBER, float(value)
    if isinstance(value, str):
        return TEXT, value
    return None


def _flatten(metadata: dict[str, Any], prefix: Path_, emit: Any) -> None:
    """Call emit(path, kind, value) for every entry of one document's metadata."""
    for key, value in metadata.items():
        path = prefix + (key,)
        if isinstance(value, (list, dict)):
            emit(path, PRESENT, 0.0)
            for item in value if isinstance(value, list) else value.values():
                entry = _scalar(item)
                if entry is not None:
                    emit(path, *entry)
            if isinstance(value, dict):
                _flatten(value, path, emit)
        else:
            emit(path, *_scalar(value))  # type: ignore[misc]


class MetadataIndex:
    """Entries `entry_ptr[p]:entry_ptr[p+1]` of path p: `rows`, `kinds`, `values`; strings by rank in
    `strings[string_offsets[i]:string_offsets[i+1]]` (UTF-8)."""

    def __init__(
        self,
        n_rows: int,
        paths: Sequence[Path_],
        entry_ptr: np.ndarray,
        rows: np.ndarray,
        kinds: np.ndarray,
        values: np.ndarray,
        strings: np.ndarray,
        string_offsets: np.ndarray,
    ) -> None:
        self.n_rows = n_rows
        self.paths = {tuple(p): i for i, p in enumerate(paths)}
        self.entry_ptr, self.rows, self.kinds, self.values = entry_ptr, rows, kinds, values
        self.strings, self.string_offsets = strings, string_offsets
        self._string_count = len(string_offsets) - 1

    @classmethod
    def build(cls, metadata: Iterable[str | dict[str, Any]]) -> MetadataIndex:
        """Index the metadata (JSON text or parsed objects) of rows 0, 1, ... in order."""
        per_path: dict[Path_, tuple[list[int], list[int], list[Any]]] = {}
        row = -1

        def emit(path: Path_, kind: int, value: Any) -> None:
            lists = per_path.get(path)
            if lists is None:
                lists = per_path[path] = ([], [], [])
            lists[0].append(row)
            lists[1].append(kind)
            lists[2].append(value)

        for row, meta in enumerate(metadata):  # noqa: B007 - row counts the rows
            _flatten(json.loads(meta) if isinstance(meta, str) else meta, (), emit)
        n_rows = row + 1
        strings = sorted(
            {v for _, kinds, values in per_path.values() for k, v in zip(kinds, values) if k == TEXT}
        )
        rank = {s: float(i) for i, s in enumerate(strings)}
        paths = sorted(per_path)
        columns = (
            [np.array(per_path[p][0], np.int32) for p in paths],
            [np.array(per_path[p][1], np.uint8) for p in paths],
            [
                np.array([rank[v] if k == TEXT else v for k, v in zip(*per_path[p][1:])], np.float64)
                for p in paths
            ],
        )
        return cls._from_columns(n_rows, paths, columns, strings)

    @classmethod
    def merge(cls, parts: Sequence[tuple[MetadataIndex, np.ndarray]], n_rows: int) -> MetadataIndex:
        """The index `build` makes for a merged segment, from its sources' indexes instead of their JSON: each
        part pairs a source with its rows' new numbers (-1: dropped). Entries are renumbered and string ranks
        re-ranked; no JSON is parsed (a 1M-row merge parsed every document's metadata)."""
        kept: dict[Path_, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {}
        used: list[set[int]] = [set() for _ in parts]
        for i, (index, new_rows) in enumerate(parts):
            for path in index.paths:
                rows, kinds, values = index.entries(path)
                rows = new_rows[rows]
                alive = rows >= 0
                if alive.any():
                    rows, kinds, values = rows[alive], kinds[alive], np.array(values[alive], np.float64)
                    kept.setdefault(path, []).append((i, rows, kinds, values))
                    used[i].update(values[kinds == TEXT].astype(np.int64).tolist())
        texts = [{r: index.string(r) for r in ranks} for (index, _), ranks in zip(parts, used)]
        strings = sorted({s for part in texts for s in part.values()})
        rank = {s: r for r, s in enumerate(strings)}
        remaps = []
        for (index, _), part in zip(parts, texts):
            remap = np.zeros(index._string_count, np.float64)
            remap[list(part)] = [rank[s] for s in part.values()]
            remaps.append(remap)
        paths = sorted(kept)
        columns: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        for path in paths:
            for i, _, kinds, values in kept[path]:
                text = kinds == TEXT
                values[text] = remaps[i][values[text].astype(np.int64)]
            rows, kinds, values = (np.concatenate([piece[c] for piece in kept[path]]) for c in (1, 2, 3))
            order = np.argsort(rows, kind="stable")  # a row's entries come from one source, in their order
            for column, array in zip(columns, (rows, kinds, values)):
                column.append(array[order])
        return cls._from_columns(n_rows, paths, columns, strings)

    @classmethod
    def _from_columns(
        cls,
        n_rows: int,
        paths: Sequence[Path_],
        columns: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]],
        strings: Sequence[str],
    ) -> MetadataIndex:
        """The index of each path's entries (`columns`: its rows, kinds and values, in path order) and the
        sorted distinct strings that text values rank."""
        rows, kinds, values = columns
        encoded = [s.encode("utf-8") for s in strings]
        return cls(
            n_rows,
            paths,
            np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)]).astype(np.int64),
            np.concatenate([np.empty(0, np.int32), *rows]).astype(np.int32),
            np.concatenate([np.empty(0, np.uint8), *kinds]).astype(np.uint8),
            np.concatenate([np.empty(0, np.float64), *values]).astype(np.float64),
            np.frombuffer(b"".join(encoded), np.uint8).copy(),
            np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)]).astype(np.int64),
        )

    def entries(self, path: Path_) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, kinds, values) of `path`; empty when no row has it."""
        p = self.paths.get(path)
        if p is None:
            empty = np.empty(0)
            return empty.astype(np.int32), empty.astype(np.uint8), empty
        start, end = int(self.entry_ptr[p]), int(self.entry_ptr[p + 1])
        return self.rows[start:end], self.kinds[start:end], self.values[start:end]

    def string(self, rank: int) -> str:
        """The string of the given rank."""
        return bytes(self.strings[self.string_offsets[rank] : self.string_offsets[rank + 1]]).decode("utf-8")

    def string_rank(self, text: str, side: str = "left") -> int:
        """Where `text` falls among the sorted distinct strings (as `bisect_left` / `bisect_right`)."""
        find = bisect.bisect_left if side == "left" else bisect.bisect_right
        return find(range(self._string_count), text, key=self.string)

    def save(self, directory: Path) -> list[Path]:
        """Write the index into `directory`; returns the files written."""
        paths = [directory / PATHS_FILE]
        paths[0].write_text(json.dumps(sorted(self.paths, key=self.paths.__getitem__), ensure_ascii=False))
        for name, file in ARRAYS.items():
            paths.append(directory / file)
            np.save(paths[-1], getattr(self, name))
        return paths

    @classmethod
    def load(cls, directory: Path, n_rows: int) -> MetadataIndex:
        """Open a saved index, memory-mapped."""
        paths = json.loads((directory / PATHS_FILE).read_text())
        arrays = {name: load_array(directory / file, mmap=True) for name, file in ARRAYS.items()}
        return cls(n_rows, [tuple(p) for p in paths], **arrays)
