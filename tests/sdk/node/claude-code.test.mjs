// Claude Code itself (the npm package, offline against the mock) through the proxy: with a
// virtual key, in gateway mode, or with its own key; its session header is recorded as the
// request's session and forwarded unchanged.
// Needs AGENT_BUDGET_URL and MOCK_URL (tests/sdk/run.sh sets them).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const PROXY = process.env.AGENT_BUDGET_URL;
const MOCK = process.env.MOCK_URL;
const claude = join(dirname(fileURLToPath(import.meta.url)), "node_modules", ".bin", "claude");

/** The admin token goes to the admin API only (never to a proxy route or the mock). */
function adminHeaders(url) {
  const h = { "content-type": "application/json" };
  if (url.includes("/agent-budget/api/")) h.authorization = `Bearer ${process.env.AGENT_BUDGET_ADMIN_TOKEN}`;
  return h;
}

async function call(method, url, body) {
  const r = await fetch(url, { method, headers: adminHeaders(url), body: body && JSON.stringify(body) });
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

async function runClaude(home, env) {
  const { stdout } = await promisify(execFile)(claude, ["-p", "say hi", "--output-format", "json"], {
    cwd: home,
    env: { PATH: process.env.PATH, HOME: home, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", DISABLE_AUTOUPDATER: "1", ...env },
    timeout: 90_000,
  });
  return JSON.parse(stdout);
}

test("Claude Code with only the base URL and a virtual key", { timeout: 120_000 }, async () => {
  await call("POST", `${MOCK}/_mock/reset`);
  const name = `cc-key-${process.pid}`;
  await call("POST", `${PROXY}/api/budgets`, { name, max_dollars: "50" });
  const made = await call("POST", `${PROXY}/api/budgets/${name}/keys`, { name: "claude" });
  const home = mkdtempSync(join(tmpdir(), "claude-home-"));
  try {
    const out = await runClaude(home, { ANTHROPIC_BASE_URL: PROXY, ANTHROPIC_API_KEY: made.key });
    assert.equal(out.result, "Hello from the mock upstream.");
    assert.ok((await call("GET", `${PROXY}/api/budgets/${name}`)).requests >= 1, "charged to the key's budget");
    const seen = (await call("GET", `${MOCK}/_mock/stats`)).seen.filter((s) => s.path === "/v1/messages");
    for (const s of seen) assert.equal(s.headers["x-api-key"], "sk-ant-sdk-real");
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("Claude Code in gateway mode with a virtual key: charged to its budget, which it can read", { timeout: 120_000 }, async () => {
  await call("POST", `${MOCK}/_mock/reset`);
  const name = `cc-gateway-${process.pid}`;
  await call("POST", `${PROXY}/api/budgets`, { name, max_dollars: "2", period: "daily" });
  const made = await call("POST", `${PROXY}/api/budgets/${name}/keys`, { name: "claude" });
  const home = mkdtempSync(join(tmpdir(), "claude-home-"));
  try {
    const out = await runClaude(home, {
      CLAUDE_CODE_USE_GATEWAY: "1", ANTHROPIC_BASE_URL: PROXY, ANTHROPIC_AUTH_TOKEN: made.key,
    });
    assert.equal(out.result, "Hello from the mock upstream.");
    const budget = await call("GET", `${PROXY}/api/budgets/${name}`);
    assert.ok(budget.requests >= 1, "charged to the key's budget");
    const seen = (await call("GET", `${MOCK}/_mock/stats`)).seen.filter((s) => s.path === "/v1/messages");
    assert.ok(seen.length >= 1);
    for (const s of seen) {
      assert.equal(s.headers["x-api-key"], "sk-ant-sdk-real", "forwarded with the real key");
      assert.ok(!JSON.stringify(s.headers).includes("sk-ab-"), "never the virtual key");
    }
    // What Claude Code's /usage reads: the budget in cents, with the period's reset.
    const r = await fetch(`${PROXY}/api/oauth/usage`, { headers: { authorization: `Bearer ${made.key}` } });
    assert.equal(r.status, 200);
    const usage = await r.json();
    assert.equal(usage.extra_usage.monthly_limit, 200);
    assert.equal(usage.limits[0].group, "daily");
    assert.ok(Math.abs(Date.parse(usage.limits[0].resets_at) - Date.parse(budget.resets_at)) < 1000);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("Claude Code's session id becomes the request's session", { timeout: 120_000 }, async () => {
  await call("POST", `${MOCK}/_mock/reset`);
  const name = `cc-${process.pid}`;
  await call("POST", `${PROXY}/api/budgets`, { name, max_dollars: "50" });
  const home = mkdtempSync(join(tmpdir(), "claude-home-"));
  try {
    const { stdout } = await promisify(execFile)(claude, ["-p", "say hi", "--output-format", "json"], {
      cwd: home,
      env: {
        PATH: process.env.PATH, HOME: home,
        ANTHROPIC_BASE_URL: `${PROXY}/b/${name}`, ANTHROPIC_API_KEY: "sk-ant-test",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", DISABLE_AUTOUPDATER: "1",
      },
      timeout: 90_000,
    });
    const out = JSON.parse(stdout);
    assert.equal(out.result, "Hello from the mock upstream.");
    const sessions = await call("GET", `${PROXY}/api/budgets/${name}/sessions`);
    assert.equal(sessions.total, 1);
    assert.equal(sessions.items[0].session, out.session_id, "the session Claude Code reports");
    assert.ok(sessions.items[0].requests >= 1);
    const seen = (await call("GET", `${MOCK}/_mock/stats`)).seen.filter((s) => s.path === "/v1/messages");
    assert.ok(seen.length >= 1);
    for (const s of seen) assert.equal(s.headers["x-claude-code-session-id"], out.session_id, "forwarded unchanged");
    const records = (await call("GET", `${PROXY}/api/budgets/${name}/usage`)).items;
    assert.ok(records.every((r) => r.session === out.session_id));
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("Claude Code with a subscription's OAuth token: passed through, its windows shown, a budget stops it at its share", { timeout: 180_000 }, async () => {
  await call("POST", `${MOCK}/_mock/reset`);
  const token = `sk-ant-oat01-cc-subscriber-${process.pid}`;
  const name = `cc-sub-${process.pid}`;
  await call("POST", `${PROXY}/api/budgets`, { name, max_dollars: "50", max_subscription_utilization: { five_hour: 0.4 } });
  const home = mkdtempSync(join(tmpdir(), "claude-home-"));
  try {
    // Interactive work (the default budget) goes through; the mock reports the 5-hour window at 43 %.
    const out = await runClaude(home, { ANTHROPIC_BASE_URL: PROXY, CLAUDE_CODE_OAUTH_TOKEN: token });
    assert.equal(out.result, "Hello from the mock upstream.");
    const seen = (await call("GET", `${MOCK}/_mock/stats`)).seen.filter((s) => s.path === "/v1/messages");
    assert.ok(seen.length >= 1);
    for (const s of seen) {
      assert.equal(s.headers.authorization, `Bearer ${token}`, "the subscription's token goes upstream unchanged");
      assert.match(s.headers["anthropic-beta"], /oauth-/);
    }
    const subs = (await call("GET", `${PROXY}/api/subscriptions`)).items;
    assert.ok(subs.some((s) => s.five_hour?.utilization === 0.43 && s.seven_day?.utilization === 0.12), JSON.stringify(subs));
    assert.ok(!JSON.stringify(subs).includes(token), "never the token");
    // The agents' budget stops at 40 % of the window: refused before it is sent, never retried.
    const sent = seen.length;
    // Claude Code exits 1 after an API error, its JSON result on stdout.
    const env = { ANTHROPIC_BASE_URL: PROXY, CLAUDE_CODE_OAUTH_TOKEN: token, ANTHROPIC_CUSTOM_HEADERS: `X-Budget-Id: ${name}` };
    const stopped = await runClaude(home, env).catch((e) => JSON.parse(e.stdout));
    assert.equal(stopped.is_error, true);
    assert.equal(stopped.api_error_status, 429);
    assert.match(stopped.result, /budget 'cc-sub-\d+' stops at 40 % of the subscription's 5-hour window/);
    const after = (await call("GET", `${MOCK}/_mock/stats`)).seen.filter((s) => s.path === "/v1/messages");
    assert.equal(after.length, sent, "nothing reached the upstream");
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
