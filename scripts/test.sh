#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs the independent readers and servers the tests start into
# virtual environments (once; again when a requirements file changes):
#   .venv              DuckDB, deltalake, polars, pyspark (Spark in local mode, needs Java 17), moto[server]
#   .venv-duckdb-delta DuckDB 1.5 with its Delta extension from PyPI (delta_scan without a download)
#   .venv-moto-5014    moto 5.0.14, an S3 server that ignores If-None-Match (the Delta output refuses it)
#   .azurite           Azurite, the Azure Storage emulator (npm), for the az:// tests
# then runs every Rust test target.
set -euo pipefail
cd "$(dirname "$0")/.."

# venv DIR REQUIREMENTS: create DIR and install REQUIREMENTS unless DIR already holds exactly that list.
venv() {
  local dir=$1 req=$2
  if ! cmp -s "$req" "$dir/requirements.installed" 2>/dev/null; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$dir/requirements.installed"
  fi
}
venv .venv tests/consumer/requirements.txt
venv .venv-duckdb-delta tests/consumer/requirements-duckdb-delta.txt
venv .venv-moto-5014 tests/consumer/requirements-moto-5014.txt

# Azurite, Microsoft's Azure Storage emulator (npm), for the az:// tests: into .azurite, once per version.
AZURITE_VERSION=3.37.0
if [ "$(cat .azurite/installed 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  if ! command -v npm >/dev/null; then
    echo "scripts/test.sh: npm (Node 20) is needed to install Azurite for the Azure tests" >&2
    exit 1
  fi
  rm -rf .azurite
  npm install --silent --no-audit --no-fund --prefix .azurite "azurite@$AZURITE_VERSION"
  echo "$AZURITE_VERSION" > .azurite/installed
fi

if ! command -v java >/dev/null; then
  echo "scripts/test.sh: Java 17 is needed by the Spark tests (pyspark runs in local mode)" >&2
  exit 1
fi

# No credential chain may reach past this machine: the clouds' metadata endpoints point at a closed loopback port.
export AWS_METADATA_ENDPOINT=http://127.0.0.1:9 GCE_METADATA_HOST=127.0.0.1:9 GCE_METADATA_IP=127.0.0.1:9 \
  AZURE_MSI_ENDPOINT=http://127.0.0.1:9/metadata/identity/oauth2/token
export GROUP_LOADER_PYTHON="$PWD/.venv/bin/python"
export GROUP_LOADER_DUCKDB_DELTA_PYTHON="$PWD/.venv-duckdb-delta/bin/python"
export GROUP_LOADER_AZURITE="$PWD/.azurite/node_modules/.bin/azurite-blob"
export GROUP_LOADER_MOTO_5014="$PWD/.venv-moto-5014/bin/moto_server"

cargo test --locked --all-targets --features external "$@"
