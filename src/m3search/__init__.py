"""m3search: multilingual, multimodal hybrid search around BAAI/bge-m3.

One model pass gives dense, sparse and ColBERT representations; m3search encodes them exactly like the
reference, indexes all three in an embedded collection, fuses them at query time and serves them over HTTP.
"""

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
