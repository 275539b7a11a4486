#!/usr/bin/env bash
# Durable SET throughput of a 3-node corekv cluster (server/scripts/local-cluster.sh, one shard
# per node, all on this machine) against a single node (`--shards 1`, `sync`), with the same
# driver and requests (corekv-load, as bench/scripts/server_vs_redis.sh), alternating, RUNS
# times; prints the median of each and the ratio (issue 17: replicated >= 1/2 of single-node),
# and after each cluster run the leader's entries per log append and per append message and its
# commit latency (proposal to answer: majority-durable and applied) p50/p99, and a follower's log
# sync latency (entries queued to durable) p50/p99.
#
# Usage: bench/scripts/replicated_vs_single.sh [REQUESTS] [VALUE_BYTES] [CLIENTS]
#   (defaults: 100000 1000 50). Environment: RUNS (default 3), PIPELINES (default "1 16"),
#   DATA_DIR (default /var/tmp/corekv-replicated; a real disk, not tmpfs; removed at the end),
#   OUT (where raw outputs go, default /var/tmp/corekv-replicated-<time>), SERVER_ARGS (more
#   flags for every server, single and cluster nodes, e.g. "--idle-poll-us 0"), LEADER (default
#   2: the node whose shard leads, moved there with `corekv-cli cluster transfer-leader` once one
#   is elected; on 2 CPUs local-cluster.sh puts nodes 1 and 3 on CPU 0 and node 2 alone on CPU 1,
#   so the leader, which works most, shares its CPU with no follower; "elected" keeps the
#   elected one).
# Needs `cargo build --release -p corekv-server -p corekv-bench`.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100000}
value=${2:-1000}
clients=${3:-50}
runs=${RUNS:-3}
pipelines=${PIPELINES:-1 16}
data=${DATA_DIR:-/var/tmp/corekv-replicated}
read -r -a server_args <<<"${SERVER_ARGS:-}"
out=${OUT:-/var/tmp/corekv-replicated-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
server=target/release/corekv-server
cli=target/release/corekv-cli
load=target/release/corekv-load
pid=
cleanup() {
  [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
  COREKV_CLUSTER_DIR=$data/cluster bash server/scripts/local-cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT

measure() { # label addr pipeline
  "$load" --addr "$2" --tests set --requests "$n" --value-bytes "$value" --clients "$clients" \
    --pipeline "$3" | sed "s/^/$1 /" | tee -a "$out/results.txt"
}

for run in $(seq "$runs"); do
  for pipeline in $pipelines; do
    rm -rf "$data"; mkdir -p "$data"
    "$server" --data-dir "$data/single" --listen 127.0.0.1:7579 --shards 1 --durability sync \
      "${server_args[@]}" >"$out/single.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "corekv-server ready" "$out/single.log" && break; sleep 0.1; done
    measure "run=$run single" 127.0.0.1:7579 "$pipeline"
    kill -TERM "$pid"; wait "$pid" || true; pid=

    COREKV_CLUSTER_DIR=$data/cluster COREKV_SERVER=$server COREKV_SERVER_ARGS="${SERVER_ARGS:-}" \
      bash server/scripts/local-cluster.sh start >/dev/null
    # The leader's node id from `cluster status` once a write went through (any node takes a
    # client's put: the CLI follows the leader), then its client port (node i: (i+6)379).
    leader=
    for _ in $(seq 200); do
      if "$cli" --addr 127.0.0.1:7379 put probe x >/dev/null 2>&1; then
        leader=$("$cli" --addr 127.0.0.1:7379 cluster status 2>/dev/null |
          awk -F'\t' '$4 == "leader" { print $2; exit }')
      fi
      [[ -n $leader ]] && break
      sleep 0.1
    done
    [[ -n $leader ]] || { echo "no leader elected" >&2; exit 1; }
    if [[ ${LEADER:-2} != elected && $leader != "${LEADER:-2}" ]]; then
      # A node that does not follow the leader yet refuses the order to campaign: ask again.
      for try in 1 2 3 4 5; do
        "$cli" --addr 127.0.0.1:7379 cluster transfer-leader "${LEADER:-2}" >/dev/null && break
        [[ $try == 5 ]] && { echo "could not move the leadership to node ${LEADER:-2}" >&2; exit 1; }
        sleep 0.5
      done
      leader=${LEADER:-2}
    fi
    leader=$((leader + 6))379
    measure "run=$run replicated" "127.0.0.1:$leader" "$pipeline"
    # The leader's own view of the run: entries per append and per message, commit latency.
    "$cli" --addr "127.0.0.1:$leader" stats | awk -v tag="run=$run pipeline=$pipeline" '
      { v[$2] = $3 }
      END {
        printf "%s leader: %.1f entries/append, %.1f entries/message, commit p50=%d us p99=%d us\n",
          tag, v["raft_log_appended_entries_total"] / (v["raft_log_appends_total"] + 0.0001),
          v["raft_append_message_entries_total"] / (v["raft_append_messages_total"] + 0.0001),
          v["raft_commit_latency_p50_us"], v["raft_commit_latency_p99_us"]
      }' | tee -a "$out/raft.txt"
    # A follower's log syncs: most of what the commit waits for.
    follower=7379; [[ $leader == 7379 ]] && follower=8379
    "$cli" --addr "127.0.0.1:$follower" stats | awk -v tag="run=$run pipeline=$pipeline" '
      { v[$2] = $3 }
      END { printf "%s follower: log sync p50=%d us p99=%d us\n", tag,
              v["raft_log_sync_latency_p50_us"], v["raft_log_sync_latency_p99_us"] }' |
      tee -a "$out/raft.txt"
    COREKV_CLUSTER_DIR=$data/cluster bash server/scripts/local-cluster.sh stop >/dev/null
  done
done

python3 - "$out/results.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"run=\d+ (\w+) .*pipeline=(\d+).*?: ([\d.]+) ops/s, p50=(\d+) us, p99=(\d+) us", line)
    if m:
        kind, p, ops, p50, p99 = m.group(1), int(m.group(2)), float(m.group(3)), int(m.group(4)), int(m.group(5))
        rows.setdefault((kind, p), []).append((ops, p50, p99))
for p in sorted({p for _, p in rows}):
    s = rows.get(("single", p), [])
    r = rows.get(("replicated", p), [])
    if not s or not r:
        continue
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    print(f"pipeline {p}: single {med(s,0):,.0f} ops/s (p50 {med(s,1):.0f} us, p99 {med(s,2):.0f} us); "
          f"replicated {med(r,0):,.0f} ops/s (p50 {med(r,1):.0f} us, p99 {med(r,2):.0f} us); "
          f"ratio {med(r,0)/med(s,0):.2f} (medians of {len(s)}/{len(r)} runs)")
PY
echo "Raw outputs: $out"
