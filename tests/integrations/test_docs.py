"""docs/INTEGRATIONS.md's examples run as written: in order, in one namespace, in a fresh directory (the
client's against the live e5 server)."""

from __future__ import annotations

import re

from tests.conftest import E5_MODEL, E5_SERVER_KEY, ROOT

DOC = ROOT / "docs" / "INTEGRATIONS.md"


def test_integration_examples_run(e5_server, e5_dir, tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        code = block.replace("http://127.0.0.1:8000", e5_server.url).replace("your-key", E5_SERVER_KEY)
        # the reference runtime, as the rest of the suite (the default "auto" measures faster ones first)
        code = code.replace(f'model="{E5_MODEL}"', f'model="{E5_MODEL}", runtime="torch-fp32"')
        exec(compile(code, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[('0', ") and re.fullmatch(r"\(1, 384\) \(\d+, 384\)", printed[1])
    assert "Berlin ist die Hauptstadt" in printed[3]  # LangChain's retriever
    assert printed[5] == "384"
    assert printed[6].startswith("[('doc0', ")  # LlamaIndex, the search-topic filter
    assert "BGE M3 is an embedd" in printed[7]  # Haystack's pipeline
    # LangChain removed its documents; LlamaIndex's nodes but one and Haystack's documents remain
    assert namespace["collection"].count() == 2 * len(namespace["texts"]) - 1
