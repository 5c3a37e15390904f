"""Visualized-BGE on a tiny random checkpoint in the real layout: loading, shapes, text path, injection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m3search.encoders.image.eva import EVAVisionConfig
from m3search.encoders.image.validation import load_image
from m3search.encoders.image.visualized_bge import VisualizedBGEEncoder, resolve_checkpoint
from m3search.errors import ImageError, InvalidInputError, ModelLoadError, ModelNotFoundError

TEXTS = ["A black dog runs on the grass .", "Zwei Kinder spielen im Schnee", "红色的汽车"]

# Entry names of one EVA02 block in FlagEmbedding's Visualized_m3.pth (research/visual_bge, eva_vit_model.py).
REFERENCE_BLOCK_KEYS = {
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "attn.q_proj.weight",
    "attn.k_proj.weight",
    "attn.v_proj.weight",
    "attn.q_bias",
    "attn.v_bias",
    "attn.rope.freqs_cos",
    "attn.rope.freqs_sin",
    "attn.inner_attn_ln.weight",
    "attn.inner_attn_ln.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "mlp.w1.weight",
    "mlp.w1.bias",
    "mlp.w2.weight",
    "mlp.w2.bias",
    "mlp.ffn_ln.weight",
    "mlp.ffn_ln.bias",
    "mlp.w3.weight",
    "mlp.w3.bias",
}


def test_checkpoint_layout_is_the_reference_one(tiny_visualized_path: Path) -> None:
    state = torch.load(tiny_visualized_path, weights_only=True)
    block0 = {
        k.removeprefix("model_visual.visual.blocks.0.")
        for k in state
        if k.startswith("model_visual.visual.blocks.0.")
    }
    assert block0 == REFERENCE_BLOCK_KEYS
    tops = {k.split(".")[0] for k in state}
    assert tops == {"bge_embeddings", "bge_encoder", "bge_pooler", "model_visual", "visual_proj"}
    config = EVAVisionConfig.from_state_dict(state, prefix="model_visual.visual.")
    shape = (config.image_size, config.patch_size, config.width, config.layers, config.heads)
    assert shape == (28, 14, 64, 2, 2)


def test_shapes_norms_and_determinism(
    tiny_visualized: VisualizedBGEEncoder, flickr_images: list[Path]
) -> None:
    images = flickr_images[:3]
    assert tiny_visualized.dim == 64
    for out in (
        tiny_visualized.encode(images=images),
        tiny_visualized.encode(texts=TEXTS),
        tiny_visualized.encode(images=images, texts=TEXTS),
    ):
        assert out.shape == (3, 64) and out.dtype == np.float32
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    composed = tiny_visualized.encode(images=images, texts=TEXTS)
    assert np.array_equal(composed, tiny_visualized.encode(images=images, texts=TEXTS))
    one_by_one = tiny_visualized.encode(images=images, texts=TEXTS, batch_size=1)
    assert np.allclose(composed, one_by_one, atol=1e-5)  # padding inside a batch changes nothing
    # the three modes give different vectors for the same content
    image_only = tiny_visualized.encode(images=images)
    assert not np.allclose(image_only, composed, atol=1e-3)
    assert np.array_equal(image_only, tiny_visualized.encode(images=images, texts=[""] * 3))


def test_text_only_is_the_plain_bge_m3_dense_vector(tiny_visualized: VisualizedBGEEncoder, tiny_m3) -> None:
    plain = tiny_m3.encode(TEXTS, return_dense=True).dense
    assert np.allclose(tiny_visualized.encode(texts=TEXTS), plain, atol=1e-6)


def _hand_composed(encoder: VisualizedBGEEncoder, image_path: Path, text: str) -> torch.Tensor:
    """The injection written out step by step with the backbone's own modules (one unpadded pair)."""
    model = encoder.model
    emb = model.backbone.embeddings
    pixels = encoder.preprocess([load_image(image_path)])
    with torch.no_grad():
        patches = model.visual(pixels)[0, 1:]  # tower output without its CLS: (N, width)
        n = patches.shape[0]
        projected = patches @ model.visual_proj.weight.T + model.visual_proj.bias
        image = F.layer_norm(
            projected + emb.position_embeddings.weight[1 : n + 1],
            (projected.shape[-1],),
            emb.LayerNorm.weight,
            emb.LayerNorm.bias,
            emb.LayerNorm.eps,
        )
        ids = torch.tensor(encoder.tokenizer(text)["input_ids"])
        positions = torch.tensor([0] + list(range(n + 1, n + len(ids))))
        words = (
            emb.word_embeddings.weight[ids]
            + emb.token_type_embeddings.weight[0]
            + emb.position_embeddings.weight[positions]
        )
        words = F.layer_norm(
            words, (words.shape[-1],), emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps
        )
        sequence = torch.cat([words[:1], image, words[1:]])[None]
        assert sequence.shape[1] == 1 + n + len(ids) - 1
        hidden = sequence
        for layer in model.backbone.encoder.layer:  # no mask: a single sequence has no padding
            out = layer(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
        return F.normalize(hidden[0, 0], dim=-1)


def test_injection_matches_a_hand_computed_reference(
    tiny_visualized: VisualizedBGEEncoder, flickr_images: list[Path]
) -> None:
    pairs = [(flickr_images[0], "A little girl climbing stairs"), (flickr_images[1], "")]
    got = tiny_visualized.encode(images=[p for p, _ in pairs], texts=[t for _, t in pairs])  # padded batch
    for row, (path, text) in enumerate(pairs):
        expected = _hand_composed(tiny_visualized, path, text).numpy()
        assert np.allclose(got[row], expected, atol=2e-5), np.abs(got[row] - expected).max()


def test_image_tokens_sit_between_cls_and_text(
    tiny_visualized: VisualizedBGEEncoder, flickr_images: list[Path]
) -> None:
    # Changing the image changes the composed vector; changing only the text does too; neither is a no-op.
    a = tiny_visualized.encode(images=[flickr_images[0]], texts=["a dog"])
    b = tiny_visualized.encode(images=[flickr_images[5]], texts=["a dog"])
    c = tiny_visualized.encode(images=[flickr_images[0]], texts=["a red car"])
    assert not np.allclose(a, b, atol=1e-4) and not np.allclose(a, c, atol=1e-4)


def test_bad_inputs_and_checkpoints(
    tiny_visualized: VisualizedBGEEncoder, tiny_m3_dir: Path, tmp_path: Path, flickr_images: list[Path]
) -> None:
    with pytest.raises(InvalidInputError, match="give images, texts, or both"):
        tiny_visualized.encode()
    with pytest.raises(InvalidInputError, match="2 images and 1 texts"):
        tiny_visualized.encode(images=flickr_images[:2], texts=["x"])
    with pytest.raises(ImageError, match=r"image 1 \(.*missing.jpg"):
        tiny_visualized.encode(images=[flickr_images[0], tmp_path / "missing.jpg"])
    with pytest.raises(ImageError, match="image 2 is corrupt"):
        tiny_visualized.encode_images(
            [flickr_images[0], flickr_images[1], b"\xff\xd8\xff\xe0" + b"\0" * 50], batch_size=2
        )
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        VisualizedBGEEncoder.from_pretrained(bad, text_model=tiny_m3_dir)
    torch.save({"something.else": torch.zeros(1)}, bad)
    with pytest.raises(ModelLoadError, match="unexpected entries"):
        VisualizedBGEEncoder.from_pretrained(bad, text_model=tiny_m3_dir)
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_checkpoint("BAAI/bge-visualized", "BAAI/bge-m3")
    with pytest.raises(ModelNotFoundError, match="has no Visualized_m3.pth"):
        resolve_checkpoint(tmp_path, "BAAI/bge-m3")


def test_load_image_encoder_recognizes_a_checkpoint(
    tiny_visualized_path: Path, tiny_m3_dir: Path, tmp_path: Path
) -> None:
    from m3search.encoders.image import load_image_encoder

    for source in (tiny_visualized_path, tiny_visualized_path.parent):
        encoder = load_image_encoder(source, text_model=tiny_m3_dir)
        assert isinstance(encoder, VisualizedBGEEncoder) and encoder.supports_composed
        assert encoder.describe()["image_tokens"] == 4 and encoder.text_model == str(tiny_m3_dir)
    with pytest.raises(ModelNotFoundError, match="neither an image adapter directory"):
        load_image_encoder(tmp_path)


def test_truncated_checkpoint_names_the_missing_part(
    tiny_visualized_path: Path, tiny_m3_dir: Path, tmp_path: Path
) -> None:
    state = torch.load(tiny_visualized_path, weights_only=True)
    del state["visual_proj.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(ModelLoadError, match="visual_proj.weight"):
        VisualizedBGEEncoder.from_pretrained(partial, text_model=tiny_m3_dir)
