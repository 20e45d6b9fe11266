#!/usr/bin/env bash
# Runs the deterministic simulator over as many seeds as asked, on every core: the range is cut into one
# contiguous slice per job, each slice a `coffee sim` process of the release build. Prints each job's summary,
# then the total: seeds, failures, seeds per second. A failing seed prints the command that replays it (in its
# job's log). Exits non-zero if any seed failed.
#
#   scripts/sim-soak.sh [--seeds 100000] [--from 0] [--jobs 2] [--faults all] [--sessions 2]
#
# Logs: /tmp/coffee-sim-soak-<pid>/job-<n>.log
. "$(dirname "$0")/lib.sh"

seeds=100000 from=0 jobs=2 faults=all sessions=2
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --from) from="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --faults) faults="$2"; shift 2 ;;
    --sessions) sessions="$2"; shift 2 ;;
    *) echo "usage: $0 [--seeds N] [--from S] [--jobs J] [--faults all|none|crash,broker,duplicate,gateway,pause,monitor,incarnation,stray,channel,stuck,alarm,partition] [--sessions K]" >&2; exit 2 ;;
  esac
done
[ "$seeds" -ge "$jobs" ] || jobs="$seeds"

log "building the release binary"
cargo build --release -q -p coffee
COFFEE="$ROOT/target/release/coffee"
WORK="/tmp/coffee-sim-soak-$$"
mkdir -p "$WORK"
# One seed first, so the jobs find the datasets' cache made instead of each making it.
"$COFFEE" sim --seeds "$from" --faults "$faults" --sessions "$sessions" >/dev/null || true

log "simulating seeds $from..$((from + seeds)) in $jobs jobs (logs: $WORK)"
started=$(date +%s.%N)
pids=()
per=$(( (seeds + jobs - 1) / jobs ))
for j in $(seq 0 $((jobs - 1))); do
  a=$((from + j * per))
  b=$((a + per))
  [ "$b" -le $((from + seeds)) ] || b=$((from + seeds))
  [ "$a" -lt "$b" ] || continue
  "$COFFEE" sim --seeds "$a..$b" --faults "$faults" --sessions "$sessions" >"$WORK/job-$j.log" 2>&1 &
  pids+=("$!")
done
failed_jobs=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed_jobs=$((failed_jobs + 1))
done
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')

total=0 failed=0
for f in "$WORK"/job-*.log; do
  summary=$(grep -E '^[0-9]+ seeds, [0-9]+ failed' "$f" | tail -1)
  echo "$(basename "$f" .log): $summary"
  total=$((total + $(echo "$summary" | awk '{print $1}')))
  failed=$((failed + $(echo "$summary" | awk '{print $3}')))
done
awk -v n="$total" -v f="$failed" -v t="$elapsed" 'BEGIN { printf "total: %d seeds, %d failed, in %.1f s (%.0f seeds/s)\n", n, f, t, n / t }'
if [ "$failed" -gt 0 ] || [ "$failed_jobs" -gt 0 ]; then
  grep -h "replay:" "$WORK"/job-*.log | head -20
  exit 1
fi
