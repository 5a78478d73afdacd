#!/usr/bin/env bash
# Regenerates the PyTorch reference fixtures: runs every tools/fixtures/*.py (except the shared
# helpers common.py and files starting with "_") with $PYTHON (default python3).
#
#   PYTHON=path/to/venv/bin/python tools/make_fixtures.sh
#
# Needs the packages in tools/requirements.txt. Output is deterministic: re-running gives
# byte-identical files.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."

status=0
for script in tools/fixtures/*.py; do
    base="$(basename "$script")"
    case "$base" in
        common.py | _*) continue ;;
    esac
    echo "== $script"
    if ! "$PYTHON" "$script"; then
        echo "FAILED: $script" >&2
        status=1
    fi
done
exit "$status"
