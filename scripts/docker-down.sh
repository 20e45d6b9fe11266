#!/usr/bin/env bash
# Removes the compose project that scripts/docker-up.sh started: its containers, networks and volumes. The images
# stay, so the next docker-up.sh builds only what changed.
#
# It must win against the project's own restarters: a monitor (or the console) that restarts a killed node
# between compose's stop and its remove leaves that container running, and the network and volumes it holds
# ("has active endpoints"). So the services that drive the engine stop first, then the rest goes, and whatever
# is still there after that is removed by force until nothing of the project is left.
. "$(dirname "$0")/lib.sh"
PROJECT="${COFFEE_COMPOSE_PROJECT:-coffee}"
FILE="${COFFEE_COMPOSE_FILE:-docker-compose-dev.yaml}"
COMPOSE=(docker-compose -p "$PROJECT" -f "$FILE")
LABEL="label=com.docker.compose.project=$PROJECT"

log "removing the compose project $PROJECT (containers, networks, volumes)"
mapfile -t restarters < <("${COMPOSE[@]}" config --services | grep -E '^(monitor-[0-9]+|console)$' || true)
if [ "${#restarters[@]}" -gt 0 ]; then
  "${COMPOSE[@]}" stop --timeout 5 "${restarters[@]}" >/dev/null 2>&1 || true
fi
for attempt in 1 2 3 4 5; do
  "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 && down=ok || down=failed
  left="$(docker ps -aq --filter "$LABEL")"
  if [ "$down" = ok ] && [ -z "$left" ] && [ -z "$(docker network ls -q --filter "$LABEL")" ] \
    && [ -z "$(docker volume ls -q --filter "$LABEL")" ]; then
    exit 0
  fi
  log "something of $PROJECT is left (try $attempt): removing it by force"
  [ -n "$left" ] && docker rm -f -v $left >/dev/null 2>&1 || true
  sleep 1
done
echo "the compose project $PROJECT could not be removed whole; left:" >&2
docker ps -a --filter "$LABEL" >&2
docker network ls --filter "$LABEL" >&2
docker volume ls --filter "$LABEL" >&2
exit 1
