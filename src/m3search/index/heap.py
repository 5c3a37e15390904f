"""Binary min-heaps kept in the first `size` entries of an array, for the compiled kernels' top-k lists (numba:
no Python objects in a query's inner loop). A max-heap is a min-heap of negated values."""

from __future__ import annotations

import numba
import numpy as np

#: How the index's compiled kernels are compiled: cached on disk (a process loads them, ~0.3 s), the GIL released.
jit = numba.njit(cache=True, nogil=True)


@jit
def sift_down(heap: np.ndarray, i: int, size: int) -> None:
    """Restore the min-heap property of `heap[:size]` below position `i`."""
    value = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if not heap[child] < value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value


@jit
def push(heap: np.ndarray, size: int, value: float | np.number) -> None:
    """Add `value` to the min-heap `heap[:size]` (which becomes `heap[:size + 1]`)."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if not value < heap[parent]:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = value


@jit
def pop(heap: np.ndarray, size: int) -> None:
    """Drop the smallest value of the min-heap `heap[:size]` (which becomes `heap[:size - 1]`)."""
    heap[0] = heap[size - 1]
    sift_down(heap, 0, size - 1)


@jit
def push_bounded(heap: np.ndarray, size: int, value: float | np.number, limit: int) -> int:
    """Add `value` to the min-heap `heap[:size]`, then drop its smallest while it holds more than `limit`
    (a max-heap of negated values keeps the `limit` smallest values seen); returns the new size."""
    push(heap, size, value)
    size += 1
    if size > limit:
        pop(heap, size)
        size -= 1
    return size
