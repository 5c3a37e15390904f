"""Image encoders: safe loading, vision towers, Visualized-BGE and trained projections into a text space."""
