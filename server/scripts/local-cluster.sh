#!/usr/bin/env bash
# A local 3-node corekv cluster on loopback, for trying replication out (docs/REPLICATION.md).
#
#   bash server/scripts/local-cluster.sh start   # builds if needed, starts nodes 1-3
#   bash server/scripts/local-cluster.sh status  # which nodes run
#   bash server/scripts/local-cluster.sh stop    # SIGTERM to each node, waits for them
#
# Node i listens for clients on 127.0.0.1:(i+6)379 (7379, 8379, 9379) and for peers on
# 127.0.0.1:(i+6)479; its data and log are in $COREKV_CLUSTER_DIR/node<i> (default
# ./corekv-cluster). Settings: COREKV_SERVER (the binary), COREKV_CLUSTER_DIR, COREKV_SHARDS
# (shards per node, default 1; shard j of node i listens on (i+6)379+1+j), COREKV_CLUSTER_PORT
# (node 1's client port, default 7379; node i's is 1000 * (i-1) above it, its peer port 100
# above that), COREKV_SERVER_ARGS (more flags for every node, split on spaces; e.g.
# `--idle-poll-us 0` when the nodes share fewer CPUs than they are). The three nodes share this
# machine's memory: each gets a third of the block cache one server would take by default (a
# quarter of physical memory), unless COREKV_SERVER_ARGS sets `--block-cache-bytes` or a
# `--config` file (which may set it). Each node pins its shards to CPUs of its own while the
# machine has enough, else the nodes share them in turn (node 1 the first COREKV_SHARDS CPUs,
# node 2 the next, wrapping around, as `CpuSet::for_local_node` and corekv-failover; `--shards`
# alone would pin every node to the same first CPUs).
set -euo pipefail

dir=${COREKV_CLUSTER_DIR:-corekv-cluster}
root=$(cd "$(dirname "$0")/../.." && pwd)
server=${COREKV_SERVER:-$root/target/release/corekv-server}
shards=${COREKV_SHARDS:-1}
port=${COREKV_CLUSTER_PORT:-7379}
read -r -a extra <<<"${COREKV_SERVER_ARGS:-}"

# The CPUs this script may run on, one per line (`Cpus_allowed_list`, e.g. `0-3,8`).
allowed_cpus() {
  local list part
  list=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
  for part in ${list//,/ }; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}
mapfile -t cpus < <(allowed_cpus)

if ! [[ $shards =~ ^[1-9][0-9]*$ ]] || ((shards > ${#cpus[@]})); then
  echo "COREKV_SHARDS=$shards: give a number from 1 to the ${#cpus[@]} CPUs this machine lets us use" >&2
  exit 2
fi
if ! [[ $port =~ ^[1-9][0-9]*$ ]] || ((port > 65535 - 2100)); then
  echo "COREKV_CLUSTER_PORT=$port: give a port from 1 to $((65535 - 2100))" >&2
  exit 2
fi
cluster="1=127.0.0.1:$((port + 100)),2=127.0.0.1:$((port + 1100)),3=127.0.0.1:$((port + 2100))"

# `--block-cache-bytes` for each node (nothing when the caller chose): three servers each taking a
# quarter of physical memory would promise three quarters of it to their caches. At least the
# server's minimum of 1 MiB per shard.
cache_args=()
if [[ " ${extra[*]} " != *" --block-cache-bytes"* && " ${extra[*]} " != *" --config"* ]]; then
  mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  cache_bytes=$((mem_kib * 1024 / 4 / 3))
  ((cache_bytes >= (shards << 20))) || cache_bytes=$((shards << 20))
  cache_args=(--block-cache-bytes "$cache_bytes")
fi

# Node $1's shard placement: `--cores LIST`.
placement() {
  local n=${#cpus[@]} j list=
  for ((j = 0; j < shards; j++)); do
    list+="${list:+,}${cpus[(($1 - 1) * shards + j) % n]}"
  done
  echo "--cores $list"
}

pid_of() { cat "$dir/node$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }

case ${1:-} in
start)
  if [[ ! -x $server ]]; then
    (cd "$root" && cargo build --release -p corekv-server --bin corekv-server)
  fi
  mkdir -p "$dir"
  for i in 1 2 3; do
    if running "$i"; then
      echo "node $i already runs (pid $(pid_of "$i"))"
      continue
    fi
    client=$((port + 1000 * (i - 1)))
    read -r -a place <<<"$(placement "$i")"
    "$server" --node-id "$i" --data-dir "$dir/node$i" "${place[@]}" \
      --listen "127.0.0.1:$client" --peer-listen "127.0.0.1:$((client + 100))" \
      --initial-cluster "$cluster" "${cache_args[@]}" "${extra[@]}" >"$dir/node$i.log" 2>&1 &
    echo $! >"$dir/node$i.pid"
    echo "node $i: clients 127.0.0.1:$client, ${place[*]}, log $dir/node$i.log, pid $!"
  done
  ;;
status)
  for i in 1 2 3; do
    if running "$i"; then echo "node $i: running (pid $(pid_of "$i"))"; else echo "node $i: stopped"; fi
  done
  ;;
stop)
  for i in 1 2 3; do
    if running "$i"; then kill -TERM "$(pid_of "$i")"; fi
  done
  for i in 1 2 3; do
    while running "$i"; do sleep 0.1; done
    rm -f "$dir/node$i.pid"
  done
  echo "stopped"
  ;;
*)
  echo "usage: $0 start|status|stop" >&2
  exit 2
  ;;
esac
