#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine (RabbitMQ, Prometheus, libfaketime, iptables, the wasm32 target and
# wasm-bindgen CLI, Chromium, playwright-core; the container tests set up Docker themselves, through scripts/docker-up.sh),
# then runs every test: formatting, lints, the unit and integration tests against the real RabbitMQ and Docker
# engine, and the browser end-to-end test of the console.
. "$(dirname "$0")/lib.sh"

ensure_disk 6
ensure_rabbitmq
ensure_prometheus
ensure_faketime
ensure_iptables
# DuckDB, which `coffee bench` compares with, from PyPI: its test checks DuckDB's SQL against the reference. It is
# a benchmark's peer, not part of the system, so a machine that cannot reach PyPI runs everything else.
./scripts/duckdb-setup.sh >/dev/null || log "DuckDB could not be set up (PyPI unreachable?): its comparison test will say so"
log "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path tests/example-query/Cargo.toml -- --check
log "building the console's page (installs the wasm32 target and wasm-bindgen-cli if missing)"
./scripts/build-frontend.sh
log "cargo clippy (native crates, then the frontend for wasm32)"
cargo clippy --workspace --exclude frontend --all-targets -- -D warnings
CARGO_TARGET_DIR="$ROOT/target/wasm" cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings
log "cargo test"
cargo test --workspace --exclude frontend
log "the tests' example query: a fifth query added by the recipe of docs/architecture.md, against the reference"
# Its own workspace and target folder: the example-query feature must not reach the main build.
example=(-p coffee-engine -p coffee-tools -p coffee-model --features coffee-engine/example-query,coffee-tools/example-query)
CARGO_TARGET_DIR="$ROOT/target/example-query" cargo clippy "${example[@]}" --all-targets -- -D warnings
CARGO_TARGET_DIR="$ROOT/target/example-query" cargo test "${example[@]}"
(cd tests/example-query && CARGO_TARGET_DIR="$ROOT/target/example-query" cargo test --locked)
log "the binary users build carries no failpoint and no planted bug (only the tests have those features)"
cargo build -p coffee
if grep -q "failpoint reached" target/debug/coffee; then
    echo "target/debug/coffee was built with failpoints: a feature leaked outside the tests" >&2
    exit 1
fi
# Only a build without the planted-bugs feature carries this refusal (coffee sim reaches it).
if ! grep -q "needs coffee-engine's \`planted-bugs\` feature" target/debug/coffee; then
    echo "target/debug/coffee was built with planted bugs: a feature leaked outside the tests" >&2
    exit 1
fi
log "browser end-to-end test"
./scripts/e2e.sh
