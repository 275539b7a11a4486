#!/usr/bin/env bash
# Runs corekv's whole test suite: installs missing test tools, then every crate's unit tests and
# the end-to-end tests in tests/ (which start real server processes).
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
# glommio registers I/O buffers in locked memory; raise the limit when we are allowed to.
ulimit -l unlimited 2>/dev/null || true
# The end-to-end tests in tests/ run the real binaries; `cargo test` alone builds only their
# unit-test harnesses, so build the binaries first (same profile as the tests).
cargo build --workspace --bins --examples
exec cargo test --workspace "$@"
