#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, for trying the pipeline on quorum queues that lose a broker:
# nodes coffee1..3@localhost, AMQP on 127.0.0.1:5681..5683, Erlang distribution on 25681..25683, each node in its
# own folder under /tmp/coffee-brokers (data, logs, pid file, config, an empty plugin list). It runs Debian's
# rabbitmq-server next to the system broker (rabbit@localhost, 5672/25672), which it never stops, reconfigures or
# joins; the two only share epmd (4369) and, when run by root, the rabbitmq user and its Erlang cookie.
#
# usage: scripts/broker-cluster.sh start|stop|status|urls|pid N|kill N|restart N
#   start      start the three nodes and cluster them (nothing to do if they run); last stdout line: the AMQP URLs
#   stop       stop every node (rabbitmqctl stop, else SIGKILL by pid) and remove the folder
#   status     which nodes run, and the cluster as node 1 (or the first running node) sees it
#   urls       print the comma-separated AMQP URLs
#   pid N      print the OS pid of node N's Erlang VM
#   kill N     SIGKILL node N's Erlang VM (a crash, not a clean stop)
#   restart N  start node N again after a kill; it rejoins the cluster from its data folder
# env: BROKER_CLUSTER_BASE_PORT (5681: node N listens on BASE+N-1, distribution on BASE+N-1+20000),
#      BROKER_CLUSTER_DIR (/tmp/coffee-brokers), BROKER_CLUSTER_TIMEOUT (seconds any single wait may take, 120)
. "$(dirname "$0")/lib.sh"

USAGE="usage: $0 start|stop|status|urls|pid N|kill N|restart N"
BASE_PORT="${BROKER_CLUSTER_BASE_PORT:-5681}"
BASE_DIR="${BROKER_CLUSTER_DIR:-/tmp/coffee-brokers}"
TIMEOUT="${BROKER_CLUSTER_TIMEOUT:-120}"
NODES=(1 2 3)
MARKER=.broker-cluster # in BASE_DIR: `stop` removes only a folder that has it

die() { echo "$*" >&2; exit 1; }

node() { echo "coffee$1@localhost"; }
amqp_port() { echo $((BASE_PORT + $1 - 1)); }
dist_port() { echo $((BASE_PORT + $1 - 1 + 20000)); }
node_dir() { echo "$BASE_DIR/coffee$1"; }
urls() {
  local i out=()
  for i in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/%2f"); done
  (IFS=,; echo "${out[*]}")
}
check_n() { [[ "${1:-}" =~ ^[1-3]$ ]] || die "$USAGE (N is 1, 2 or 3)"; }

# --- Which RabbitMQ, run as whom ---------------------------------------------------------------------------------
# Debian's /usr/sbin/rabbitmq* are wrappers around /usr/lib/rabbitmq/bin/*: run by root they `su` to the rabbitmq
# user, whose home (/var/lib/rabbitmq) holds the Erlang cookie of the system broker. Run by root, this script does
# the same for the nodes and for every rabbitmqctl it calls, so nodes and CLI share that user and that cookie and a
# plain `rabbitmqctl -n coffee1@localhost ...` works too. Run by another user, the nodes and the CLI run as that
# user with its ~/.erlang.cookie (Erlang creates it on first use).
RMQ_BIN=""
NODE_USER=""
find_rabbitmq() {
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    RMQ_BIN=/usr/lib/rabbitmq/bin
  elif command -v rabbitmq-server >/dev/null 2>&1; then
    RMQ_BIN="$(dirname "$(command -v rabbitmq-server)")"
  else
    die "RabbitMQ is not installed: apt-get install -y rabbitmq-server"
  fi
  if [ "$(id -u)" = 0 ] && [ "$RMQ_BIN" = /usr/lib/rabbitmq/bin ] && id rabbitmq >/dev/null 2>&1; then
    NODE_USER=rabbitmq
  fi
}

# as_node_user CMD ARGS...: runs CMD as the nodes' user, from / (so nothing lands in the caller's folder).
as_node_user() {
  if [ -n "$NODE_USER" ]; then
    # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell: the command and its arguments, passed intact
    (cd / && su -s /bin/sh -c 'exec "$0" "$@"' -- "$NODE_USER" "$@")
  else
    (cd / && "$@")
  fi
}
ctl() { as_node_user "$RMQ_BIN/rabbitmqctl" -q "$@"; }

