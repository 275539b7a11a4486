#!/usr/bin/env bash
# YCSB A-F against corekv and Redis with the same driver (corekv-bench ycsb), on the same
# machine, in the same run, several times; prints medians as Markdown tables.
#
# Usage: bench/scripts/ycsb_vs_peers.sh [RUNS] [RECORDS] [SECONDS_PER_WORKLOAD]
#        (defaults: 3 50000 20)
# Environment:
#   SYSTEMS       systems to measure, in order (default: corekv-sync redis-always redis-everysec;
#                 also corekv-periodic = --durability periodic:1000, Redis everysec's peer)
#   SERVER_CPUS   CPUs for the server (default 0): corekv-server --cores, taskset for Redis
#   DRIVER_CPUS   CPUs for the driver's client threads (default 1)
#   DRIVER_FLAGS  default "--threads 1 --connections 8 --inflight 32"
#   DATA_BASE     where data directories go (default /var/tmp; must be a real disk, not tmpfs)
#   OUT           where raw outputs go (default /var/tmp/ycsb-<time>)
# 50000 records (about 63 MB of data) by default: corekv keeps everything in a memtable of at
# most 256 MiB per shard until SSTable flushes land (issue 4), and a key updated once keeps its
# previous version until its next write; the records, their second versions and workload d's
# inserts must fit.
# Per system and run: start the server on an empty directory, load RECORDS records, then run
# workloads a b c f d e for SECONDS each against the same records (YCSB's recommended order;
# d's inserts stay in the table, each run phase restarts inserting at key number RECORDS), stop.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
records=${2:-50000}
secs=${3:-20}
read -r -a systems <<<"${SYSTEMS:-corekv-sync redis-always redis-everysec}"
server_cpus=${SERVER_CPUS:-0}
driver_cpus=${DRIVER_CPUS:-1}
read -r -a driver_flags <<<"${DRIVER_FLAGS:---threads 1 --connections 8 --inflight 32}"
data_base=${DATA_BASE:-/var/tmp}
out=${OUT:-/var/tmp/ycsb-$(date +%Y%m%d-%H%M%S)}
workloads=(a b c f d e)
# Ports away from the usual ones (6379, 6399 of ../shared/peers/redis.sh, 7379): a server
# someone else started there must never be measured by mistake.
redis_port=${REDIS_PORT:-23791}
corekv_port=${COREKV_PORT:-23795}

for s in "${systems[@]}"; do
  case $s in
    redis-*) command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; } ;;
  esac
done
cargo build --release -q -p corekv-bench -p corekv-server
bench=target/release/corekv-bench
mkdir -p "$out"

pid= dir=
stop_server() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi
  if [[ -n $dir ]]; then rm -rf "$dir"; dir=; fi
}
trap stop_server EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT: until our server (pid) listens there.
wait_port() {
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { echo "the server exited at start (see $out)" >&2; return 1; }
    port_open "$1" && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# start_server SYSTEM: starts it on an empty directory; sets pid, dir, backend, addr.
start_server() {
  local p
  for p in "$redis_port" "$corekv_port" $((corekv_port + 1)); do
    if port_open "$p"; then
      echo "port $p is already in use: stop that server or set REDIS_PORT/COREKV_PORT" >&2
      exit 1
    fi
  done
  dir=$(mktemp -d "$data_base/ycsb-$1.XXXXXX")
  case $1 in
    corekv-*)
      local durability=sync
      [[ $1 == corekv-periodic ]] && durability=periodic:1000
      target/release/corekv-server --data-dir "$dir" --listen "127.0.0.1:$corekv_port" \
        --cores "$server_cpus" --durability "$durability" --log-level warn 2>"$out/$1.server.log" &
      pid=$!; backend=corekv; addr=127.0.0.1:$corekv_port ;;
    redis-always | redis-everysec)
      taskset -c "$server_cpus" redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" \
        --save '' --appendonly yes --appendfsync "${1#redis-}" --daemonize no \
        --logfile "$dir/redis.log" &
      pid=$!; backend=redis; addr=127.0.0.1:$redis_port ;;
    *) echo "unknown system $1" >&2; exit 2 ;;
  esac
  wait_port "${addr##*:}"
}

ycsb() { "$bench" ycsb --backend "$backend" --addr "$addr" --records "$records" \
  --cpus "$driver_cpus" "${driver_flags[@]}" --quiet "$@"; }

{
  echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc)"
  echo "# $0 $runs $records $secs; SYSTEMS=${systems[*]} SERVER_CPUS=$server_cpus DRIVER_CPUS=$driver_cpus DRIVER_FLAGS=${driver_flags[*]}"
} >"$out/README"
for r in $(seq "$runs"); do
  for s in "${systems[@]}"; do
    echo "run $r/$runs: $s" >&2
    echo "run $r $s: load average $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%T)" >>"$out/README"
    start_server "$s"
    # A run that fails (exit status not 0) keeps its output as .failed and is left out of the
    # medians.
    f=$out/$s.$r.load.txt
    ycsb --phase load --workload a >"$f" || { mv "$f" "$f.failed"; echo "FAILED: $f" >&2; }
    for w in "${workloads[@]}"; do
      f=$out/$s.$r.$w.txt
      ycsb --phase run --workload "$w" --duration "$secs" --operations 1000000000 >"$f" ||
        { mv "$f" "$f.failed"; echo "FAILED: $f" >&2; }
    done
    stop_server
  done
done

# Medians over runs. value FILE SECTION METRIC prints one figure of one output.
value() { [[ -f $1 ]] && awk -F', ' -v s="[$2]" -v m="$3" '$1 == s && $2 == m { print $3; exit }' "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { # med SYSTEM PHASE SECTION METRIC
  for r in $(seq "$runs"); do value "$out/$1.$r.$2.txt" "$3" "$4" || true; done | median
}
fmt() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.0f", v }'; }

echo "Raw outputs: $out"
echo
echo "| workload | system | throughput (ops/s) | main op | p99 (us) | 2nd op | p99 (us) | failed ops | driver CPU (% of a core) | runs |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for w in load "${workloads[@]}"; do
  case $w in
    load) ops=(INSERT "") ;;
    a | b) ops=(READ UPDATE) ;;
    c) ops=(READ "") ;;
    d) ops=(READ INSERT) ;;
    e) ops=(SCAN INSERT) ;;
    f) ops=(READ READ-MODIFY-WRITE) ;;
  esac
  for s in "${systems[@]}"; do
    tput=$(fmt "$(med "$s" "$w" OVERALL 'Throughput(ops/sec)')")
    p1=$(fmt "$(med "$s" "$w" "${ops[0]}" '99thPercentileLatency(us)')")
    p2=-; [[ -n ${ops[1]} ]] && p2=$(fmt "$(med "$s" "$w" "${ops[1]}" '99thPercentileLatency(us)')")
    cpu=$(med "$s" "$w" DRIVER 'CpuUtilization(%)')
    n=$(for r in $(seq "$runs"); do [[ -f $out/$s.$r.$w.txt ]] && echo; done | wc -l)
    failed=$(for r in $(seq "$runs"); do [[ -f $out/$s.$r.$w.txt ]] &&
      awk -F', ' '$2 ~ /^Return=/ && $2 != "Return=OK" { n += $3 } END { print n + 0 }' "$out/$s.$r.$w.txt"; done | median)
    echo "| $w | $s | $tput | ${ops[0]} | $p1 | ${ops[1]:--} | $p2 | $failed | $cpu | $n |"
  done
done
