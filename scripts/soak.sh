#!/usr/bin/env bash
# A chaos soak: `scripts/soak.sh --rounds N [--seed S]` runs the chaos test with three clients for N sessions
# each (release build), the monkey killing any node every 0.3-1 s; every session must equal the reference.
. "$(dirname "$0")/lib.sh"
rounds=20 seed=7
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--seed S]" >&2; exit 2 ;;
  esac
done
ensure_rabbitmq
start=$(date +%s)
CHAOS_ROUNDS="$rounds" CHAOS_SEED="$seed" cargo test --release -p coffee-tests --test chaos three_clients -- --nocapture 2>&1 |
  grep -E '^chaos:|test result|panicked'
echo "soak of $rounds rounds took $(( $(date +%s) - start )) s"
