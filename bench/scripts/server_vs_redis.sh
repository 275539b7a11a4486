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
#   ../../shared/peers/redis.sh from a worktree under wt/),
#   SERVER_CPUS / DRIVER_CPUS (default unset: nothing pinned, corekv one shard per CPU, and
#   redis.sh as it is). With both set, servers and load generators get separate CPUs: corekv
#   runs `--cores SERVER_CPUS`, Redis runs under `taskset -c SERVER_CPUS` with redis.sh's very
#   commands (redis.sh itself cannot pin), corekv-load and redis-benchmark under
#   `taskset -c DRIVER_CPUS`. Each run measures Redis and corekv back to back.
#   PIPELINES (default "1 16") and FSYNCS (Redis appendfsync modes, default "always everysec";
#   pinned mode only) narrow a run, so that on a noisy machine many short runs can be taken
#   with Redis and corekv close together in time, e.g. PIPELINES=16 FSYNCS=everysec RUNS=9.
#   SERVER_ARGS (default empty): more corekv-server flags, split on spaces, e.g.
#   SERVER_ARGS="--transparent-huge-pages true" to compare a server setting in the same way.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-200000}
value=${2:-1000}
clients=${3:-50}
runs=${RUNS:-3}
durability=${DURABILITY:-sync}
read -r -a server_args <<<"${SERVER_ARGS:-}"
port=${COREKV_PORT:-7579}
pipelines=${PIPELINES:-1 16}
fsyncs=${FSYNCS:-always everysec}
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

server_cpus=${SERVER_CPUS:-}
driver_cpus=${DRIVER_CPUS:-}
if [[ -n $server_cpus || -n $driver_cpus ]] && [[ -z $server_cpus || -z $driver_cpus ]]; then
  echo "server_vs_redis.sh: set both SERVER_CPUS and DRIVER_CPUS, or neither" >&2; exit 2
fi
driver=(); cores=()
[[ -n $driver_cpus ]] && driver=(taskset -c "$driver_cpus") && cores=(--cores "$server_cpus")

# redis_pinned: redis.sh's measurements (same server flags, same redis-benchmark flags, same
# output lines), with the server and redis-benchmark pinned apart.
redis_pinned() {
  local rport=${REDIS_PEER_PORT:-6399} rdir fsync pipeline
  rdir=$(mktemp -d "${TMPDIR:-/var/tmp}/redis-peer.XXXXXX")
  for fsync in $fsyncs; do
    taskset -c "$server_cpus" redis-server --port "$rport" --bind 127.0.0.1 --dir "$rdir" \
      --save '' --appendonly yes --appendfsync "$fsync" --daemonize no --logfile "$rdir/log" &
    pid=$!
    for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    for pipeline in $pipelines; do
      # --csv instead of -q: the same figures plus p99.
      "${driver[@]}" redis-benchmark -p "$rport" -t set,get -n "$n" -d "$value" -c "$clients" \
        -P "$pipeline" -r 1000000 --csv | tr -d '"' | awk -F, -v f="$fsync" -v p="$pipeline" \
        '$1 == "SET" || $1 == "GET" { printf "appendfsync=%s pipeline=%s %s: %s requests per second, p50=%s msec, p99=%s msec\n", f, p, $1, $2, $5, $7 }'
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    rm -rf "${rdir:?}"/*
  done
  rm -rf "$rdir"
}

cargo build --release -q -p corekv-server -p corekv-bench
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "# data: $data on $(df --output=source "$(dirname "$data")" | tail -1)"
echo "# server CPUs: ${server_cpus:-any}, driver CPUs: ${driver_cpus:-any}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# corekv-server --durability $durability ${SERVER_ARGS:-}"
for run in $(seq "$runs"); do
  if [[ -n $driver_cpus ]]; then redis_pinned; else bash "$peer" "$n" "$value" "$clients"; fi |
    tee -a "$out/redis.txt" | sed "s/^/# run $run redis: /"
  # A fresh server per pipeline setting: the memtable (256 MiB per shard until SSTable flushes
  # land) must hold the sets of one setting, not of both.
  for pipeline in $pipelines; do
    rm -rf "$data"
    target/release/corekv-server --data-dir "$data" --listen "127.0.0.1:$port" "${cores[@]}" \
      --durability "$durability" "${server_args[@]}" >"$out/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "corekv-server ready" "$out/server.log" && break; sleep 0.1; done
    "${driver[@]}" target/release/corekv-load --addr "127.0.0.1:$port" --tests set,get --requests "$n" \
      --value-bytes "$value" --clients "$clients" --pipeline "$pipeline" \
      | tee -a "$out/corekv.txt" | sed "s/^/# run $run corekv: /"
    kill -TERM "$pid"; wait "$pid" || true; pid=
  done
done

# Medians. Redis lines: "appendfsync=X pipeline=P SET: N requests per second, p50=M msec".
# corekv lines: "corekv test=set ... pipeline=P ...: N ops/s, p50=A us, p99=B us, ...".
python3 - "$out/redis.txt" "$out/corekv.txt" "$durability" <<'EOF'
import re, statistics, sys
redis, corekv, durability = {}, {}, sys.argv[3]
for line in open(sys.argv[1]):
    m = re.match(r"appendfsync=(\w+) pipeline=(\d+) (\w+): ([\d.]+) requests per second"
                 r"(?:, p50=([\d.]+) msec)?(?:, p99=([\d.]+) msec)?", line)
    if m:
        redis.setdefault((m[1], int(m[2]), m[3].lower()), []).append(
            (float(m[4]), float(m[5] or "nan") * 1000, float(m[6] or "nan") * 1000))
for line in open(sys.argv[2]):
    m = re.search(r"test=(\w+) .*pipeline=(\d+) .*: (\d+) ops/s, p50=(\d+) us, p99=(\d+) us.*, ([\d.]+)% crossed", line)
    if m:
        corekv.setdefault((int(m[2]), m[1]), []).append((float(m[3]), int(m[4]), int(m[5]), float(m[6])))
med = statistics.median
def rmed(key, k):
    rows = redis.get(key)
    return med(r[k] for r in rows) if rows else float("nan")
print(f"| test | pipeline | corekv ({durability}) ops/s | p50 us | p99 us | crossed shards "
      f"| Redis always ops/s | p50 us | p99 us | Redis everysec ops/s | p50 us | p99 us "
      f"| corekv / always | corekv / everysec | runs |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (p, t), rows in sorted(corekv.items()):
    ops = med(r[0] for r in rows)
    a, e = ("always", p, t), ("everysec", p, t)
    print(f"| {t.upper()} | {p} | {ops:.0f} | {med(r[1] for r in rows):.0f} | {med(r[2] for r in rows):.0f} "
          f"| {med(r[3] for r in rows):.1f}% "
          f"| {rmed(a, 0):.0f} | {rmed(a, 1):.0f} | {rmed(a, 2):.0f} "
          f"| {rmed(e, 0):.0f} | {rmed(e, 1):.0f} | {rmed(e, 2):.0f} "
          f"| {ops / rmed(a, 0):.2f}x | {ops / rmed(e, 0):.2f}x | {len(rows)} |")
EOF
