"""Fixtures for the image encoders live in tests/conftest.py: collections, the server and the CLI use them too."""
