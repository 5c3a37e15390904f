"""Progress of long phases on stderr: tqdm bars (only on a terminal) and one-line notes, both off under --quiet.

Every phase that can take more than a few seconds (first-start model conversion, the runtime guard, indexing,
querying, weight tuning) reports through this module, so one switch (`set_quiet`, the CLI's `--quiet`, or
`M3SEARCH_QUIET=1`) silences them all and stdout stays free for results.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) progress bars and notes for this process."""
    _state["quiet"] = quiet


def is_quiet() -> bool:
    """Whether progress is silenced, by `set_quiet` or by a non-empty, non-zero `M3SEARCH_QUIET`."""
    return _state["quiet"] or os.environ.get("M3SEARCH_QUIET", "0") not in ("", "0")


def bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; drawn only when stderr is a terminal and progress is not silenced."""
    disable = kwargs.pop("disable", False) or is_quiet() or not sys.stderr.isatty()
    return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)


def note(message: str) -> None:
    """One line on stderr (also when it is not a terminal, so logs keep it), unless progress is silenced."""
    if not is_quiet():
        tqdm.write(message, file=sys.stderr)


@contextmanager
def phases(desc: str, steps: Sequence[str]) -> Iterator[Callable[[str], None]]:
    """A bar over named steps of one long operation: call the yielded function with each step's name as it
    starts; the bar shows the step under way and how many are done."""
    with bar(total=len(steps), desc=desc, unit="step") as progress:
        started = 0

        def step(name: str) -> None:
            nonlocal started
            if started:
                progress.update(1)
            started += 1
            progress.set_postfix_str(name)

        yield step
        progress.update(len(steps) - progress.n)
