#!/usr/bin/env bash
# The run command. `scripts/run.sh` builds and starts the desktop app; `scripts/run.sh serve
# [flags]` the headless proxy on localhost:4727 (flags go to `agent-budget serve`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = serve ]; then
  shift
  ./scripts/setup.sh --headless
  (cd ui && npx vite build --logLevel warn)
  exec cargo run --release --quiet --bin agent-budget -- serve "$@"
fi
./scripts/setup.sh --desktop
(cd ui && npx vite build --logLevel warn)
exec cargo run --release --quiet -p agent-budget-desktop -- "$@"
