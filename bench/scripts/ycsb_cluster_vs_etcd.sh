#!/usr/bin/env bash
# YCSB load and workload A against a 3-node corekv cluster (server/scripts/local-cluster.sh, one
# shard per node) and a 3-member etcd 3.4 cluster (../shared/peers/etcd.sh), all on this
# machine, with the same driver (corekv-bench ycsb), the same records and the same driver flags;
# systems alternate, RUNS times; prints the medians and the ratio corekv/etcd.
#
# Usage: bench/scripts/ycsb_cluster_vs_etcd.sh [RUNS] [RECORDS] [SECONDS]
#        (defaults: 3 50000 20; SECONDS is the length of the workload A run phase)
# Environment:
#   DRIVER_FLAGS  default "--threads 1 --connections 8 --inflight 32"
#   RECORD_FLAGS  default "--field-count 10 --value-size 100" (YCSB's 10 x 100 B records)
#   DRIVER_CPUS   CPUs for the driver's client threads (default: every CPU; the nodes are not
#                 pinned either)
#   SERVER_ARGS   more flags for every corekv node, e.g. "--idle-poll-us 0" when the nodes and
#                 the driver share few CPUs (docs/BENCHMARKS.md, "Replicated")
#   ETCD_PORT_BASE  etcd members listen on BASE+1..3 (default 44000)
#   ETCD_SH       the peer script that installs and starts etcd (default ../shared/peers/etcd.sh)
#   DATA_DIR      data of both clusters, emptied per run (default /var/tmp/corekv-vs-etcd; a
#                 real disk, not tmpfs)
#   OUT           raw outputs (default /var/tmp/ycsb-cluster-vs-etcd-<time>)
#   BIN_DIR       where corekv-bench, corekv-server and corekv-cli are (default target/release,
#                 built here with `cargo build --release`; set it to skip the build)
#
# How each is driven:
# - corekv: a follower refuses operations with `notLeader`, so the driver is pointed at the
#   leader, found by trying `corekv-cli put` of one probe key on each node's client address
#   (7379, 8379, 9379) until one accepts. The probe key is written before the load and is not a
#   YCSB key (workload A has no scans, so it is never read).
# - etcd: the driver connects to all three members (--addr A,B,C), connections round-robin;
#   followers forward writes to the leader, as with etcd's own clients.
# Per run and system: fresh cluster on an empty directory, --phase load, then --phase run
# --workload a for SECONDS, stop. A run whose driver exits non-zero is kept as .failed and left
# out of the medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
records=${2:-50000}
secs=${3:-20}
read -r -a driver_flags <<<"${DRIVER_FLAGS:---threads 1 --connections 8 --inflight 32}"
read -r -a record_flags <<<"${RECORD_FLAGS:---field-count 10 --value-size 100}"
etcd_base=${ETCD_PORT_BASE:-44000}
data=${DATA_DIR:-/var/tmp/corekv-vs-etcd}
out=${OUT:-/var/tmp/ycsb-cluster-vs-etcd-$(date +%Y%m%d-%H%M%S)}
etcd_sh=${ETCD_SH:-../shared/peers/etcd.sh}
cpu_flags=()
[[ -n ${DRIVER_CPUS:-} ]] && cpu_flags=(--cpus "$DRIVER_CPUS")
corekv_ports=(7379 8379 9379)
etcd_addrs=127.0.0.1:$((etcd_base + 1)),127.0.0.1:$((etcd_base + 2)),127.0.0.1:$((etcd_base + 3))

if [[ -z ${BIN_DIR:-} ]]; then
  cargo build --release -q -p corekv-bench -p corekv-server
  bin=target/release
else
  bin=$BIN_DIR
fi
for b in corekv-bench corekv-server corekv-cli; do
  [[ -x $bin/$b ]] || { echo "$bin/$b is missing (build it, or set BIN_DIR)" >&2; exit 2; }
done
mkdir -p "$out"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports of both clusters, clients and peers: a server someone else started there must never be
# measured by mistake.
for p in 7379 7479 8379 8479 9379 9479 $((etcd_base + 1)) $((etcd_base + 2)) $((etcd_base + 3)) \
  $((etcd_base + 101)) $((etcd_base + 102)) $((etcd_base + 103)); do
  if port_open "$p"; then
    echo "port $p is already in use: stop that server (or set ETCD_PORT_BASE)" >&2
    exit 1
  fi
done

corekv_env=(COREKV_CLUSTER_DIR="$data/corekv" COREKV_SERVER="$bin/corekv-server"
  COREKV_SERVER_ARGS="${SERVER_ARGS:-}")
stop_all() {
  env "${corekv_env[@]}" bash server/scripts/local-cluster.sh stop >/dev/null 2>&1 || true
  bash "$etcd_sh" stop "$data/etcd" >/dev/null 2>&1 || true
}
trap stop_all EXIT

