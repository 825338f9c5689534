#!/usr/bin/env bash
# Builds the desktop app's installable bundles with the Tauri CLI: a .deb here (it builds
# offline). The AppImage bundler downloads helper binaries from the internet; where that is
# reachable, `scripts/package.sh appimage` builds it too. Output: target/release/bundle/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --desktop
(cd ui && npx vite build --logLevel warn)
bundles="${1:-deb}"
ui/node_modules/.bin/tauri build --bundles "$bundles" -- -p agent-budget-desktop
ls -1 target/release/bundle/*/*
