"""`m3search encode` writes what the Python API computes, and fails cleanly on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from m3search.cli.main import cli


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_encode_writes_requested_outputs(tiny_m3, tiny_m3_dir, tmp_path):
    rows = [
        {"id": "a", "text": "Hello world"},
        {"_id": "b", "body": "x", "text": "Grüß Gott"},
        {"text": "第三"},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, rows)
    result = CliRunner().invoke(
        cli,
        [
            "encode",
            "--model",
            str(tiny_m3_dir),
            "--input",
            str(src),
            "--output",
            str(dst),
            "--dense",
            "--sparse",
            "--colbert",
            "--runtime",
            "torch-fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", "b", 3]
    expected = tiny_m3.encode([r["text"] for r in rows], return_sparse=True, return_colbert=True)
    for i, o in enumerate(out):
        assert set(o) == {"id", "dense", "sparse", "colbert"}
        np.testing.assert_allclose(o["dense"], expected.dense[i], atol=1e-6)
        assert {int(k): v for k, v in o["sparse"].items()} == expected.sparse[i]
        np.testing.assert_allclose(np.array(o["colbert"]), expected.colbert[i], atol=1e-6)


def test_encode_defaults_to_dense_and_honours_text_field(tiny_m3_dir, tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, [{"id": 1, "body": "some body text"}])
    result = CliRunner().invoke(
        cli,
        ["encode", "-m", str(tiny_m3_dir), "--input", str(src), "--output", str(dst), "--text-field", "body"],
    )
    assert result.exit_code == 0, result.output
    (line,) = dst.read_text().splitlines()
    assert set(json.loads(line)) == {"id", "dense"}


def test_encode_reports_bad_lines_without_traceback(tiny_m3_dir, tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"text": "fine"}\n{not json}\n', encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["encode", "-m", str(tiny_m3_dir), "--input", str(src), "--output", str(dst)]
    )
    assert result.exit_code != 0
    assert "line 2: not valid JSON" in result.output
    assert "Traceback" not in result.output

    _write_jsonl(src, [{"title": "no text field"}])
    result = CliRunner().invoke(
        cli, ["encode", "-m", str(tiny_m3_dir), "--input", str(src), "--output", str(dst)]
    )
    assert result.exit_code != 0 and "'text' field" in result.output


def test_unknown_model_is_a_clean_error(tmp_path):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [{"text": "x"}])
    result = CliRunner().invoke(
        cli,
        ["encode", "-m", str(tmp_path / "nope"), "--input", str(src), "--output", str(tmp_path / "o.jsonl")],
    )
    assert result.exit_code != 0 and "no model directory" in result.output


def test_models_list_shows_registry():
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "BAAI/bge-m3" in result.output and "intfloat/multilingual-e5-small" in result.output


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "m3search.cli.main", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "encode" in proc.stdout
