#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs DuckDB's Python package into .venv (for the consumer test,
# which reads the output with an independent reader), then runs every Rust test target.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import duckdb" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/consumer/requirements.txt
fi
export GROUP_LOADER_PYTHON="$PWD/.venv/bin/python"

cargo test --locked --all-targets "$@"