cookie_file() {
  if [ -n "$NODE_USER" ]; then
    echo "$(getent passwd "$NODE_USER" | cut -d: -f6)/.erlang.cookie"
  else
    echo "$HOME/.erlang.cookie"
  fi
}

# --- Processes -----------------------------------------------------------------------------------------------------
# is_ours PID N: PID is a process this script started for node N (the environment it was started with names
# node N's pid file), not a recycled pid.
is_ours() {
  local environ
  [ -n "$1" ] && environ="$({ tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null)" &&
    grep -qxF "RABBITMQ_PID_FILE=$(node_dir "$2")/pid" <<<"$environ"
}
# pid_in FILE N: the pid FILE holds, if it is a live process this script started for node N.
pid_in() {
  local pid
  [ -r "$1" ] || return 1
  pid="$(tr -dc 0-9 <"$1")"
  is_ours "$pid" "$2" || return 1
  echo "$pid"
}
# node_pid N: the OS pid of node N's Erlang VM (RabbitMQ writes it to the pid file early in its boot).
node_pid() { pid_in "$(node_dir "$1")/pid" "$1"; }
# launcher_pid N: the pid of the `setsid su ... rabbitmq-server` that started node N, while it lives.
launcher_pid() { pid_in "$(node_dir "$1")/launcher.pid" "$1"; }
port_listening() {
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hltn "sport = :$1")" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# wait_until WHAT CMD ARGS...: runs CMD every half second until it succeeds; fails after $TIMEOUT seconds.
wait_until() {
  local what="$1" deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || { echo "timed out after ${TIMEOUT}s waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

show_logs() {
  local d
  d="$(node_dir "$1")"
  echo "--- $d/log/startup.log (tail)" >&2
  tail -n 20 "$d/log/startup.log" >&2 2>/dev/null || true
  echo "--- $d/log/$(node "$1").log (tail)" >&2
  tail -n 20 "$d/log/$(node "$1").log" >&2 2>/dev/null || true
}

# booted N: node N's VM lives and its AMQP listener is up (the last step of a boot). Fails the whole script, with
# the node's logs, as soon as the node's processes are gone.
booted() {
  if ! node_pid "$1" >/dev/null && ! launcher_pid "$1" >/dev/null; then
    echo "$(node "$1") exited while starting" >&2
    show_logs "$1"
    exit 1
  fi
  node_pid "$1" >/dev/null && port_listening "$(amqp_port "$1")"
}

# running_nodes N: the nodes the cluster runs, as node N sees them, one a line.
running_nodes() {
  ctl -n "$(node "$1")" cluster_status --formatter json 2>/dev/null |
    sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' | tr -d '"' | tr ',' '\n'
}
# cluster_has N NODE...: node N sees every NODE running in its cluster.
cluster_has() {
  local seen want
  seen="$(running_nodes "$1")" || return 1
  shift
  for want in "$@"; do grep -qxF "$want" <<<"$seen" || return 1; done
}
# the nodes whose VM runs
live_nodes() {
  local i
  for i in "${NODES[@]}"; do node_pid "$i" >/dev/null && node "$i"; done
  return 0
}

# --- Starting a node -----------------------------------------------------------------------------------------------
write_node_files() {
  local i="$1" d
  d="$(node_dir "$i")"
  mkdir -p "$d/mnesia" "$d/log" "$d/conf.d"
  # Its own config: /etc/rabbitmq/rabbitmq.conf (listeners on 5672) must not apply. guest may log in over
  # loopback only, which is RabbitMQ's default.
  cat >"$d/rabbitmq.conf" <<EOF
# $(node "$i"), written by scripts/broker-cluster.sh
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$i")
cluster_name = coffee-brokers
loopback_users.guest = true
log.file.level = info
log.console = false
EOF
  # No plugins: the system's enabled_plugins (the management UI on 15672, say) must not apply either.
  echo '[].' >"$d/enabled_plugins"
  # Stands in for /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost there); the node's settings are
  # passed as RABBITMQ_* variables. Distribution and epmd on loopback only, as the system broker has them.
  cat >"$d/rabbitmq-env.conf" <<'EOF'
# written by scripts/broker-cluster.sh
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  if [ -n "$NODE_USER" ]; then chown -R "$NODE_USER:" "$d"; fi
}

launch() {
  local i="$1" d
  d="$(node_dir "$i")"
  write_node_files "$i"
  rm -f "$d/pid" "$d/launcher.pid"
  local server=("$RMQ_BIN/rabbitmq-server")
  # shellcheck disable=SC2016 # $0 is the inner shell's
  if [ -n "$NODE_USER" ]; then server=(su -s /bin/sh -c 'exec "$0"' -- "$NODE_USER" "$RMQ_BIN/rabbitmq-server"); fi
  # setsid: a Ctrl-C in the terminal that ran `start` must not reach the node (rabbitmq-server stops on SIGINT).
  (
    cd "$d" || exit 1
    env RABBITMQ_NODENAME="$(node "$i")" \
      RABBITMQ_DIST_PORT="$(dist_port "$i")" \
      RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
      RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
      RABBITMQ_CONFIG_FILES="$d/conf.d" \
      RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$d/mnesia" \
      RABBITMQ_LOG_BASE="$d/log" \
      RABBITMQ_PID_FILE="$d/pid" \
      ERL_CRASH_DUMP="$d/log/erl_crash.dump" \
      setsid --wait "${server[@]}" </dev/null >>"$d/log/startup.log" 2>&1 &
    echo $! >"$d/launcher.pid"
  )
  # $! was a fork of this shell until it execs `env`: only then does its environment name node i's pid file, which
  # is how launcher_pid tells it is ours. Waiting here keeps `booted` from taking that moment for a node that
  # exited while starting (CI saw `restart` fail so on a loaded machine).
  local pid
  pid="$(tr -dc 0-9 <"$d/launcher.pid")"
  wait_until "the launcher of $(node "$i") (pid $pid) to start" launcher_started "$pid" "$i"
}
# launcher_started PID N: the launcher has exec'd (its environment is node N's), or it is already gone.
launcher_started() { is_ours "$1" "$2" || ! kill -0 "$1" 2>/dev/null; }

check_ports_free() {
  local i p
  for i in "$@"; do
    for p in "$(amqp_port "$i")" "$(dist_port "$i")"; do
      if port_listening "$p"; then die "port $p (for $(node "$i")) is taken by another process: ss -ltnp 'sport = :$p'"; fi
    done
  done
}

join() {
  local i="$1" n
  n="$(node "$i")"
  log "$n joins $(node 1)"
  ctl -n "$n" stop_app
  ctl -n "$n" join_cluster "$(node 1)"
  ctl -n "$n" start_app
  touch "$(node_dir "$i")/joined"
}

# --- Commands ------------------------------------------------------------------------------------------------------
cmd_start() {
  find_rabbitmq
  local i started=() all=()
  for i in "${NODES[@]}"; do all+=("$(node "$i")"); done
  if [ "$(live_nodes | wc -l)" -eq "${#NODES[@]}" ] && cluster_has 1 "${all[@]}"; then
    log "the cluster already runs"
    urls
    return 0
  fi
  local cookie
  cookie="$(cookie_file)"
  if [ -f "$cookie" ]; then
    log "Erlang cookie of nodes and CLI: $cookie${NODE_USER:+ (user $NODE_USER)}"
  else
    log "no $cookie yet: the first node creates it"
  fi
  if [ -d "$BASE_DIR" ] && [ ! -e "$BASE_DIR/$MARKER" ] && [ -n "$(ls -A "$BASE_DIR")" ]; then
    die "$BASE_DIR is not empty and not this script's (no $MARKER): choose another BROKER_CLUSTER_DIR"
  fi
  mkdir -p "$BASE_DIR"
  touch "$BASE_DIR/$MARKER"
  for i in "${NODES[@]}"; do
    if ! node_pid "$i" >/dev/null && ! launcher_pid "$i" >/dev/null; then started+=("$i"); fi
  done
  check_ports_free "${started[@]}"
  local t0=$SECONDS
  for i in "${started[@]}"; do
    log "starting $(node "$i") on 127.0.0.1:$(amqp_port "$i") (distribution $(dist_port "$i")), in $(node_dir "$i")"
    launch "$i"
  done
  for i in "${NODES[@]}"; do
    wait_until "$(node "$i") to boot" booted "$i" || { show_logs "$i"; exit 1; }
  done
  log "nodes booted after $((SECONDS - t0))s"
  for i in "${NODES[@]:1}"; do
    if [ ! -e "$(node_dir "$i")/joined" ]; then join "$i"; fi
  done
  wait_until "the cluster to run ${all[*]}" cluster_has 1 "${all[@]}"
  log "cluster of ${#NODES[@]} running after $((SECONDS - t0))s"
  urls
}

cmd_stop() {
  find_rabbitmq
  local i pid pids=()
  for i in "${NODES[@]}"; do
    if pid="$(node_pid "$i")"; then
      log "stopping $(node "$i") (pid $pid)"
      ctl -n "$(node "$i")" --timeout 30 stop >/dev/null 2>&1 &
      pids+=("$pid")
    fi
  done
  wait
  # rabbitmqctl stop returns before the VM is gone; SIGKILL what still runs after the deadline (a node hung in
  # its boot, or one whose stop failed), then whatever launcher is left.
  local deadline=$((SECONDS + 30))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for i in "${NODES[@]}"; do
    if pid="$(launcher_pid "$i")"; then
      kill -TERM "$pid" 2>/dev/null || true
      wait_until "the launcher of $(node "$i") (pid $pid) to exit" eval "! kill -0 $pid 2>/dev/null" ||
        kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ -d "$BASE_DIR" ]; then
    [ -e "$BASE_DIR/$MARKER" ] || die "$BASE_DIR has no $MARKER: not removing a folder this script did not make"
    rm -rf "$BASE_DIR"
    log "removed $BASE_DIR"
  fi
}

cmd_status() {
  find_rabbitmq
  local i pid first=""
  for i in "${NODES[@]}"; do
    if pid="$(node_pid "$i")"; then
      if port_listening "$(amqp_port "$i")"; then echo "$(node "$i") running pid $pid amqp 127.0.0.1:$(amqp_port "$i")"
      else echo "$(node "$i") booting (or app stopped) pid $pid"; fi
      first="${first:-$i}"
    else
      echo "$(node "$i") down"
    fi
  done
  if [ -n "$first" ]; then
    echo "running in the cluster, as $(node "$first") sees it: $(running_nodes "$first" | paste -sd' ')"
  fi
}

cmd_kill() {
  check_n "${1:-}"
  local pid
  pid="$(node_pid "$1")" || die "$(node "$1") does not run"
  kill -KILL "$pid"
  wait_until "pid $pid to exit" eval "! kill -0 $pid 2>/dev/null"
  log "SIGKILLed $(node "$1") (pid $pid)"
}

cmd_restart() {
  check_n "${1:-}"
  find_rabbitmq
  local i="$1" d t0=$SECONDS
  d="$(node_dir "$i")"
  [ -e "$d/mnesia" ] || die "$(node "$i") has no data folder ($d): run start first"
  local what="runs again"
  if node_pid "$i" >/dev/null || launcher_pid "$i" >/dev/null; then
    what="already runs"
  else
    check_ports_free "$i"
    log "restarting $(node "$i")"
    launch "$i"
  fi
  wait_until "$(node "$i") to boot" booted "$i" || { show_logs "$i"; exit 1; }
  # Back in the cluster: it sees itself and every other node whose VM runs.
  local live
  mapfile -t live < <(live_nodes)
  wait_until "$(node "$i") to rejoin ${live[*]}" cluster_has "$i" "${live[@]}"
  log "$(node "$i") $what, in the cluster with ${live[*]} (${#live[@]} of ${#NODES[@]} up), after $((SECONDS - t0))s"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  urls) urls ;;
  pid) check_n "${2:-}"; node_pid "$2" || die "$(node "$2") does not run" ;;
  kill) cmd_kill "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  *) die "$USAGE" ;;
esac
