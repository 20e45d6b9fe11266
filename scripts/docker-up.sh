#!/usr/bin/env bash
# Starts the compose project (docker-compose-dev.yaml) on this machine's Docker engine, with no registry needed:
#   1. installs Docker (Debian's docker.io and docker-compose) where missing, and starts dockerd if it is down;
#   2. builds every image with no pull: the base images are made from Debian's packages (mmdebstrap) when no
#      registry answers, the binaries and the console's page with the host's toolchain;
#   3. starts the project and waits until the gateway (127.0.0.1:7070) and the console (127.0.0.1:8080) answer.
# `scripts/docker-down.sh` removes its containers, networks and volumes.
# COFFEE_PROFILE=debug builds debug binaries (faster to build; the tests use it). On a machine with a registry,
# `docker compose -f docker-compose-dev.yaml up --build` builds from source with the repository's Dockerfile.
. "$(dirname "$0")/lib.sh"

PROFILE="${COFFEE_PROFILE:-release}"
PROJECT="${COFFEE_COMPOSE_PROJECT:-coffee}"
FILE="${COFFEE_COMPOSE_FILE:-docker-compose-dev.yaml}"
COMPOSE=(docker-compose -p "$PROJECT" -f "$FILE")

ensure_docker

# The mirror apt already uses (never written into a file of ours).
debian_mirror() {
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources
  else
    awk '/^deb / { print $2; exit }' /etc/apt/sources.list
  fi
}

# An image made from Debian's packages: `mmdebstrap --include=PACKAGES`, imported as TAG (once).
debian_image() {
  local tag="$1" packages="$2"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
  fi
  log "making $tag from Debian's packages ($packages)"
  local tar
  tar="$(mktemp --suffix=.tar)"
  mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$tar" "$(debian_mirror)"
  docker import "$tar" "$tag" >/dev/null
  rm -f "$tar"
}

# The base images: pulled where a registry answers, made from Debian's packages otherwise.
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1 && ! docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
  debian_image debian:bookworm-slim ca-certificates
fi
if ! docker image inspect rabbitmq:3-management >/dev/null 2>&1 && ! docker pull -q rabbitmq:3-management >/dev/null 2>&1; then
  debian_image coffee/rabbitmq-base rabbitmq-server,ca-certificates
  log "building rabbitmq:3-management from Debian's rabbitmq-server"
  docker build -q -t rabbitmq:3-management -f docker/rabbitmq.Dockerfile docker >/dev/null
fi

log "building coffee and coffee-console ($PROFILE) and the console's page"
if [ "$PROFILE" = release ]; then
  cargo build --release -p coffee -p coffee-console
else
  cargo build -p coffee -p coffee-console
fi
./scripts/build-frontend.sh

log "building the node image coffee:dev (no BuildKit, no pull)"
context="$ROOT/target/docker-context"
rm -rf "$context"
mkdir -p "$context/bin" "$context/static" "$context/sample"
cp "target/$PROFILE/coffee" "target/$PROFILE/coffee-console" "$context/bin/"
cp -r frontend/dist/. "$context/static/"
cp -r data/sample/. "$context/sample/"
DOCKER_BUILDKIT=0 docker build -q -t coffee:dev -f docker/offline.Dockerfile "$context" >/dev/null

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
