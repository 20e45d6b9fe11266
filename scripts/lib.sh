# Shared setup steps of the project's scripts. Source it: `. "$(dirname "$0")/lib.sh"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# At least $1 GiB free where the build writes: a full disk otherwise shows up as a linker's bus error.
ensure_disk() {
  local need_gib="$1" free_kib
  free_kib="$(df -Pk "$ROOT" | awk 'NR == 2 { print $4 }')"
  if [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
    echo "only $((free_kib / 1024)) MiB free on the disk of $ROOT; the build and tests need about ${need_gib} GiB" >&2
    echo "(free some: old target folders, 'docker system prune', /tmp)" >&2
    df -h "$ROOT" /tmp >&2
    return 1
  fi
}

# RabbitMQ on 127.0.0.1:5672 (guest/guest): install it if missing, start it if down, wait until it serves.
ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing rabbitmq-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 60); do
    if rabbitmqctl -q await_startup >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  echo "RabbitMQ did not start: see /var/log/rabbitmq/" >&2
  return 1
}

# A Docker engine: install Debian's docker.io and docker-compose if missing, start dockerd if it does not answer,
# wait until it serves. Fails, saying why, if it cannot start.
ensure_docker() {
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
    log "installing docker.io and docker-compose"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /tmp/dockerd.log)"
    (dockerd >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "the Docker engine did not start: see /tmp/dockerd.log" >&2
    tail -20 /tmp/dockerd.log >&2 || true
    return 1
  fi
}

# Prometheus from Debian's package, for the scrape test. RUNLEVEL=1 keeps the package's service from starting:
# the test runs its own Prometheus, on a port of its own, and stops it.
# libfaketime (Debian's faketime): tests/tests/clocks.rs preloads it into the nodes to make their wall clocks jump.
ensure_faketime() {
  if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]; then
    log "installing faketime"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
  fi
}

# iptables: tests/tests/half_open.rs drops one established client-gateway flow on loopback.
ensure_iptables() {
  if ! command -v iptables >/dev/null 2>&1; then
    log "installing iptables"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
  fi
}

ensure_prometheus() {
  if ! command -v prometheus >/dev/null 2>&1; then
    log "installing prometheus"
    apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
}
