#!/usr/bin/env bash
# Builds everything and starts the web console on http://127.0.0.1:8080 with the bundled sample ready to launch.
# Installs what is missing (the wasm32 target, wasm-bindgen-cli at the lock file's version, RabbitMQ) and starts
# RabbitMQ if it is down. Extra arguments go to coffee-console (e.g. `--bind 0.0.0.0:8080 --replicas all=3`).
. "$(dirname "$0")/lib.sh"

ensure_rabbitmq
log "building coffee and coffee-console (release)"
cargo build --release -p coffee -p coffee-console
./scripts/build-frontend.sh
log "starting the console (Ctrl-C stops it and its cluster)"
exec target/release/coffee-console --data-dir data --static-dir frontend/dist --coffee-bin target/release/coffee "$@"
