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
    " ".join(f"Token {i} in a very long English document about retrieval, indexing and ranking." for i in range(120)),
]
