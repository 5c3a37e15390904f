"""One router per resource: embeddings, similarity, collections, health."""
