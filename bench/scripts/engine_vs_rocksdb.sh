#!/usr/bin/env bash
# corekv's storage engine (corekv-bench engine) against RocksDB's db_bench
# (../shared/peers/rocksdb.sh) on the same machine, in the same run, alternating, several
# times; prints the machine, then medians and ratios as a Markdown table.
#
# Usage: bench/scripts/engine_vs_rocksdb.sh [RUNS] [NUM_KEYS] [VALUE_BYTES]
#        (defaults: 3 1000000 100; the peer script's defaults)
# Environment:
#   PEER      the peer script (default: ../shared/peers/rocksdb.sh beside the repository)
#   DATA_BASE where databases go (default /var/tmp; a real disk, never tmpfs)
#   OUT       where raw outputs go (default /var/tmp/engine-vs-rocksdb-<time>)
#   ENGINE_CPU pin corekv's executor to this CPU (default: unpinned, like db_bench's threads)
# The commands mirror rocksdb.sh exactly: one writer without sync for fillseq .. seekrandom
# (corekv: durability none); fillrandom --sync=1 with 16 writers and NUM/50 writes each
# (fillsync16) and with 1 writer and NUM/200 writes (fillsync1).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
num=${2:-1000000}
value=${3:-100}
# ../shared/peers next to the repository (or, from a git worktree, next to the main checkout).
if [[ -z ${PEER:-} ]]; then
  PEER=$(cd .. && pwd)/shared/peers/rocksdb.sh
  common=$(cd "$(git rev-parse --git-common-dir)/../.." && pwd)
  [[ -f $PEER ]] || PEER=$common/shared/peers/rocksdb.sh
fi
peer=$PEER
data_base=${DATA_BASE:-/var/tmp}
out=${OUT:-/var/tmp/engine-vs-rocksdb-$(date +%Y%m%d-%H%M%S)}
cpu_flag=()
[[ -n ${ENGINE_CPU:-} ]] && cpu_flag=(--cpu "$ENGINE_CPU")

cargo build --release -q -p corekv-bench
bench=target/release/corekv-bench
mkdir -p "$out"

echo "## Machine"
echo
echo "- cores: $(nproc) ($(lscpu | sed -n 's/^Model name: *//p' | head -1))"
echo "- kernel: $(uname -r)"
echo "- disk: $(lsblk -dno NAME,SIZE,ROTA,MODEL | tr -s ' ' | paste -sd';')"
echo "- filesystem of $data_base: $(df -hT "$data_base" | tail -1 | tr -s ' ')"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

corekv() {
  local db
  db=$(mktemp -d "$data_base/corekv-engine.XXXXXX")
  common=(--key_size=16 --value_size="$value" --compression_type=none --db="$db/db" "${cpu_flag[@]}")
  "$bench" engine --benchmarks=fillseq,fillrandom,overwrite,readrandom,readseq,seekrandom \
    --num="$num" --reads="$num" --threads=1 "${common[@]}"
  rm -rf "$db/db"
  "$bench" engine --benchmarks=fillrandom --sync=1 --num=$((num / 50)) --threads=16 "${common[@]}" \
    | sed 's/^fillrandom /fillsync16 /'
  rm -rf "$db/db"
  "$bench" engine --benchmarks=fillrandom --sync=1 --num=$((num / 200)) --threads=1 "${common[@]}" \
    | sed 's/^fillrandom /fillsync1  /'
  rm -rf "$db"
}

for r in $(seq "$runs"); do
  echo "run $r/$runs: rocksdb" >&2
  TMPDIR=$data_base bash "$peer" "$num" "$value" >"$out/rocksdb-$r.txt" 2>&1
  echo "run $r/$runs: corekv" >&2
  corekv >"$out/corekv-$r.txt" 2>&1
done

# Medians of ops/sec per benchmark, and of corekv's latency and group-commit figures.
python3 - "$out" "$runs" <<'EOF'
import re, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
line = re.compile(r'^(\S+)\s+:\s+([\d.]+) micros/op (\d+) ops/sec')
detail = re.compile(r'^(\S+)\s+: latency_us p50=([\d.]+) p99=([\d.]+)(?:.*?records_per_write=([\d.]+) group_max=(\d+))?')
def parse(path):
    ops, det = {}, {}
    for l in open(path):
        m = line.match(l)
        if m:
            ops[m[1]] = int(m[3])
            continue
        m = detail.match(l.strip())
        if m:
            det[m[1]] = (float(m[2]), float(m[3]), float(m[4]) if m[4] else None, int(m[5]) if m[5] else None)
    return ops, det
rocks = [parse(f"{out}/rocksdb-{r}.txt")[0] for r in range(1, runs + 1)]
ours = [parse(f"{out}/corekv-{r}.txt") for r in range(1, runs + 1)]
names = ["fillseq", "fillrandom", "overwrite", "readrandom", "readseq", "seekrandom", "fillsync16", "fillsync1"]
print(f"## Medians of {runs} alternating runs (ops/sec; raw outputs in {out})")
print()
print("| benchmark | corekv | RocksDB | corekv / RocksDB | corekv runs | RocksDB runs | corekv p50 / p99 latency (µs) | corekv records per WAL write (max) |")
print("|---|---|---|---|---|---|---|---|")
for n in names:
    c = [o[n] for o, _ in ours if n in o]
    p = [o[n] for o in rocks if n in o]
    if not c or not p:
        continue
    d = [dd[n] for _, dd in ours if n in dd]
    lat = f"{statistics.median(x[0] for x in d):.1f} / {statistics.median(x[1] for x in d):.1f}" if d else ""
    grp = ""
    g = [x for x in d if x[2] is not None]
    if g:
        grp = f"{statistics.median(x[2] for x in g):.1f} ({max(x[3] for x in g)})"
    mc, mp = statistics.median(c), statistics.median(p)
    print(f"| {n} | {mc:.0f} | {mp:.0f} | {mc / mp:.2f}x | {', '.join(map(str, c))} | {', '.join(map(str, p))} | {lat} | {grp} |")
EOF
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
