#!/usr/bin/env bash
# The run command: builds and starts the headless proxy on localhost:4727.
# Extra arguments go to `agent-budget serve` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --headless
(cd ui && npx vite build --logLevel warn)
exec cargo run --release --quiet --bin agent-budget -- serve "$@"
