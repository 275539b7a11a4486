#!/usr/bin/env bash
# Installs what corekv's tests need on a fresh Debian machine that has Rust (idempotent; quiet
# when everything is already there). Needs root or sudo only when something is missing.
#   capnp     Cap'n Proto schema compiler: checks proto/src/generated matches the schema
#   git       glommio's build script calls it
#   redis-server (with redis-cli)  the YCSB driver's Redis backend test (bench/tests/ycsb_redis.rs)
#   python3 + pycapnp 2.2.4 (PyPI)  a client from another Cap'n Proto implementation
#                                   (tests/tests/other_clients.rs, tests/python/pycapnp_client.py)
#   perf      linux-perf: tuning/tests/flamegraph.rs records a program with `perf record -e cpu-clock`
#   promtool  Debian's `prometheus` (the smallest package shipping promtool): tests/tests/metrics.rs
#             checks /metrics with `promtool check metrics`
set -euo pipefail
need=()
command -v capnp >/dev/null || need+=(capnproto)
command -v git >/dev/null || need+=(git)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server redis-tools)
command -v python3 >/dev/null || need+=(python3)
if ! python3 -c 'import capnp' 2>/dev/null && ! python3 -m pip --version >/dev/null 2>&1; then
  need+=(python3-pip)
fi
command -v perf >/dev/null || need+=(linux-perf)
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  sudo=
  if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
  echo "tests/setup.sh: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! python3 -c 'import capnp' 2>/dev/null; then
  echo "tests/setup.sh: installing pycapnp from PyPI" >&2
  # Debian's Python refuses pip installs outside a venv (PEP 668) unless told otherwise.
  python3 -m pip install --quiet pycapnp==2.2.4 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages pycapnp==2.2.4
fi
