"""Exceptions a user can act on: each names what is wrong and, where it helps, what to do.

Every error m3search raises on purpose derives from `M3SearchError`, so callers (the CLI, the HTTP server)
can turn them into clean messages instead of tracebacks. Input errors also derive from `ValueError`.
"""

from __future__ import annotations


class M3SearchError(Exception):
    """Base class of every deliberate m3search error."""


class InvalidInputError(M3SearchError, ValueError):
    """Input that cannot be processed: wrong type, invalid UTF-8, NaN in a vector, a bad option."""


class DimensionMismatchError(InvalidInputError):
    """A vector whose dimension differs from the one the index or model expects."""


class ModelLoadError(M3SearchError):
    """A model directory or checkpoint that is missing, partial or malformed."""


class ModelNotFoundError(ModelLoadError):
    """No local directory, cache entry, packaged offline source or hub repository provides the model."""


class RuntimeUnavailableError(M3SearchError):
    """A requested runtime (onnx, cuda, bf16...) that this machine or installation cannot provide."""


class CollectionError(M3SearchError):
    """A collection that cannot be created, opened or written."""


class CollectionNotFoundError(CollectionError):
    """The named collection does not exist."""


class CollectionExistsError(CollectionError):
    """A collection is being created where one already exists."""


class CollectionLockedError(CollectionError):
    """Another process holds the collection's writer lock."""


class CollectionClosedError(CollectionError):
    """The collection object was closed (or its collection deleted) while a caller still used it."""


class CorruptCollectionError(CollectionError):
    """A collection's files are damaged: missing, truncated, or changed since they were written.

    `file` names the damaged file relative to the collection's directory (e.g. `segments/seg-00000003/dense.npy`).
    """

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


class FilterError(InvalidInputError):
    """A metadata filter that is malformed or uses an unknown operator."""


class ImageError(InvalidInputError):
    """An image that is corrupt, too large, of an unsupported format or a decompression bomb."""


class ImageTooLargeError(ImageError):
    """An image over the byte or pixel limits (a decompression bomb included): the server answers 413."""


class ServerBusyError(M3SearchError):
    """The server's encode queue is full or shutting down; retry later (HTTP 503)."""


class MissingExtraError(M3SearchError, ImportError):
    """A feature whose optional packages are not installed; the message names the extra to install."""
