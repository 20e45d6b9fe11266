#!/usr/bin/env bash
# Removes everything scripts/swarm-up.sh made: the stack, every host's engine and containers (killed), their data
# folders, the namespaces, the bridge and the iptables rule. Safe to run twice, or after a half-made swarm.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swarm-lib.sh"

[ "$(id -u)" = 0 ] || { echo "swarm-down.sh needs root" >&2; exit 1; }
if host_up 1; then
  hdocker 1 stack rm "$STACK" >/dev/null 2>&1 || true
fi
for n in $(seq 1 "$HOSTS"); do
  kill_host "$n"
  unmount_host "$n"
  ip netns del "$(host_ns "$n")" 2>/dev/null || true
  ip link del "$(host_ns "$n")" 2>/dev/null || true
  for controller in /sys/fs/cgroup/*/; do
    [ -d "$controller$(host_cgroup "$n")" ] && find "$controller$(host_cgroup "$n")" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
done
ip link del "$BRIDGE" 2>/dev/null || true
while iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do
  iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
done
rm -rf "$SWARM_DATA" "$SWARM_RUN"
log "the swarm is gone (no namespace, engine, bridge, rule or data folder left)"
