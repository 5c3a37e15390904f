"""The local engine's compaction policy, as a pure function of segment sizes (tiered merging)."""

from __future__ import annotations

import math
from collections.abc import Mapping


def merge_group(sizes: Mapping[str, int], flush_docs: int, merge_factor: int) -> list[str] | None:
    """The segments to merge next, or None: once `merge_factor` segments share a size class (class c holds
    sizes in [flush_docs·factor^c, flush_docs·factor^(c+1))), they are merged into one."""
    classes: dict[int, list[str]] = {}
    for name, rows in sizes.items():
        size = max(rows, 1)
        classes.setdefault(max(0, int(math.log(max(size / flush_docs, 1.0), merge_factor))), []).append(name)
    full = [names for names in classes.values() if len(names) >= merge_factor]
    return full[0] if full else None
