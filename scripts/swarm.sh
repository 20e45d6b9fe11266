#!/usr/bin/env bash
# Drives the three hosts of scripts/swarm-up.sh, faults included:
#   scripts/swarm.sh hosts               each host: name, address, engine socket, up or down
#   scripts/swarm.sh docker N ARGS...    docker against host N's engine
#   scripts/swarm.sh kill-host N         a power cut: host N's engine and every container on it die at once;
#                                        its disk stays
#   scripts/swarm.sh start-host N        host N comes back (its engine restarts, the swarm reschedules its tasks)
#   scripts/swarm.sh partition N         host N is cut off from the others, both ways
#   scripts/swarm.sh partition-oneway N  what host N sends to the others is dropped (it still hears them)
#   scripts/swarm.sh heal                removes every partition
#   scripts/swarm.sh gateway             the address a client on this machine gives to --gateway
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swarm-lib.sh"

usage() { sed -n '2,11p' "$0" | sed 's/^# //' >&2; exit 2; }
host_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$HOSTS" ] || { echo "no host '${1:-}' (1..$HOSTS)" >&2; exit 2; }
  echo "$1"
}

case "${1:-}" in
  hosts)
    for n in $(seq 1 "$HOSTS"); do
      state=down
      host_up "$n" && state=up
      if nsenter --net="/run/netns/$(host_ns "$n")" iptables -S 2>/dev/null | grep -q coffee-partition; then
        state="$state, partitioned"
      fi
      printf '%s\t%s\t%s\t%s\n' "$(host_ns "$n")" "$(host_ip "$n")" "$(host_sock "$n")" "$state"
    done
    ;;
  docker) n="$(host_arg "${2:-}")"; shift 2; hdocker "$n" "$@" ;;
  kill-host) n="$(host_arg "${2:-}")"; kill_host "$n"; log "host $n: power cut" ;;
  start-host) n="$(host_arg "${2:-}")"; start_engine "$n"; log "host $n is back" ;;
  partition) n="$(host_arg "${2:-}")"; partition_host "$n" both; log "host $n is cut off, both ways" ;;
  partition-oneway) n="$(host_arg "${2:-}")"; partition_host "$n" oneway; log "what host $n sends is dropped" ;;
  heal) heal_all; log "every partition healed" ;;
  gateway) echo "$(host_ip 1):7070" ;;
  *) usage ;;
esac
