#!/usr/bin/env bash
# The command-line demo: builds `coffee`, starts RabbitMQ if needed, runs one session on the bundled sample
# through a fresh local cluster, and checks the result against the single-process reference.
. "$(dirname "$0")/lib.sh"

ensure_rabbitmq
log "building coffee (release)"
cargo build --release -p coffee
out="${1:-out}"
mkdir -p "$out"
log "one session on data/sample"
target/release/coffee run --data data/sample --out "$out"
log "the reference on the same files"
target/release/coffee reference --data data/sample --out "$out/reference.ndjson"
latest=$(ls -t "$out"/client-*.ndjson | head -n 1)
target/release/coffee compare "$out/reference.ndjson" "$latest"
