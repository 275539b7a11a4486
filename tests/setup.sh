#!/usr/bin/env bash
# Installs what corekv's tests need on a fresh Debian machine that has Rust (idempotent; quiet
# when everything is already there). Needs root or sudo only when something is missing.
#   capnp     Cap'n Proto schema compiler: checks proto/src/generated matches the schema
#   git       glommio's build script calls it
#   redis-server (with redis-cli)  the YCSB driver's Redis backend test (bench/tests/ycsb_redis.rs)
set -euo pipefail
need=()
command -v capnp >/dev/null || need+=(capnproto)
command -v git >/dev/null || need+=(git)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server redis-tools)
if ((${#need[@]})); then
  sudo=
  if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
  echo "tests/setup.sh: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
