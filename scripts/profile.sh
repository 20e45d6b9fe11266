#!/usr/bin/env bash
# Profiles one `coffee bench` run with perf (issue 15): every process on both cores, sampled at 499 Hz with call
# stacks, from a release build with frame pointers. Writes, under target/profile/<scale>/:
#   pipeline.svg   a flame graph of the pipeline phase only (the client's run), stacks rooted at each process's
#                  role (client, gateway, each stage, rabbitmq, other)
#   roles.txt      each role's share of the two cores in that phase, and its ten hottest functions
#   bench.txt      the bench's own table
# usage: scripts/profile.sh [--scale reduced|full] [more coffee bench flags]
# Needs perf (Debian's linux-perf) and inferno (cargo install inferno), installed here if missing.
. "$(dirname "$0")/lib.sh"

SCALE=reduced
if [ "${1:-}" = "--scale" ]; then SCALE="$2"; shift 2; fi
OUT="$ROOT/target/profile/$SCALE"
mkdir -p "$OUT"
command -v perf >/dev/null 2>&1 || { log "installing linux-perf"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/inferno-flamegraph" ] || { log "installing inferno"; cargo install -q inferno; }
PATH="$HOME/.cargo/bin:$PATH"
ensure_rabbitmq

log "release build with frame pointers (target/profile-build)"
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR="$ROOT/target/profile-build" cargo build --release -q -p coffee
EXE="$OUT/coffee-profiled"
cp "$ROOT/target/profile-build/release/coffee" "$EXE"

log "bench --scale $SCALE under perf"
# Which pid is which role: the processes' command lines, sampled while they live.
( while sleep 0.2; do ps -eo pid,args | grep -F "$EXE" | grep -v grep || true; done ) >"$OUT/ps.txt" &
sampler=$!
perf record -F 499 -a -g -o "$OUT/perf.data" -- "$EXE" bench --scale "$SCALE" --namespace "profile-$$" "$@" \
  2>/dev/null | tee "$OUT/bench.txt"
kill "$sampler" 2>/dev/null || true

log "flame graph of the pipeline phase"
client_pid="$(awk '$3 == "client" {print $1; exit}' "$OUT/ps.txt")"
perf script -i "$OUT/perf.data" -F comm,pid,tid,time,period,event,ip,sym,dso 2>/dev/null >"$OUT/perf.txt"
window="$(awk -v p="$client_pid/" '/^[^\t ]/ && index($2, p) == 1 {sub(":", "", $3); print $3}' "$OUT/perf.txt" | sort -n | sed -n '1p;$p' | paste -sd,)"
perf script -i "$OUT/perf.data" --time "$window" -F comm,pid,tid,time,period,event,ip,sym,dso 2>/dev/null |
  inferno-collapse-perf --pid >"$OUT/folded.txt"
python3 - "$OUT" <<'PY'
import collections, re, sys
out = sys.argv[1]
roles = {}
for line in open(f"{out}/ps.txt"):
    pid, _exe, *args = line.split()
    if "worker" in args:
        roles[pid] = args[args.index("--stage") + 1]
    elif args and args[0] in ("gateway", "client", "reference", "bench"):
        roles[pid] = args[0]
shares, hottest, total = collections.Counter(), collections.defaultdict(collections.Counter), 0
with open(f"{out}/folded-roles.txt", "w") as folded:
    for line in open(f"{out}/folded.txt"):
        stack, n = line.rsplit(" ", 1)
        n = int(n)
        first, *rest = stack.split(";")
        m = re.match(r"(.*)-(\d+)$", first)
        comm, pid = (m.group(1), m.group(2)) if m else (first, None)
        role = roles.get(pid) or ("rabbitmq" if re.search(r"sched|dirty|poller|beam", comm)
                                  else "idle" if comm == "swapper" else "other")
        shares[role] += n
        total += n
        if role != "idle":
            hottest[role][re.sub(r"<.*?>", "", rest[-1] if rest else comm)[:90]] += n
            folded.write(";".join([role] + rest) + f" {n}\n")
with open(f"{out}/roles.txt", "w") as report:
    for role, n in shares.most_common():
        report.write(f"{100 * n / total:5.1f}%  {role}\n")
        for leaf, m in hottest[role].most_common(10):
            report.write(f"          {100 * m / n:5.1f}%  {leaf}\n")
PY
inferno-flamegraph --minwidth 0.3 --title "coffee bench --scale $SCALE: the pipeline phase, both cores, by role" \
  "$OUT/folded-roles.txt" >"$OUT/pipeline.svg"
rm -f "$OUT/perf.txt"
log "wrote $OUT/pipeline.svg and $OUT/roles.txt"
grep -v '^          ' "$OUT/roles.txt"