# start SYSTEM: a fresh cluster; sets addr to what the driver is given.
start() {
  rm -rf "$data"; mkdir -p "$data"
  case $1 in
    corekv)
      env "${corekv_env[@]}" bash server/scripts/local-cluster.sh start >/dev/null
      addr=
      for _ in $(seq 300); do
        for p in "${corekv_ports[@]}"; do
          if "$bin/corekv-cli" --addr "127.0.0.1:$p" put corekv-bench/leader-probe x >/dev/null 2>&1; then
            addr=127.0.0.1:$p; break 2
          fi
        done
        sleep 0.1
      done
      [[ -n $addr ]] || { echo "corekv: no leader elected (logs: $data/corekv)" >&2; return 1; } ;;
    etcd)
      bash "$etcd_sh" start "$data/etcd" "$etcd_base" >"$out/etcd-status.txt"
      addr=$etcd_addrs ;;
  esac
}

stop() {
  case $1 in
    corekv) env "${corekv_env[@]}" bash server/scripts/local-cluster.sh stop >/dev/null ;;
    etcd) bash "$etcd_sh" stop "$data/etcd" ;;
  esac
  rm -rf "$data"
}

ycsb() { # ycsb SYSTEM FLAGS...
  "$bin/corekv-bench" ycsb --backend "$1" --addr "$addr" --records "$records" --workload a \
    "${record_flags[@]}" "${driver_flags[@]}" "${cpu_flags[@]}" --quiet "${@:2}"
}

{
  echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) $(git rev-parse --short HEAD 2>/dev/null || true)"
  echo "# $0 $runs $records $secs; DRIVER_FLAGS=${driver_flags[*]} RECORD_FLAGS=${record_flags[*]} DRIVER_CPUS=${DRIVER_CPUS:-} SERVER_ARGS=${SERVER_ARGS:-}"
} >"$out/README"
for r in $(seq "$runs"); do
  # Alternate which system goes first, so neither always runs on a warmer (or busier) machine.
  systems=(corekv etcd)
  ((r % 2 == 0)) && systems=(etcd corekv)
  for s in "${systems[@]}"; do
    echo "run $r/$runs: $s" >&2
    echo "run $r $s: load average $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%T)" >>"$out/README"
    start "$s"
    echo "run $r $s: driver --addr $addr" >>"$out/README"
    f=$out/$s.$r.load.txt
    ycsb "$s" --phase load >"$f" 2>"$f.err" || { mv "$f" "$f.failed"; echo "FAILED: $f (see $f.err)" >&2; }
    f=$out/$s.$r.a.txt
    ycsb "$s" --phase run --duration "$secs" --operations 1000000000 >"$f" 2>"$f.err" ||
      { mv "$f" "$f.failed"; echo "FAILED: $f (see $f.err)" >&2; }
    stop "$s"
  done
done
echo "# $(etcd --version | head -1)" >>"$out/README"

# Medians over runs. value FILE SECTION METRIC prints one figure of one output.
value() { [[ -f $1 ]] && awk -F', ' -v s="[$2]" -v m="$3" '$1 == s && $2 == m { print $3; exit }' "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { # med SYSTEM PHASE SECTION METRIC
  for r in $(seq "$runs"); do value "$out/$1.$r.$2.txt" "$3" "$4" || true; done | median
}
fmt() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.0f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
count() { # count SYSTEM PHASE: runs that succeeded
  for r in $(seq "$runs"); do [[ -f $out/$1.$r.$2.txt ]] && echo; done | wc -l
}
failed() { # failed SYSTEM PHASE: median over runs of operations that did not return OK
  for r in $(seq "$runs"); do [[ -f $out/$1.$r.$2.txt ]] &&
    awk -F', ' '$2 ~ /^Return=/ && $2 != "Return=OK" { n += $3 } END { print n + 0 }' "$out/$1.$r.$2.txt"; done | median
}

echo "Raw outputs: $out"
echo
echo "| phase | corekv 3 nodes (ops/s) | etcd 3 members (ops/s) | corekv/etcd | p99 us corekv / etcd | failed ops corekv / etcd | runs corekv / etcd |"
echo "|---|---|---|---|---|---|---|"
for w in load a; do
  case $w in
    load) ops=(INSERT) ;;
    a) ops=(READ UPDATE) ;;
  esac
  c=$(med corekv "$w" OVERALL 'Throughput(ops/sec)')
  e=$(med etcd "$w" OVERALL 'Throughput(ops/sec)')
  p99=
  for op in "${ops[@]}"; do
    p99+="$op $(fmt "$(med corekv "$w" "$op" '99thPercentileLatency(us)')") / $(fmt "$(med etcd "$w" "$op" '99thPercentileLatency(us)')"); "
  done
  echo "| $w | $(fmt "$c") | $(fmt "$e") | $(ratio "$c" "$e") | ${p99%; } | $(failed corekv "$w") / $(failed etcd "$w") | $(count corekv "$w") / $(count etcd "$w") |"
done
