#!/usr/bin/env bash
# DuckDB for `coffee bench` to compare with (issue 15): a Python virtual environment in target/duckdb-venv with
# DuckDB's package from PyPI, at the version pinned here. Installs python3-venv where missing. Idempotent; the
# last line printed is the environment's python, which `coffee bench` finds by itself (or takes from
# COFFEE_DUCKDB_PYTHON).
. "$(dirname "$0")/lib.sh"

DUCKDB_VERSION=2.0.1
VENV="$ROOT/target/duckdb-venv"

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  log "installing python3-venv"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
if [ "$("$VENV/bin/python" -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null)" != "$DUCKDB_VERSION" ]; then
  log "creating $VENV with duckdb $DUCKDB_VERSION"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "duckdb==$DUCKDB_VERSION"
fi
log "duckdb $("$VENV/bin/python" -c 'import duckdb; print(duckdb.__version__)') in $VENV"
echo "$VENV/bin/python"
