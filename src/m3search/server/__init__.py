"""The HTTP server and web UI: `create_app(ServerSettings(...))`, run by `m3search serve`."""

from m3search.server.app import create_app
from m3search.server.config import ServerSettings, SimilarityLevels

__all__ = ["ServerSettings", "SimilarityLevels", "create_app"]
