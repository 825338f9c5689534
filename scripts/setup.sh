#!/usr/bin/env bash
# Installs what building and testing agent-budget needs on Debian/Ubuntu, skipping what is
# already there, then the dashboard's npm packages. Rust and Node are prerequisites.
#   scripts/setup.sh            everything: desktop build and test packages, Chromium, Python venv
#   scripts/setup.sh --desktop  what building and running the desktop app needs
#   scripts/setup.sh --headless what building `agent-budget serve` needs (nothing from apt)
set -euo pipefail
command -v cargo >/dev/null || { echo "agent-budget: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
command -v node >/dev/null || { echo "agent-budget: Node.js (20+) is required" >&2; exit 1; }
mode="${1:-all}"
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
want=()
desktop=(libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev)
testing=(chromium xvfb xauth dbus dunst libglib2.0-bin imagemagick x11-utils curl)
case "$mode" in
  --headless) ;;
  --desktop) want=("${desktop[@]}") ;;
  *) want=("${desktop[@]}" "${testing[@]}") ;;
esac
need=()
if [ "$mode" = all ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need+=(python3-venv); fi
for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The dependency policy check (deny.toml) in the test command.
if [ "$mode" = all ] && ! command -v cargo-deny >/dev/null; then
  cargo install cargo-deny --version 0.20.2 --locked --quiet
fi

cd "$(dirname "$0")/../ui"
[ -d node_modules/.bin ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --silent
