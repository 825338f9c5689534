#!/usr/bin/env bash
# Installs what building and testing agent-budget needs on Debian/Ubuntu, skipping what is
# already there, then checks that every program and library the later steps use is present
# (the preflight), then installs the dashboard's npm packages. Rust and Node are prerequisites.
#   scripts/setup.sh            everything the test command uses
#   scripts/setup.sh --desktop  what building and running the desktop app needs
#   scripts/setup.sh --headless what building and running `agent-budget serve` needs
set -euo pipefail
command -v cargo >/dev/null || { echo "agent-budget: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
command -v node >/dev/null || { echo "agent-budget: Node.js (20+) is required: https://nodejs.org" >&2; exit 1; }
command -v npm >/dev/null || { echo "agent-budget: npm is required (it comes with Node.js)" >&2; exit 1; }
mode="${1:-all}"

# What each step uses, as "<check> <Debian package>". A check is a program on PATH, an absolute
# path, `glob:<path pattern>`, `pc:<pkg-config module>` or `py:<Python module>`. This table is
# the one list: setup installs the packages of the failing checks, and the preflight below
# re-runs every check.
headless=(
  "cc build-essential"                              # rusqlite's SQLite, aws-lc, mimalloc
  "pkg-config pkg-config"
  "/etc/ssl/certs/ca-certificates.crt ca-certificates" # cargo and npm fetching over TLS
)
desktop=(
  "pc:webkit2gtk-4.1 libwebkit2gtk-4.1-dev"
  "pc:ayatana-appindicator3-0.1 libayatana-appindicator3-dev"
  "pc:librsvg-2.0 librsvg2-dev"
  "/usr/include/xdo.h libxdo-dev"
)
testing=(
  "git git"                                         # the bindings-are-committed check
  "curl curl"                                       # tests/desktop/run.sh
  "kill procps"                                     # durability and shutdown tests
  "unshare util-linux"                              # the full-disk fault test
  "python3 python3"                                 # desktop and webhook tests, the Python SDK
  "tmux tmux"                                       # Claude Code interactive, signing in
  "py:venv python3-venv"
  "py:ensurepip python3-venv"
  "/usr/bin/chromium chromium"                      # the dashboard end to end
  "Xvfb xvfb"                                       # the desktop app under Xvfb
  "xauth xauth"
  "dbus-daemon dbus"
  "dbus-monitor dbus"
  "dunst dunst"                                     # a notification service on the test's bus
  "gdbus libglib2.0-bin"
  "gnome-keyring-daemon gnome-keyring"              # the OS keychain test (Secret Service)
  "glob:/usr/lib/postgresql/*/bin/initdb postgresql" # team budgets: a real PostgreSQL server
  "runuser util-linux"                              # which runs as its own user when we are root
  "prometheus prometheus"                           # scrapes the proxy's metrics in a test
  "import imagemagick"                              # the window's screenshot
  "identify imagemagick"
  "xwininfo x11-utils"
  "/usr/bin/WebKitWebDriver webkit2gtk-driver"      # tauri-driver's native driver
)
case "$mode" in
  --headless) checks=("${headless[@]}") ;;
  --desktop) checks=("${headless[@]}" "${desktop[@]}") ;;
  all) checks=("${headless[@]}" "${desktop[@]}" "${testing[@]}") ;;
  *) echo "agent-budget: unknown setup mode '$mode' (use --headless, --desktop or nothing)" >&2; exit 2 ;;
esac

present() { # check
  case "$1" in
    pc:*) command -v pkg-config >/dev/null && pkg-config --exists "${1#pc:}" ;;
    py:*) command -v python3 >/dev/null && python3 -c "import ${1#py:}" 2>/dev/null ;;
    glob:*) compgen -G "${1#glob:}" >/dev/null ;;
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

need=()
for c in "${checks[@]}"; do
  read -r what pkg <<<"$c"
  present "$what" || [[ " ${need[*]} " == *" $pkg "* ]] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "agent-budget: installing ${need[*]}" >&2
  sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "agent-budget: installing ${need[*]} needs root: run this as root or install sudo" >&2; exit 1
    fi
  }
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The preflight: stop now, naming what is missing, rather than in a later step's traceback.
missing=0
for c in "${checks[@]}"; do
  read -r what pkg <<<"$c"
  if ! present "$what"; then
    echo "agent-budget: '$what' is missing: install the Debian package '$pkg' (apt-get install $pkg)" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1

# The dependency policy check (deny.toml) in the test command.
if [ "$mode" = all ] && ! command -v cargo-deny >/dev/null; then
  cargo install cargo-deny --version 0.20.2 --locked --quiet
fi

cd "$(dirname "$0")/../ui"
[ -d node_modules/.bin ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --silent
