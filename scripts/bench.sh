#!/usr/bin/env bash
# Builds release binaries and measures the proxy's overhead; writes docs/PERFORMANCE.md.
# `scripts/bench.sh --quick` for a short run; `--team` prints a proxy on a PostgreSQL team
# database beside one on SQLite alone. Everything binds to 127.0.0.1 and is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p agent-budget -p mock-upstream -p agent-budget-bench
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec ./target/release/agent-budget-bench "$@"
