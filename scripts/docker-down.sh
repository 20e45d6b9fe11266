#!/usr/bin/env bash
# Removes the compose project that scripts/docker-up.sh started: its containers, networks and volumes. The images
# stay, so the next docker-up.sh builds only what changed.
. "$(dirname "$0")/lib.sh"
PROJECT="${COFFEE_COMPOSE_PROJECT:-coffee}"
FILE="${COFFEE_COMPOSE_FILE:-docker-compose-dev.yaml}"
log "removing the compose project $PROJECT (containers, networks, volumes)"
docker-compose -p "$PROJECT" -f "$FILE" down --volumes --remove-orphans --timeout 5
