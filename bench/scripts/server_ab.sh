#!/usr/bin/env bash
# A/B of two corekv-server builds with one driver: SET/GET, 1000-byte values, 50 clients,
# pipelines 1 and 16, one shard on CPU 0, the driver on CPU 1, the two builds alternating in
# order from run to run. Prints every run, then the medians (and p99) per build.
#
# Usage: bench/scripts/server_ab.sh RUNS DIR_A DIR_B
#   DIR_A, DIR_B: directories holding a release `corekv-server` each (build one and copy it
#   aside, then the other); DIR_A/corekv-load drives both.
# Environment: REQUESTS (default 100000), PORT (default 7679), DATA_DIR (default
#   /var/tmp/corekv-ab; a real disk, not tmpfs).
set -euo pipefail
runs=${1:?RUNS}
a=${2:?DIR_A}
b=${3:?DIR_B}
requests=${REQUESTS:-100000}
port=${PORT:-7679}
data=${DATA_DIR:-/var/tmp/corekv-ab}
load=$a/corekv-load
out=$(mktemp -d "${TMPDIR:-/var/tmp}/corekv-ab.XXXXXX")
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$data" "$out"; }
trap cleanup EXIT
for run in $(seq "$runs"); do
  if ((run % 2)); then order=("$a" "$b"); else order=("$b" "$a"); fi
  for dir in "${order[@]}"; do
    for p in 1 16; do
      rm -rf "$data"
      taskset -c 0 "$dir/corekv-server" --data-dir "$data" --listen "127.0.0.1:$port" --cores 0 \
        --durability sync >"$out/server.log" 2>&1 &
      pid=$!
      for _ in $(seq 100); do grep -q "corekv-server ready" "$out/server.log" && break; sleep 0.1; done
      taskset -c 1 "$load" --addr "127.0.0.1:$port" --tests set,get --requests "$requests" \
        --value-bytes 1000 --clients 50 --pipeline "$p" | sed "s|^|$dir run=$run |" |
        tee -a "$out/results.txt"
      kill -TERM "$pid"; wait "$pid" || true; pid=
    done
  done
done
python3 - "$out/results.txt" <<'EOF'
import collections, re, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) run=\d+ .*test=(\w+) .*pipeline=(\d+) .*: (\d+) ops/s, p50=(\d+) us, p99=(\d+) us", line)
    if m:
        d[(m[2], int(m[3]), m[1])].append((int(m[4]), int(m[6])))
builds = sorted({v for (_, _, v) in d})
for t, p in sorted({(t, p) for (t, p, _) in d}):
    row = [f"{t} P{p}"]
    for v in builds:
        r = d[(t, p, v)]
        row.append(f"{v}: {statistics.median(x[0] for x in r):.0f} ops/s "
                   f"(p99 {statistics.median(x[1] for x in r):.0f} us; "
                   f"{min(x[0] for x in r)}-{max(x[0] for x in r)})")
    print(" | ".join(row))
EOF
