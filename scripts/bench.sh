#!/usr/bin/env bash
# The benchmark: group-loader vs its peers on generated Group events, in one run: DuckDB (Python package),
# idiomatic and tuned, and ClickHouse embedded through chDB (bench/requirements.txt, installed into .venv).
# Generates ~5.5 GB of input under bench/data on first use (kept for later runs). Arguments go to bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import duckdb" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/consumer/requirements.txt
fi
if ! .venv/bin/python -c "import chdb" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
fi
cargo build --release --locked
exec .venv/bin/python bench/run.py "$@"
