#!/usr/bin/env bash
# Install everything the tests need into .venv (from the lock), check the conventions (scripts/check.sh), then run
# the whole suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "test,lint,server,eval,client,offline,onnx,images,qdrant,edge,ray,langchain,llamaindex,haystack"
bash scripts/check.sh
exec .venv/bin/python -m pytest "$@"
