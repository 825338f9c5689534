#!/usr/bin/env bash
# Runs the official Python and TypeScript SDKs, and Claude Code, against `agent-budget serve` and the mock
# upstream. Installs what it needs (a venv, npm packages) on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

cargo build --quiet --bin agent-budget -p agent-budget
cargo build --quiet --bin mock-upstream -p mock-upstream

if [ ! -x "$here/.venv/bin/pytest" ] || ! "$here/.venv/bin/pip" freeze | grep -qx 'anthropic==2.14.0'; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
fi
# Installed again whenever package.json pins another version than node_modules holds.
wanted="$(node -p "require('$here/node/package.json').dependencies['@anthropic-ai/claude-code']")"
have="$(node -p "try { require('$here/node/node_modules/@anthropic-ai/claude-code/package.json').version } catch { '' }")"
(cd "$here/node" && { [ -d node_modules/@anthropic-ai/sdk ] && [ -x node_modules/.bin/claude ] && [ "$have" = "$wanted" ] || npm install --silent --no-audit --no-fund; })

work="$(mktemp -d)"
cleanup() {
  kill "${proxy_pid:-}" "${mock_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

target="${CARGO_TARGET_DIR:-$root/target}/debug"
"$target/mock-upstream" 0 >"$work/mock.out" &
mock_pid=$!
for _ in $(seq 100); do grep -q listening "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
mock_port="$(awk '/listening/ {print $2}' "$work/mock.out")"

# The real key virtual keys are swapped for (the mock accepts any).
(umask 077 && printf 'sk-ant-sdk-real' >"$work/upstream-key")
"$target/agent-budget" serve --port 0 --data-dir "$work/data" --upstream "http://127.0.0.1:$mock_port" \
  --upstream-key-file "$work/upstream-key" 2>"$work/proxy.log" &
proxy_pid=$!
for _ in $(seq 200); do grep -q 'ready port=' "$work/proxy.log" 2>/dev/null && break; sleep 0.05; done
proxy_port="$(sed -n 's/.*ready port=\([0-9]*\).*/\1/p' "$work/proxy.log")"
[ -n "$proxy_port" ] || { cat "$work/proxy.log"; exit 1; }

export AGENT_BUDGET_URL="http://127.0.0.1:$proxy_port/agent-budget" MOCK_URL="http://127.0.0.1:$mock_port"
export AGENT_BUDGET_BIN="$target/agent-budget"
# The admin API takes the token the server wrote on first start (the proxy routes never do).
AGENT_BUDGET_ADMIN_TOKEN="$(cat "$work/data/admin-token")"
export AGENT_BUDGET_ADMIN_TOKEN
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
echo "== Python SDK (anthropic $("$here/.venv/bin/python" -c 'import anthropic; print(anthropic.__version__)'))"
"$here/.venv/bin/pytest" -q "$here/python"
echo "== TypeScript SDK (@anthropic-ai/sdk $(node -p "require('$here/node/node_modules/@anthropic-ai/sdk/package.json').version")) and Claude Code ($(node -p "require('$here/node/node_modules/@anthropic-ai/claude-code/package.json').version"))"
(cd "$here/node" && node --test)
