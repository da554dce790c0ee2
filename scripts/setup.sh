#!/usr/bin/env bash
# Set up facespace for development on a fresh machine: a virtual environment in
# .venv with the CPU build of torch 2.13.0, the package (editable) with its
# test, evaluation, service, scale (Ray, pyarrow) and PostgreSQL extras (psycopg, pgvector, and pgserver:
# the PostgreSQL + pgvector server the tests start on loopback), and Chromium for
# the web-page test.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e '.[test]'
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: chromium not installed; the web-page test will be skipped" >&2
fi
# Fetch and verify the pretrained weights once, so the first test does not pay for it.
.venv/bin/facespace models pull
