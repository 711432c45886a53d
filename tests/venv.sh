#!/usr/bin/env bash
# A Python venv for a test's validator or receiver: `tests/venv.sh DIR REQUIREMENTS` installs
# the pinned packages of REQUIREMENTS (a pip requirements file) from PyPI into DIR (under
# target/). Idempotent: a venv complete for exactly these requirements is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$1
REQ=$2
STAMP="$VENV/.ready-$(sha256sum "$REQ" | cut -c1-16)"
[ -f "$STAMP" ] && exit 0
# Tests of one binary run in parallel and may ask for the same venv at once: one makes it, the
# others wait for it (a venv half made by another process fails with "pip: not found").
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
[ -f "$STAMP" ] && exit 0
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
touch "$STAMP"
