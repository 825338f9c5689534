#!/usr/bin/env bash
# Installs what building and testing agent-budget needs on Debian/Ubuntu, skipping what is
# already there: Python's venv module (SDK tests) and Chromium (dashboard tests), then the
# dashboard's npm packages. Rust and Node are prerequisites.
set -euo pipefail
command -v cargo >/dev/null || { echo "agent-budget: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
command -v node >/dev/null || { echo "agent-budget: Node.js (18+) is required" >&2; exit 1; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ "${1:-}" = "--no-browser" ] || [ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cd "$(dirname "$0")/../ui"
[ -d node_modules/.bin ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --silent
