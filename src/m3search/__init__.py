"""m3search: multilingual, multimodal hybrid search around BAAI/bge-m3.

One model pass gives dense, sparse and ColBERT representations; m3search encodes them exactly like the
reference, indexes all three in an embedded collection, fuses them at query time and serves them over HTTP.

The public names below load on first use, so `import m3search.errors` or `m3search --help` does not pay for
torch and faiss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "BGEM3Encoder": "m3search.encoders",
    "BM25Encoder": "m3search.encoders",
    "CompositeEncoder": "m3search.encoders",
    "EncodeResult": "m3search.encoders",
    "TextEncoder": "m3search.encoders",
    "TransformerEncoder": "m3search.encoders",
    "load_encoder": "m3search.encoders",
    "M3SearchError": "m3search.errors",
    "Collection": "m3search.store",
    "Document": "m3search.store",
}

if TYPE_CHECKING:
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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BGEM3Encoder",
    "BM25Encoder",
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
