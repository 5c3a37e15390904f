"""`m3search serve` option checks (the running server is tested in tests/server)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from m3search.cli.main import cli


@pytest.mark.parametrize(
    "levels, message",
    [
        ("0.9", "expected two numbers"),
        ("high,low", "expected two numbers"),
        ("0.5,0.8", "must be below"),
    ],
)
def test_bad_levels_are_refused(levels, message):
    result = CliRunner().invoke(cli, ["serve", "--levels", levels])
    assert result.exit_code == 2
    assert message in result.output


def test_serve_and_demo_are_registered():
    result = CliRunner().invoke(cli, ["--help"])
    assert "serve" in result.output and "demo" in result.output
