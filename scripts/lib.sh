# Shared setup steps of the project's scripts. Source it: `. "$(dirname "$0")/lib.sh"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

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
