#!/usr/bin/env bash
# The run command: builds and starts the headless proxy on localhost:4727.
# Extra arguments go to `agent-budget serve` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "agent-budget: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
exec cargo run --release --quiet --bin agent-budget -- serve "$@"
