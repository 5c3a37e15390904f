"""Glue for RAG frameworks, as optional extras: `m3search[langchain]`, `m3search[llamaindex]`, `m3search[haystack]`.

Each module imports its framework; this package imports none, so `import m3search` never needs them. Every
integration takes a local `Collection` or a server collection (`Client(...).collection(name)`).
"""
