#!/usr/bin/env bash
# Starts the compose project (docker-compose-dev.yaml) on this machine's Docker engine, with no registry needed:
#   1. installs Docker (Debian's docker.io and docker-compose) where missing, and starts dockerd if it is down,
#      and builds every image with no pull (scripts/docker-images.sh);
#   2. starts the project and waits until the gateway (127.0.0.1:7070) and the console (127.0.0.1:8080) answer.
# `scripts/docker-down.sh` removes its containers, networks and volumes.
# COFFEE_PROFILE=debug builds debug binaries (faster to build; the tests use it). On a machine with a registry,
# `docker compose -f docker-compose-dev.yaml up --build` builds from source with the repository's Dockerfile.
. "$(dirname "$0")/lib.sh"

PROJECT="${COFFEE_COMPOSE_PROJECT:-coffee}"
FILE="${COFFEE_COMPOSE_FILE:-docker-compose-dev.yaml}"
COMPOSE=(docker-compose -p "$PROJECT" -f "$FILE")

./scripts/docker-images.sh

log "starting the compose project $PROJECT"
"${COMPOSE[@]}" up -d --no-build

wait_for() {
  local what="$1" url_or_port="$2"
  for _ in $(seq 1 120); do
    if [ "$what" = gateway ] && (exec 3<>"/dev/tcp/127.0.0.1/$url_or_port") 2>/dev/null; then
      return 0
    fi
    if [ "$what" = console ] && curl -fsS -o /dev/null "$url_or_port" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  echo "the $what did not answer within 120 s; see: ${COMPOSE[*]} logs" >&2
  "${COMPOSE[@]}" ps >&2
  return 1
}
wait_for gateway 7070
wait_for console http://127.0.0.1:8080/
log "up: the gateway on 127.0.0.1:7070, the console on http://127.0.0.1:8080 (down: scripts/docker-down.sh)"
