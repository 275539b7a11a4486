#!/usr/bin/env bash
# Compares `corekv-tune disk` with fio, test by test, alternating the two so both see the same
# machine (shared machines are noisy: a disk's fdatasync latency moves with every other
# process's journal commits). The fio jobs are exactly those of ../shared/peers/limits.sh.
# Before every run, `sync` and a pause (SETTLE seconds, default 3) let the previous run's file
# deletions finish: on a `-o discard` mount their discards otherwise land in the next run's
# journal commits and slow its fdatasyncs several-fold, whichever tool runs next.
# Sequential write runs twice per pair (fio, ours, ours, fio), the other tests once.
# Prints one line per run and the medians with the ratio corekv-tune / fio.
# Usage: tuning/compare-fio.sh [DIR] [PAIRS]   (default /var/tmp/corekv-compare, 5 pairs)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/var/tmp/corekv-compare}
pairs=${2:-5}
runtime=${RUNTIME:-8}
mkdir -p "$dir"
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio >/dev/null; }
cargo build --release -q -p corekv-tune
tune=target/release/corekv-tune
trap 'rm -rf "$dir"/fio-* "$dir"/.corekv-tune-probe-*' EXIT
# limits.sh's job runner (its fio command verbatim), after the settling pause:
settle() { sync; sleep "${SETTLE:-3}"; }
run() { settle; fio --name="$1" --directory="$dir" --filename="fio-$1" --ioengine=io_uring --direct=1 \
  --size=1G --time_based --runtime="$runtime" --group_reporting --output-format=terse \
  --terse-version=3 "${@:2}"; }
ours() { settle; "$tune" disk --dir "$dir" --no-save --no-sweep --seconds "$runtime" --tests "$1"; }
get() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | head -1; }
declare -A F O
for ((i = 1; i <= pairs; i++)); do
  # Sequential write twice per pair, in the order fio, ours, ours, fio: this disk's bandwidth
  # is bimodal from run to run, and whichever tool runs right after a 1 GiB file removal
  # (its discard) would otherwise always be the same one.
  f=$(run seqwrite --rw=write --bs=1M --iodepth=8 | cut -d';' -f48); F[seq]+="$((f / 1024)) "
  rm -f "$dir"/fio-*
  o=$(ours seq-write | get seq_write_MiB_per_s); O[seq]+="$o "
  o=$(ours seq-write | get seq_write_MiB_per_s); O[seq]+="$o "
  f=$(run seqwrite --rw=write --bs=1M --iodepth=8 | cut -d';' -f48); F[seq]+="$((f / 1024)) "
  rm -f "$dir"/fio-*
  f1=$(run randread1 --rw=randread --bs=4k --iodepth=1 | cut -d';' -f8)
  f32=$(run randread32 --rw=randread --bs=4k --iodepth=32 | cut -d';' -f8)
  F[rr1]+="$f1 "; F[rr32]+="$f32 "
  rm -f "$dir"/fio-*
  out=$(ours randread); O[rr1]+="$(get randread_4k_qd1_iops <<<"$out") "; O[rr32]+="$(get randread_4k_qd32_iops <<<"$out") "
  f=$(run fdatasync --rw=write --bs=4k --iodepth=1 --fdatasync=1 --size=256M | cut -d';' -f49); F[sync]+="$f "
  rm -f "$dir"/fio-*
  o=$(ours fdatasync | get write_4k_fdatasync_per_s); O[sync]+="$o "
  echo "pair $i done ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
printf '%-32s %-44s %-44s %s\n' figure "fio runs" "corekv-tune runs" "median fio / corekv-tune / ratio"
for k in seq rr1 rr32 sync; do
  name=$(case $k in seq) echo seq_write_MiB_per_s;; rr1) echo randread_4k_qd1_iops;; rr32) echo randread_4k_qd32_iops;; sync) echo write_4k_fdatasync_per_s;; esac)
  mf=$(median <<<"${F[$k]}"); mo=$(median <<<"${O[$k]}")
  printf '%-32s %-44s %-44s %s / %s / %s\n' "$name" "${F[$k]}" "${O[$k]}" "$mf" "$mo" "$(awk -v a="$mo" -v b="$mf" 'BEGIN {printf "%.2f", a / b}')"
done
