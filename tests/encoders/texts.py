"""Texts for encoder tests: six languages, mixed lengths, one far over 512 tokens."""

MULTILINGUAL = [
    "What is the capital of France?",
    "Paris ist die Hauptstadt und bevölkerungsreichste Stadt Frankreichs.",
    "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "La fotosíntesis es el proceso por el cual las plantas convierten la luz en energía química.",
    "التعلم الآلي هو فرع من فروع الذكاء الاصطناعي",
    "",
    "hi",
    " ".join(
        f"Token {i} in a very long English document about retrieval, indexing and ranking."
        for i in range(120)
    ),
]

XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


def xquad_pairs(shared_data, lang: str, count: int) -> list[tuple[str, str]]:
    """(question, paragraph) of the first `count` XQuAD-R articles in `lang`; item i is parallel."""
    import json

    data = json.loads((shared_data / "xquad_r" / "xquad-r" / f"{lang}.json").read_text(encoding="utf-8"))
    pairs = []
    for article in data["data"][:count]:
        paragraph = article["paragraphs"][0]
        pairs.append((paragraph["qas"][0]["question"], paragraph["context"]))
    return pairs


def scifact_docs(shared_data, count: int) -> list[dict]:
    """The first `count` SciFact corpus rows (`_id`, `title`, `text`), in corpus order."""
    import json

    with (shared_data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(count), f)]


def scifact_abstracts(shared_data, count: int) -> list[str]:
    """The first `count` SciFact abstracts (title and text), in corpus order."""
    return [f"{row['title']} {row['text']}" for row in scifact_docs(shared_data, count)]
