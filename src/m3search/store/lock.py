"""The writer lock: one process (one open collection object) writes at a time, any number read.

`fcntl.flock` on a file in the collection: the kernel releases it when its holder exits, even on SIGKILL, so
a crashed writer never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from m3search.errors import CollectionLockedError

LOCK_FILE = "write.lock"
#: What the refusal suggests by default: readers of a local collection need no lock.
READ_ONLY_HINT = "close it there first, or open this one read-only"


class WriterLock:
    """An exclusive, non-blocking lock on `directory/write.lock`; `hint`: what its refusal suggests."""

    def __init__(self, directory: Path, hint: str = READ_ONLY_HINT) -> None:
        self.path = directory / LOCK_FILE
        self.hint = hint
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise `CollectionLockedError` naming the holder."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise CollectionLockedError(
                f"collection {self.path.parent} is open for writing elsewhere (process {holder}); {self.hint}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
