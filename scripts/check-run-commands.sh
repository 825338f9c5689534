#!/usr/bin/env bash
# Starts the README's two run commands and checks that each serves the proxy; meant for a clean
# machine: `sudo scripts/fresh-machine.sh ./scripts/check-run-commands.sh` (docs/DEVELOPING.md).
# First `scripts/run.sh serve` on the bare system; then `scripts/run.sh` (the desktop app) on a
# virtual display, Xvfb, which stands in for the user's desktop and is the one thing installed
# here rather than by the run command.
set -euo pipefail
cd "$(dirname "$0")/.."
T="$(mktemp -d)"
pid=
cleanup() { [ -z "$pid" ] || kill -- "-$pid" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

# GET /agent-budget/health with bash alone: a fresh system has neither curl nor Python.
healthy() ( # port
  exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || exit 1
  printf 'GET /agent-budget/health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  grep -q '"ok":true' <&3
)
wait_healthy() { # port, seconds, log
  local until=$((SECONDS + $2))
  until healthy "$1" 2>/dev/null; do
    if [ $SECONDS -ge $until ] || ! kill -0 "$pid" 2>/dev/null; then tail -20 "$3"; return 1; fi
    sleep 1
  done
}

echo "== ./scripts/run.sh serve"
setsid ./scripts/run.sh serve --port 4799 --data-dir "$T/serve" >"$T/serve.log" 2>&1 & pid=$!
wait_healthy 4799 1800 "$T/serve.log"
echo "ok - the headless proxy answers on :4799"
kill -- "-$pid"; wait "$pid" 2>/dev/null || true; pid=

echo "== ./scripts/run.sh (the desktop app, on Xvfb)"
command -v Xvfb >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xvfb xauth >/dev/null
Xvfb :77 -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 & xvfb=$!
export DISPLAY=:77 AGENT_BUDGET_DATA_DIR="$T/desktop" AGENT_BUDGET_PORT=4798
setsid ./scripts/run.sh >"$T/desktop.log" 2>&1 & pid=$!
wait_healthy 4798 2400 "$T/desktop.log" || { kill "$xvfb"; exit 1; }
echo "ok - the desktop app's proxy answers on :4798"
kill "$xvfb" 2>/dev/null || true
