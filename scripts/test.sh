#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine (RabbitMQ, the wasm32 target and wasm-bindgen CLI,
# Chromium, playwright-core), then runs every test: formatting, lints, the unit and integration tests against
# the real RabbitMQ, and the browser end-to-end test of the console.
. "$(dirname "$0")/lib.sh"

ensure_rabbitmq
log "cargo fmt --check"
cargo fmt --all -- --check
log "building the console's page (installs the wasm32 target and wasm-bindgen-cli if missing)"
./scripts/build-frontend.sh
log "cargo clippy (native crates, then the frontend for wasm32)"
cargo clippy --workspace --exclude frontend --all-targets -- -D warnings
CARGO_TARGET_DIR="$ROOT/target/wasm" cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings
log "cargo test"
cargo test --workspace --exclude frontend
log "browser end-to-end test"
./scripts/e2e.sh
