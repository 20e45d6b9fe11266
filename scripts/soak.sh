#!/usr/bin/env bash
# A soak, as a user would run one: `coffee cluster up` (its defaults: three health monitors) on the release build,
# `coffee chaos` killing and pausing any node, the machine's RabbitMQ restarted every few minutes, a broker alarm
# and a replica's full disk in turn, and several clients running sessions back to back on generated data, each
# result compared with the reference. It stops by itself and prints: sessions exact and failed, kills, pauses,
# restarts, broker restarts, alarms, full disks, time.
#
#   scripts/soak.sh [--minutes 10] [--scale reduced] [--clients 3] [--fault both] [--interval 1s..4s]
#                   [--broker-every 180] [--alarm-every 150] [--seed 1]
#
# --broker-every N restarts the broker (rabbitmqctl stop_app, 5 s, start_app) every N seconds (0: never). It stops
# the machine's broker: run nothing else against it meanwhile.
# --alarm-every N: every N seconds (0: never), in turn, a memory alarm (the broker's watermark set to 0, every
# publisher blocked) or a full disk under q4_count-0 (its state folder a tmpfs, filled below the replica's 64 MiB
# reserve), each held 25 s. The full disk needs root to mount the tmpfs; without it, only alarms.
# Logs and results: /tmp/coffee-soak-run-<pid>/ (the cluster's own: /tmp/coffee-soak-<pid>/).
. "$(dirname "$0")/lib.sh"

minutes=10 scale=reduced clients=3 fault=both interval=1s..4s broker_every=180 alarm_every=150 seed=1
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --fault) fault="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --broker-every) broker_every="$2"; shift 2 ;;
    --alarm-every) alarm_every="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes M] [--scale S] [--clients N] [--fault kill|pause|both] [--interval A..B] [--broker-every SECS] [--alarm-every SECS] [--seed S]" >&2; exit 2 ;;
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

# The replica whose disk fills, and its state folder (in the cluster's run folder) as a tmpfs of its own.
disk_replica=q4_count-0
disk_dir="/tmp/coffee-$COFFEE_NAMESPACE/state/$disk_replica"
watermark="$(rabbitmqctl -q eval 'vm_memory_monitor:get_vm_memory_high_watermark().' | tr -d '{}[] ' | sed 's/^relative,//')"
disk_mounted=0
if [ "$alarm_every" -gt 0 ]; then
  mkdir -p "$disk_dir"
  if mount -t tmpfs -o size=2g coffee-soak-disk "$disk_dir" 2>/dev/null; then
    disk_mounted=1
  else
    log "cannot mount a tmpfs on $disk_dir (not root?): alarms only, no full disk"
  fi
fi

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rabbitmqctl -q start_app >/dev/null 2>&1 || true
  rabbitmqctl -q set_vm_memory_high_watermark "$watermark" >/dev/null 2>&1 || true
  rm -f "$disk_dir/filler"
  [ "$disk_mounted" -eq 0 ] || umount "$disk_dir" 2>/dev/null || true
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

# Alarms and full disks in turn, each held 25 s; none begins within 40 s of the deadline.
if [ "$alarm_every" -gt 0 ]; then
  (
    turn=0
    while sleep "$alarm_every"; do
      [ "$(date +%s)" -lt $((deadline - 40)) ] || break
      if [ $((turn % 2)) -eq 0 ] || [ "$disk_mounted" -eq 0 ]; then
        echo "$(date +%s) alarm on" >>"$WORK/faults.log"
        rabbitmqctl -q set_vm_memory_high_watermark 0
        sleep 25
        rabbitmqctl -q set_vm_memory_high_watermark "$watermark"
        echo "$(date +%s) alarm off" >>"$WORK/faults.log"
      else
        free=$(df --output=avail -B1 "$disk_dir" | tail -1)
        echo "$(date +%s) disk full ($free bytes free before)" >>"$WORK/faults.log"
        fallocate -l $((free - 32 * 1024 * 1024)) "$disk_dir/filler"
        sleep 25
        rm -f "$disk_dir/filler"
        echo "$(date +%s) disk freed" >>"$WORK/faults.log"
      fi
      turn=$((turn + 1))
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
alarms=$(grep -c "alarm off" "$WORK/faults.log" 2>/dev/null || true)
full_disks=$(grep -c "disk freed" "$WORK/faults.log" 2>/dev/null || true)
echo "soak: $minutes min on $scale, $clients clients: $exact sessions exact, $failed failed; $kills kills, $pauses pauses, $restarts node restarts, $broker_restarts broker restarts, $alarms broker alarms, $full_disks full disks; ${elapsed} s (logs in $WORK)"
[ "$failed" -eq 0 ]
