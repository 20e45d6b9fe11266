#!/usr/bin/env bash
# Builds the console's page into frontend/dist/: the Leptos app compiled to wasm32 by cargo, its JS glue by the
# wasm-bindgen CLI at the exact version of the wasm-bindgen crate in Cargo.lock, the wasm shrunk by wasm-opt
# (npm's binaryen, pinned in frontend/package-lock.json; Debian's older wasm-opt breaks this output, see
# ../shared/STACK.md), gzipped copies the console serves to browsers that accept them, plus index.html and
# style.css. Installs the wasm32 target, the CLI, node and binaryen when they are missing. No trunk or
# cargo-leptos. The wasm (measured when wasm-opt came in): 1.71 MB from cargo and wasm-bindgen, 0.76 MB after
# wasm-opt -Oz, 0.29 MB gzipped.
. "$(dirname "$0")/lib.sh"

ensure_wasm_tools() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  local want have
  want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" != "$want" ]; then
    log "installing wasm-bindgen-cli $want (found: ${have:-none})"
    # Not --locked: one of its locked dependencies is not on the registry any more.
    cargo install wasm-bindgen-cli --version "$want"
  fi
}

ensure_wasm_opt() {
  if ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  if [ ! -x frontend/node_modules/.bin/wasm-opt ]; then
    log "installing binaryen (wasm-opt) from npm"
    (cd frontend && npm ci --no-audit --no-fund)
  fi
}

ensure_wasm_tools
ensure_wasm_opt
DIST=frontend/dist
# Its own target folder: the wasm build then never waits on (or invalidates) the native build's lock.
export CARGO_TARGET_DIR="$ROOT/target/wasm"
log "building the frontend (wasm32, wasm-release)"
cargo build -p frontend --target wasm32-unknown-unknown --profile wasm-release
rm -rf "$DIST.tmp"
mkdir -p "$DIST.tmp"
wasm-bindgen --target web --no-typescript --out-dir "$DIST.tmp" --out-name frontend \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/frontend.wasm"
log "shrinking the wasm (wasm-opt -Oz)"
# The features rustc's wasm32 target uses by default: wasm-opt must accept what the input holds.
frontend/node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$DIST.tmp/frontend_bg.wasm" -o "$DIST.tmp/frontend_bg.opt.wasm"
mv "$DIST.tmp/frontend_bg.opt.wasm" "$DIST.tmp/frontend_bg.wasm"
cp frontend/index.html frontend/style.css "$DIST.tmp/"
for file in frontend_bg.wasm frontend.js style.css index.html; do
  gzip -9 -k -n "$DIST.tmp/$file"
done
# Swapped in whole, so a running console never serves half a build.
rm -rf "$DIST"
mv "$DIST.tmp" "$DIST"
log "frontend built: $DIST (wasm $(stat -c %s "$DIST/frontend_bg.wasm") bytes, gzipped $(stat -c %s "$DIST/frontend_bg.wasm.gz"))"
