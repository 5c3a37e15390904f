"""Storage backends behind `Collection`: `local` (the embedded engine) and `qdrant` (see `base.Backend`)."""
