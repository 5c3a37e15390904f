#!/usr/bin/env bash
# Install everything the tests need into .venv, then run the whole suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "test,offline,onnx,images"
exec .venv/bin/python -m pytest "$@"
