#!/usr/bin/env bash
# The browser end-to-end test of the console: builds the console, the `coffee` binary and the page, installs
# Debian's chromium and playwright-core (never a downloaded browser) if missing, and runs
# tests/e2e/console.test.mjs with node's test runner. Screenshots: tests/output/screenshots/.
. "$(dirname "$0")/lib.sh"

ensure_rabbitmq
if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null 2>&1; then
  log "installing nodejs"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# Debug binaries: the cargo tests build them anyway, and the sample needs no speed.
log "building coffee and coffee-console"
cargo build -p coffee -p coffee-console
./scripts/build-frontend.sh
if [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/e2e/node_modules/amqplib ]; then
  log "installing playwright-core and amqplib"
  (cd tests/e2e && npm ci --no-audit --no-fund)
fi
log "running the browser test"
cd tests/e2e
COFFEE_CONSOLE_BIN="$ROOT/target/debug/coffee-console" COFFEE_BIN="$ROOT/target/debug/coffee" \
  CHROMIUM="$(command -v chromium)" node --test --test-reporter=spec console.test.mjs
