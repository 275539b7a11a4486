#!/usr/bin/env bash
# A flame graph of a running corekv-server (or of any process) in one command.
#   tuning/flamegraph.sh [PID] [SECONDS] [OUTPUT.svg] [corekv-tune flamegraph flags...]
# PID defaults to the newest corekv-server, SECONDS to 10, OUTPUT to corekv-flamegraph.svg;
# further arguments go to `corekv-tune flamegraph` (e.g. `--call-graph fp`, `--frequency-hz 499`).
# COREKV_TUNE=PATH uses that corekv-tune binary instead of building the release one (the
# tests pass their debug build).
# Samples with perf's software clock (`-e cpu-clock`, works without hardware counters) and
# renders with `corekv-tune flamegraph` (inferno, in-process). Needs perf (Debian: linux-perf)
# and root, or kernel.perf_event_paranoid <= 1.
set -euo pipefail
cd "$(dirname "$0")/.."
pid=${1:-$(pgrep -n -x corekv-server || true)}
[[ -n $pid ]] || { echo "flamegraph.sh: no corekv-server is running; pass a PID" >&2; exit 2; }
seconds=${2:-10}
out=${3:-corekv-flamegraph.svg}
command -v perf >/dev/null || { echo "flamegraph.sh: installing linux-perf" >&2; apt-get install -y -qq linux-perf >/dev/null; }
tune=${COREKV_TUNE:-}
if [[ -z $tune ]]; then
  cargo build --release -q -p corekv-tune
  tune=target/release/corekv-tune
fi
exec "$tune" flamegraph --pid "$pid" --seconds "$seconds" --output "$out" "${@:4}"
