#!/usr/bin/env bash
# A soak, as a user would run one: `coffee cluster up` (its defaults: three health monitors) on the release build,
# `coffee chaos` killing and pausing any node, the machine's RabbitMQ restarted every few minutes, and several
# clients running sessions back to back on generated data, each result compared with the reference. It stops by
# itself and prints: sessions exact and failed, kills, pauses, restarts, broker restarts, time.
#
#   scripts/soak.sh [--minutes 10] [--scale reduced] [--clients 3] [--fault both] [--interval 1s..4s]
#                   [--broker-every 180] [--seed 1]
#
# --broker-every N restarts the broker (rabbitmqctl stop_app, 5 s, start_app) every N seconds (0: never). It stops
# the machine's broker: run nothing else against it meanwhile. Logs and results: /tmp/coffee-soak-run-<pid>/ (the cluster's own: /tmp/coffee-soak-<pid>/).
. "$(dirname "$0")/lib.sh"

minutes=10 scale=reduced clients=3 fault=both interval=1s..4s broker_every=180 seed=1
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --fault) fault="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --broker-every) broker_every="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes M] [--scale S] [--clients N] [--fault kill|pause|both] [--interval A..B] [--broker-every SECS] [--seed S]" >&2; exit 2 ;;
  esac
done

ensure_rabbitmq
log "building the release binary"
cargo build --release -p coffee
COFFEE="$ROOT/target/release/coffee"
WORK="/tmp/coffee-soak-run-$$"
mkdir -p "$WORK"
export COFFEE_NAMESPACE="soak-$$" GATEWAY_ADDR="127.0.0.1:$((17000 + $$ % 1000))"
duration=$((minutes * 60))

# One dataset and its reference per client (kept between soaks in data/generated).
for i in $(seq 1 "$clients"); do
  data="$ROOT/data/generated/$scale-$((seed + i))"
  if [ ! -f "$data/.complete" ]; then
    log "generating $scale data (seed $((seed + i)))"
    "$COFFEE" gen --scale "$scale" --seed $((seed + i)) --out "$data" >/dev/null && touch "$data/.complete"
  fi
  "$COFFEE" reference --data "$data" --out "$WORK/reference-$i.ndjson" >/dev/null
done

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rabbitmqctl -q start_app >/dev/null 2>&1 || true
}
trap stop_all EXIT

log "cluster up (namespace $COFFEE_NAMESPACE, gateway $GATEWAY_ADDR)"
"$COFFEE" cluster up >"$WORK/cluster.jsonl" 2>"$WORK/cluster.log" &
cluster_pid=$!
pids+=("$cluster_pid")
for _ in $(seq 1 120); do
  (exec 3<>"/dev/tcp/${GATEWAY_ADDR%:*}/${GATEWAY_ADDR#*:}") 2>/dev/null && break
  sleep 0.5
done
start=$(date +%s)
deadline=$((start + duration))

log "chaos: $fault every $interval for $minutes min"
"$COFFEE" chaos --fault "$fault" --interval "$interval" --seed "$seed" --duration "${duration}s" >"$WORK/chaos.jsonl" 2>"$WORK/chaos.log" &
pids+=("$!")

broker_restarts=0
if [ "$broker_every" -gt 0 ]; then
  (
    while sleep "$broker_every"; do
      [ "$(date +%s)" -lt $((deadline - 20)) ] || break
      echo "$(date +%s) stop_app" >>"$WORK/broker.log"
      rabbitmqctl -q stop_app && sleep 5 && rabbitmqctl -q start_app && rabbitmqctl -q await_startup
      echo "$(date +%s) start_app" >>"$WORK/broker.log"
    done
  ) &
  pids+=("$!")
fi

# Each client runs sessions back to back until the deadline; every session is compared with its reference.
client_loop() {
  local i="$1" data="$ROOT/data/generated/$scale-$((seed + $1))" out="$WORK/out-$1"
  while [ "$(date +%s)" -lt "$deadline" ]; do
    rm -rf "$out"
    if "$COFFEE" client --data "$data" --out "$out" --connect-patience 120s --reconnect-window 120s \
        >>"$WORK/client-$i.log" 2>&1 &&
      "$COFFEE" compare "$WORK/reference-$i.ndjson" "$out"/client-*.ndjson >>"$WORK/client-$i.log" 2>&1; then
      echo exact >>"$WORK/sessions-$i"
    else
      echo failed >>"$WORK/sessions-$i"
      cp -r "$out" "$WORK/failed-$i-$(date +%s)" 2>/dev/null || true
    fi
  done
}
client_pids=()
for i in $(seq 1 "$clients"); do
  client_loop "$i" &
  client_pids+=("$!")
done
for pid in "${client_pids[@]}"; do wait "$pid"; done

log "stopping the cluster"
"$COFFEE" cluster down >/dev/null
wait "$cluster_pid" || true
elapsed=$(($(date +%s) - start))
exact=$(cat "$WORK"/sessions-* 2>/dev/null | grep -c exact || true)
failed=$(cat "$WORK"/sessions-* 2>/dev/null | grep -c failed || true)
kills=$(grep -c '"action":"kill"' "$WORK/chaos.jsonl" || true)
pauses=$(grep -c '"action":"pause"' "$WORK/chaos.jsonl" || true)
restarts=$(grep -c '"action":"restart"' "$WORK/cluster.jsonl" || true)
broker_restarts=$(grep -c start_app "$WORK/broker.log" 2>/dev/null || true)
echo "soak: $minutes min on $scale, $clients clients: $exact sessions exact, $failed failed; $kills kills, $pauses pauses, $restarts node restarts, $broker_restarts broker restarts; ${elapsed} s (logs in $WORK)"
[ "$failed" -eq 0 ]
