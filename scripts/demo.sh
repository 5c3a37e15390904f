#!/usr/bin/env bash
# The main job: install m3search with the offline model into .venv, build the sample collection (once; reused
# later) and serve the web UI and API on http://127.0.0.1:8000/ui/. Extra arguments go to `m3search demo`
# (e.g. --port 8080, --rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh server,offline
exec .venv/bin/m3search demo "$@"
