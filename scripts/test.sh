#!/usr/bin/env bash
# Install everything the tests need into .venv, then run the whole suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "test,lint,server,eval,client,offline,onnx,images,qdrant,edge,ray,langchain,llamaindex,haystack"
exec .venv/bin/python -m pytest "$@"
