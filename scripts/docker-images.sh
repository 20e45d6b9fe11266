#!/usr/bin/env bash
# Builds the project's images on this machine's Docker engine with no registry needed:
#   - the base images, pulled where a registry answers, made from Debian's packages (mmdebstrap) otherwise;
#   - rabbitmq:3-management from Debian's rabbitmq-server when it cannot be pulled;
#   - coffee:dev, the node image: the binaries and the console's page built with the host's toolchain.
# Used by scripts/docker-up.sh (one engine, compose) and scripts/swarm-up.sh (three hosts, a swarm).
# COFFEE_PROFILE=debug builds debug binaries (faster to build; the tests use it).
. "$(dirname "$0")/lib.sh"

PROFILE="${COFFEE_PROFILE:-release}"

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
