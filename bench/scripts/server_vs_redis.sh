#!/usr/bin/env bash
# SET/GET throughput of corekv-server against Redis, redis-benchmark style, in the same run on
# the same machine: ../shared/peers/redis.sh for Redis, corekv-load for corekv (same requests,
# value size, clients, pipeline 1 and 16). Repeats RUNS times and prints the median of each
# figure, then the ratios the issue asks about.
#
# Usage: bench/scripts/server_vs_redis.sh [REQUESTS] [VALUE_BYTES] [CLIENTS]
#   (defaults: 200000 1000 50, as redis.sh)
# Environment: RUNS (default 3), DURABILITY (default sync), COREKV_PORT (default 7579),
#   DATA_DIR (default /var/tmp/corekv-vs-redis; a real disk, not tmpfs),
#   REDIS_PEER (default: ../shared/peers/redis.sh from the repository root, or
#   ../../shared/peers/redis.sh from a worktree under wt/).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-200000}
value=${2:-1000}
clients=${3:-50}
runs=${RUNS:-3}
durability=${DURABILITY:-sync}
port=${COREKV_PORT:-7579}
data=${DATA_DIR:-/var/tmp/corekv-vs-redis}
peer=${REDIS_PEER:-}
if [[ -z $peer ]]; then
  for p in ../shared/peers/redis.sh ../../shared/peers/redis.sh; do [[ -f $p ]] && peer=$p && break; done
fi
[[ -n $peer && -f $peer ]] || { echo "server_vs_redis.sh: set REDIS_PEER to redis.sh" >&2; exit 2; }
out=$(mktemp -d "${TMPDIR:-/var/tmp}/corekv-vs-redis.XXXXXX")
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$data" "$out"; }
trap cleanup EXIT

cargo build --release -q -p corekv-server -p corekv-bench
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "# data: $data on $(df --output=source "$(dirname "$data")" | tail -1)"
for run in $(seq "$runs"); do
  bash "$peer" "$n" "$value" "$clients" | tee -a "$out/redis.txt" | sed "s/^/# run $run redis: /"
  rm -rf "$data"
  target/release/corekv-server --data-dir "$data" --listen "127.0.0.1:$port" \
    --durability "$durability" >"$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "corekv-server ready" "$out/server.log" && break; sleep 0.1; done
  for pipeline in 1 16; do
    target/release/corekv-load --addr "127.0.0.1:$port" --tests set,get --requests "$n" \
      --value-bytes "$value" --clients "$clients" --pipeline "$pipeline" \
      | tee -a "$out/corekv.txt" | sed "s/^/# run $run corekv: /"
  done
  kill -TERM "$pid"; wait "$pid" || true; pid=
done

# Medians. Redis lines: "appendfsync=X pipeline=P SET: N requests per second, p50=M msec".
# corekv lines: "corekv test=set ... pipeline=P ...: N ops/s, p50=A us, p99=B us, ...".
python3 - "$out/redis.txt" "$out/corekv.txt" "$durability" <<'EOF'
import re, statistics, sys
redis, corekv, durability = {}, {}, sys.argv[3]
for line in open(sys.argv[1]):
    m = re.match(r"appendfsync=(\w+) pipeline=(\d+) (\w+): ([\d.]+) requests per second", line)
    if m:
        redis.setdefault((m[1], int(m[2]), m[3].lower()), []).append(float(m[4]))
for line in open(sys.argv[2]):
    m = re.search(r"test=(\w+) .*pipeline=(\d+) .*: (\d+) ops/s, p50=(\d+) us, p99=(\d+) us.*, ([\d.]+)% crossed", line)
    if m:
        corekv.setdefault((int(m[2]), m[1]), []).append((float(m[3]), int(m[4]), int(m[5]), float(m[6])))
med = statistics.median
print(f"| test | pipeline | corekv ({durability}) ops/s | p50 us | p99 us | crossed | Redis always | Redis everysec | vs always | vs everysec |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (p, t), rows in sorted(corekv.items()):
    ops = med(r[0] for r in rows)
    a = med(redis.get(("always", p, t), [0])) or float("nan")
    e = med(redis.get(("everysec", p, t), [0])) or float("nan")
    print(f"| {t.upper()} | {p} | {ops:.0f} | {med(r[1] for r in rows):.0f} | {med(r[2] for r in rows):.0f} "
          f"| {med(r[3] for r in rows):.1f}% | {a:.0f} | {e:.0f} | {ops / a:.2f}x | {ops / e:.2f}x |")
EOF
