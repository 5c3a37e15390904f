"""m3search: multilingual, multimodal hybrid search around BAAI/bge-m3.

One model pass gives dense, sparse and ColBERT representations; m3search encodes them exactly like the
reference, indexes all three in an embedded collection, fuses them at query time and serves them over HTTP.
Names load on first use, so `import m3search` (and `m3search.Client`) does not load the model runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports

if TYPE_CHECKING:
    from m3search.client import AsyncClient, Client
    from m3search.encoders import (
        BGEM3Encoder,
        BM25Encoder,
        CompositeEncoder,
        EncodeResult,
        TextEncoder,
        TransformerEncoder,
        load_encoder,
    )
    from m3search.errors import M3SearchError
    from m3search.store import Collection, Document

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AsyncClient": "m3search.client",
        "BGEM3Encoder": "m3search.encoders",
        "BM25Encoder": "m3search.encoders",
        "Client": "m3search.client",
        "Collection": "m3search.store",
        "CompositeEncoder": "m3search.encoders",
        "Document": "m3search.store",
        "EncodeResult": "m3search.encoders",
        "M3SearchError": "m3search.errors",
        "TextEncoder": "m3search.encoders",
        "TransformerEncoder": "m3search.encoders",
        "load_encoder": "m3search.encoders",
    },
)

__all__ = [
    "AsyncClient",
    "BGEM3Encoder",
    "BM25Encoder",
    "Client",
    "Collection",
    "CompositeEncoder",
    "Document",
    "EncodeResult",
    "M3SearchError",
    "TextEncoder",
    "TransformerEncoder",
    "__version__",
    "load_encoder",
]
