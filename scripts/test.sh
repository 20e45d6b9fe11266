#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs every test: formatting, lints, the unit and
# integration tests (against the real RabbitMQ), and the browser end-to-end test of the console.
. "$(dirname "$0")/lib.sh"

ensure_rabbitmq
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace
