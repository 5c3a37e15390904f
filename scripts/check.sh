#!/usr/bin/env bash
# The conventions, checked mechanically (CI runs this before the tests): lint, formatting, types, import layers.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
echo "== ruff check";         "$bin/ruff" check src tests benchmarks scripts
echo "== ruff format --check"; "$bin/ruff" format --check src tests benchmarks scripts
echo "== mypy src";            "$bin/mypy"
echo "== import layers";       "$bin/lint-imports"
