#!/usr/bin/env bash
# Builds the console's page into frontend/dist/: the Leptos app compiled to wasm32 by cargo, its JS glue by the
# wasm-bindgen CLI at the exact version of the wasm-bindgen crate in Cargo.lock, plus index.html and style.css.
# Installs the wasm32 target and the CLI when they are missing. No trunk, cargo-leptos or wasm-opt (see
# ../shared/STACK.md: Debian's wasm-opt breaks this output).
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

ensure_wasm_tools
DIST=frontend/dist
# Its own target folder: the wasm build then never waits on (or invalidates) the native build's lock.
export CARGO_TARGET_DIR="$ROOT/target/wasm"
log "building the frontend (wasm32, wasm-release)"
cargo build -p frontend --target wasm32-unknown-unknown --profile wasm-release
rm -rf "$DIST.tmp"
mkdir -p "$DIST.tmp"
wasm-bindgen --target web --no-typescript --out-dir "$DIST.tmp" --out-name frontend \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/frontend.wasm"
cp frontend/index.html frontend/style.css "$DIST.tmp/"
# Swapped in whole, so a running console never serves half a build.
rm -rf "$DIST"
mv "$DIST.tmp" "$DIST"
log "frontend built: $DIST ($(du -sh "$DIST" | cut -f1))"
