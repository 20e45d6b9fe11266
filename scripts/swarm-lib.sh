# The three hosts of scripts/swarm-up.sh on this one machine: each a network namespace on one bridge, with its own
# Docker engine (its own containerd, data folder and socket), its containers in a cgroup of its own (so that a
# power cut can take them all at once). Sourced by swarm-up.sh, swarm-down.sh and swarm.sh, after lib.sh.
# Recipe and pitfalls: ../shared/STACK.md, "Several hosts on one machine".

HOSTS=3
STACK=coffee
SWARM_DATA=/var/lib/coffee-swarm      # each host's disk: engine data, volumes (kept by kill-host)
SWARM_RUN=/run/coffee-swarm           # each host's sockets and pid files
BRIDGE=csw-br
SUBNET_PREFIX=10.231.0                # the bridge is .1, host N is .1N
OVERLAY_POOL=10.232.0.0/16            # the swarm's overlay networks

host_ns() { echo "csw-h$1"; }
host_ip() { echo "$SUBNET_PREFIX.1$1"; }
host_sock() { echo "unix://$SWARM_RUN/h$1/docker.sock"; }
host_cgroup() { echo "csw-h$1"; }
hdocker() { local n="$1"; shift; docker -H "$(host_sock "$n")" "$@"; }

# Whether host N's engine answers.
host_up() { hdocker "$1" info >/dev/null 2>&1; }

# The bridge, the FORWARD rule (the FORWARD policy is DROP once any dockerd ran) and host N's namespace.
make_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET_PREFIX.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null \
    || iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
}

make_host_ns() {
  local n="$1" ns
  ns="$(host_ns "$n")"
  ip netns list | grep -qw "$ns" && return 0
  ip netns add "$ns"
  ip link add "$ns" type veth peer name "$ns-in"
  ip link set "$ns-in" netns "$ns"
  ip link set "$ns" master "$BRIDGE" up
  ip -n "$ns" link set "$ns-in" name eth0
  ip -n "$ns" addr add "$(host_ip "$n")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  # No way out but the bridge, and a refusal at once for the rest: the swarm's agent tries to pull every image
  # before it falls back on the loaded one, and a lookup that times out would hold each task 20 s.
  ip -n "$ns" route add unreachable default
}

# Starts host N's engine inside its namespace (nsenter, not `ip netns exec`, which hides the cgroup mounts) and
# waits until it answers.
start_engine() {
  local n="$1" data="$SWARM_DATA/h$1" run="$SWARM_RUN/h$1"
  host_up "$n" && return 0
  mkdir -p "$data" "$run"
  [ -f "$data/daemon.json" ] || echo '{}' >"$data/daemon.json"
  nsenter --net="/run/netns/$(host_ns "$n")" dockerd --data-root "$data/docker" --exec-root "$run/exec" \
    -H "$(host_sock "$n")" --pidfile "$run/docker.pid" --config-file "$data/daemon.json" \
    --cgroup-parent "/$(host_cgroup "$n")" >>"$data/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    host_up "$n" && return 0
    sleep 1
  done
  echo "host $n's engine did not start: see $data/dockerd.log" >&2
  tail -20 "$data/dockerd.log" >&2
  return 1
}

# Every process of host N: its engine's (everything in its network namespace) and its containers' (its cgroup).
host_pids() {
  local n="$1"
  ip netns pids "$(host_ns "$n")" 2>/dev/null || true
  cat /sys/fs/cgroup/pids/"$(host_cgroup "$n")"/*/cgroup.procs 2>/dev/null || true
}

# A power cut: the containers frozen in one step, then the engine and every process of the host SIGKILLed. The
# disk stays.
kill_host() {
  local n="$1" freezer
  freezer="/sys/fs/cgroup/freezer/$(host_cgroup "$n")"
  for state in "$freezer"/*/freezer.state; do
    [ -f "$state" ] && echo FROZEN >"$state" 2>/dev/null || true
  done
  for _ in 1 2 3; do
    host_pids "$n" | xargs -r kill -9 2>/dev/null || true
    sleep 0.2
  done
  for state in "$freezer"/*/freezer.state; do
    [ -f "$state" ] && echo THAWED >"$state" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    [ -z "$(host_pids "$n")" ] && break
    host_pids "$n" | xargs -r kill -9 2>/dev/null || true
    sleep 0.2
  done
  # A reboot empties /run: what the engine and its containerd kept there (pid files, sockets, the mounts of
  # its containers' layers and namespaces) goes. A stale containerd pid file that a new process now holds would
  # keep the engine from starting again.
  unmount_host "$n"
  rm -rf "${SWARM_RUN:?}/h$n"
}

# Unmounts what host N's engine mounted (its containers' layers, network namespaces, volumes).
unmount_host() {
  local n="$1"
  grep -E " ($SWARM_DATA|$SWARM_RUN)/h$n/" /proc/mounts | awk '{ print $2 }' | sort -r \
    | xargs -r -n1 umount -l 2>/dev/null || true
}

# iptables inside host N's namespace: DROP to (and from) every other host. `oneway` drops only what host N sends.
partition_host() {
  local n="$1" mode="${2:-both}" ns other
  ns="$(host_ns "$n")"
  for other in $(seq 1 "$HOSTS"); do
    [ "$other" = "$n" ] && continue
    nsenter --net="/run/netns/$ns" iptables -I OUTPUT -d "$(host_ip "$other")" -j DROP -m comment --comment coffee-partition
    if [ "$mode" = both ]; then
      nsenter --net="/run/netns/$ns" iptables -I INPUT -s "$(host_ip "$other")" -j DROP -m comment --comment coffee-partition
    fi
  done
}

heal_all() {
  local n ns chain rule
  for n in $(seq 1 "$HOSTS"); do
    ns="$(host_ns "$n")"
    ip netns list | grep -qw "$ns" || continue
    for chain in INPUT OUTPUT; do
      while rule="$(nsenter --net="/run/netns/$ns" iptables -S "$chain" | grep -m1 coffee-partition)"; do
        # shellcheck disable=SC2086 # the rule's words, as iptables printed them
        nsenter --net="/run/netns/$ns" iptables ${rule/-A/-D}
      done
    done
  done
}
