#!/usr/bin/env bash
# Three hosts on this machine, one Docker Swarm, the project deployed over them (docker-stack.yaml):
#   1. builds the images with no pull (scripts/docker-images.sh, on this machine's engine);
#   2. makes three hosts (network namespaces on a bridge, an engine each; scripts/swarm-lib.sh), joins them into
#      one swarm of three managers (it keeps a majority when one host is lost), labels them coffee.host=1..3;
#   3. loads the images into every host's engine (docker save | load: nothing is pulled);
#   4. deploys the stack and waits until the gateway and the console answer from this machine.
# scripts/swarm.sh drives the hosts (faults included); scripts/swarm-down.sh removes everything.
# Needs root. COFFEE_PROFILE=debug builds debug binaries (the tests use it).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swarm-lib.sh"

[ "$(id -u)" = 0 ] || { echo "swarm-up.sh needs root (network namespaces, engines)" >&2; exit 1; }
started="$(date +%s)"
./scripts/docker-images.sh

log "making $HOSTS hosts ($SUBNET_PREFIX.11-1$HOSTS on $BRIDGE), an engine each"
make_network
for n in $(seq 1 "$HOSTS"); do
  make_host_ns "$n"
  start_engine "$n"
done

if [ "$(hdocker 1 info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  log "one swarm of $HOSTS managers"
  hdocker 1 swarm init --advertise-addr "$(host_ip 1)" --default-addr-pool "$OVERLAY_POOL" >/dev/null
fi
token="$(hdocker 1 swarm join-token -q manager)"
for n in $(seq 2 "$HOSTS"); do
  if [ "$(hdocker "$n" info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    hdocker "$n" swarm join --token "$token" --advertise-addr "$(host_ip "$n")" "$(host_ip 1):2377" >/dev/null
  fi
done
for n in $(seq 1 "$HOSTS"); do
  hdocker 1 node update --label-add "coffee.host=$n" "$(hdocker "$n" info --format '{{.Swarm.NodeID}}')" >/dev/null
done

log "loading the images into every host (no pull)"
loads=()
for n in $(seq 1 "$HOSTS"); do
  docker save coffee:dev rabbitmq:3-management | hdocker "$n" load -q >/dev/null &
  loads+=($!)
done
# Not a bare `wait`: the engines are this script's children too.
for pid in "${loads[@]}"; do
  wait "$pid"
done

log "deploying the stack $STACK (docker-stack.yaml)"
# The console drives its own host's engine: the socket of host 1, not this machine's.
COFFEE_DOCKER_SOCKET="$SWARM_RUN/h1/docker.sock" \
  hdocker 1 stack deploy --resolve-image never --prune -c docker-stack.yaml "$STACK" >/dev/null

gateway="$(host_ip 1)"
for _ in $(seq 1 240); do
  if (exec 3<>"/dev/tcp/$gateway/7070") 2>/dev/null && curl -s -o /dev/null "http://$gateway:8080/"; then
    log "up in $(($(date +%s) - started)) s: the gateway on $gateway:7070, the console on http://$gateway:8080 (scripts/swarm.sh hosts; down: scripts/swarm-down.sh)"
    exit 0
  fi
  sleep 1
done
echo "the gateway ($gateway:7070) or the console (:8080) did not answer within 240 s; tasks:" >&2
hdocker 1 stack ps --no-trunc "$STACK" >&2 || true
exit 1
