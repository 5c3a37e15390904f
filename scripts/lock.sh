#!/usr/bin/env bash
# Regenerate requirements/lock-cpu.txt: exact, resolver-chosen versions of the whole dependency tree for the CPU
# install with every extra, for CPython 3.11 on x86-64 Linux. Run after changing pyproject.toml's dependencies,
# then run the suite (scripts/test.sh) before committing the new lock.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null || python3 -m pip install --quiet uv
links=()
[ -d /opt/wheels ] && links=(--find-links /opt/wheels)
uv pip compile pyproject.toml --all-extras --constraint requirements/cpu-torch.txt "${links[@]}" \
    --no-emit-find-links --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --custom-compile-command "bash scripts/lock.sh" --output-file requirements/lock-cpu.txt "$@"
