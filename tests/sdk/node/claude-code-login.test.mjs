// Interactive Claude Code (in tmux, offline against the mock) signs in to agent-budget: the
// settings `agent-budget claude-code setup` writes, /login's device flow approved through the
// admin API, a file written and a subagent started (the mock answers with tool calls), their
// telemetry, agents and project kept, /usage showing the budget's dollars and reset, the
// notices past 75 % and 95 %, and a revoked sign-in sent back to /login. Every wait polls the pane for what it waits for.
// Needs AGENT_BUDGET_URL, MOCK_URL, AGENT_BUDGET_BIN and the admin token (tests/sdk/run.sh sets them).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const PROXY = process.env.AGENT_BUDGET_URL;
const TOKEN = process.env.AGENT_BUDGET_ADMIN_TOKEN;
const MOCK = process.env.MOCK_URL;
const claude = join(dirname(fileURLToPath(import.meta.url)), "node_modules", ".bin", "claude");
const session = `agent-budget-login-${process.pid}`;

const tmux = (...args) => execFileSync("tmux", args, { encoding: "utf8" });
const pane = () => tmux("capture-pane", "-p", "-J", "-t", session);
const keys = (...k) => tmux("send-keys", "-t", session, ...k);

/** Waits until the pane shows `pattern` (a pane redraws on its own: polled, never slept on). */
async function until(pattern, what, ms = 30_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const text = pane();
    const m = text.match(pattern);
    if (m) return m;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`Claude Code never showed ${what}:\n${pane()}`);
}

/** Waits until `check()` holds, asking again every 200 ms. */
async function eventually(check, what, ms = 30_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`never saw ${what}`);
}

/** Waits until the pane no longer shows `pattern` (a panel closed). */
async function gone(pattern, what, ms = 30_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!pattern.test(pane())) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`Claude Code never closed ${what}:\n${pane()}`);
}

async function admin(method, path, body) {
  const r = await fetch(`${PROXY}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

test("interactive Claude Code signs in with /login (with a cap of its own); its session's telemetry, agents and project are kept; /usage and its notices show the fullest cap; revoked, it is sent back to /login", { timeout: 180_000 }, async () => {
  const name = `cc-login-${process.pid}`;
  assert.equal((await admin("POST", "/api/budgets", { name, max_dollars: "50", period: "daily" })).status, 201);
  const home = mkdtempSync(join(tmpdir(), "claude-login-"));
  const port = new URL(PROXY).port;
  execFileSync(process.env.AGENT_BUDGET_BIN, ["claude-code", "setup", "--port", port, "--budget", name, "--settings", join(home, ".claude", "settings.json")]);
  const settings = JSON.parse(readFileSync(join(home, ".claude", "settings.json"), "utf8"));
  assert.equal(settings.forceLoginMethod, "gateway");
  // The project Claude Code works in names its project (for the sign-in's billing group) and
  // lets it write files and start subagents without asking.
  const work = join(home, "work");
  mkdirSync(join(work, ".claude"), { recursive: true });
  writeFileSync(join(work, ".claude", "settings.json"), JSON.stringify({ attributionProject: "apollo", permissions: { allow: ["Write", "Task"], defaultMode: "default" } }));
  const env = [`PATH=${process.env.PATH}`, `HOME=${home}`, "TERM=xterm-256color", "DISABLE_AUTOUPDATER=1", "BROWSER=/bin/true", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
    // Metrics every second, not every minute (the rest of the telemetry settings are setup's).
    "OTEL_METRIC_EXPORT_INTERVAL=1000", "OTEL_LOGS_EXPORTER=otlp"];
  tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "50", "-c", work, "env", "-i", ...env, claude);
  // `env` execs Claude Code: the pane's process is Claude Code itself.
  const pid = tmux("display-message", "-p", "-t", session, "#{pane_pid}").trim();
  try {
    // First run: the theme, then the gateway from the settings, trusted (http on loopback).
    await until(/Choose the text style/, "its first-run theme choice");
    keys("Enter");
    await until(/Gateway:\s+http:\/\/localhost:\d+\/agent-budget/, "the gateway from its settings");
    keys("Enter");
    await until(/Trust gateway/, "the trust question");
    keys("Up");
    keys("Enter");
    const [, code] = await until(/Code:\s+([B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4})/, "the sign-in code");
    await until(/Approve this code in agent-budget's dashboard/, "our login notice");
    const waiting = (await admin("GET", "/api/sign-ins")).body.items.find((s) => s.user_code === code);
    assert.equal(waiting.surface, "claude_code");
    assert.equal(waiting.budget, name, "setup --budget offers the budget first");
    // With a cap of its own within the budget ($20 a day of the budget's $50: Claude Code on
    // Opus reserves up to $1.98 a request, a few at once).
    assert.equal((await admin("POST", `/api/sign-ins/${code}/approve`, { budget: name, max_dollars: "20", period: "daily" })).status, 200);
    await until(/Connected to Cloud gateway/, "that it is connected");
    keys("Enter");
    await until(/Security notes/, "its security notes");
    keys("Enter");
    await until(/trust this folder/, "the folder question");
    keys("Down");
    keys("Enter");
    await until(/Cloud gateway/, "its prompt");
    // A turn, charged to the budget through the sign-in.
    keys("say hi", "Enter");
    await until(/Hello from the mock upstream\./, "the mock's answer");
    const budget = (await admin("GET", `/api/budgets/${name}`)).body;
    assert.ok(budget.requests >= 1, "charged to the budget it was approved for");
    // The mock answers two prompts with tool calls: a file written, a subagent started.
    const scripts = [
      { when: "MOCK-WRITE-1", tool_use: { name: "Write", input: { file_path: join(work, "hello.txt"), content: "one\ntwo\nthree\n" } } },
      { when: "MOCK-TASK-1", tool_use: { name: "Task", input: { description: "Look around", prompt: "List what is here", subagent_type: "general-purpose" } } },
    ];
    await fetch(`${MOCK}/_mock/script`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(scripts) });
    keys("please MOCK-WRITE-1", "Enter");
    await until(/Wrote 3 lines to hello\.txt/, "the file written");
    // Its metrics reach the proxy (in protobuf, as setup configured) and the session shows
    // the lines it added.
    const sessionOf = async () => (await admin("GET", `/api/budgets/${name}/sessions`)).body.items[0];
    await eventually(async () => (await sessionOf())?.activity?.lines_added === 4, "the session's lines added");
    keys("please MOCK-TASK-1", "Enter");
    await until(/Agent\(Look around\)/, "the subagent started");
    await eventually(async () => (await sessionOf()).agents.some((a) => a.agent_id), "the subagent's share of the session");
    const records = (await admin("GET", `/api/budgets/${name}/usage`)).body.items;
    assert.equal(new Set(records.map((r) => r.session)).size, 1, "one session");
    assert.ok(records.some((r) => r.agent_id !== null), "the subagent's requests carry its id");
    // The project's setting names the project of every request, and never reaches the upstream.
    assert.ok(records.every((r) => r.project === "apollo"), JSON.stringify(records.map((r) => r.project)));
    const projects = (await admin("GET", `/api/budgets/${name}/projects`)).body.items;
    assert.deepEqual(projects.map((p) => [p.project, p.period_requests]), [["apollo", records.length]]);
    const seen = (await (await fetch(`${MOCK}/_mock/stats`)).json()).seen.filter((s) => s.path === "/v1/messages");
    assert.ok(seen.every((s) => !s.body.includes("apollo")), "tags are taken out before the upstream");
    keys("/usage");
    keys("Enter");
    // The fullest of its scopes: its own $20 cap, which its spend fills faster than the budget's $50.
    const [, used, spent, cap] = await until(/(\d+)% used[\s\S]*\$(\d+\.\d\d) \/ \$(\d+\.\d\d) spent today · Resets/, "the spend limit in /usage");
    assert.deepEqual([used, spent, cap], ["0", "0.00", "20.00"]);
    keys("Escape");
    await gone(/Esc to close/, "/usage");
    // Past 75 % and 95 % of the cap (spent through a key of the same budget), the next turn's
    // headers say so and Claude Code shows its notice with the budget's percent and reset.
    const spender = (await admin("POST", `/api/budgets/${name}/keys`, { name: "spender" })).body.key;
    const spend = async (inputTokens) => {
      const r = await fetch(`${PROXY}/v1/messages`, {
        method: "POST",
        headers: { "x-api-key": spender, "anthropic-version": "2023-06-01", "content-type": "application/json",
          "x-mock": JSON.stringify({ usage: { input_tokens: inputTokens, output_tokens: 0 } }) },
        body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 1, messages: [{ role: "user", content: "x" }] }),
      });
      assert.equal(r.status, 200, await r.text());
    };
    await spend(13_500_000); // $40.50 of $50 at Sonnet's $3 per million input tokens
    keys("say hi again", "Enter");
    await until(/You've used 81% of your usage credits · resets 12am \(UTC\)/, "the notice past 75 %");
    // A notice is dropped while one of its kind is still up: the next turn waits for it to go.
    await gone(/You've used 81%/, "the first notice");
    await spend(2_500_000); // $48.00
    keys("and once more", "Enter");
    await until(/You've used 96% of your usage credits · resets 12am \(UTC\)/, "the notice past 95 %");
    // Revoked in the dashboard: the next turn says to sign in again, at once.
    const keysOf = (await admin("GET", `/api/budgets/${name}/keys`)).body.items;
    const signIn = keysOf.find((k) => k.kind === "sign_in");
    assert.equal((await admin("DELETE", `/api/budgets/${name}/keys/${signIn.id}`)).status, 204);
    keys("hello again", "Enter");
    await until(/Please run \/login[\s\S]*unknown, revoked or expired/, "that it must sign in again");
  } finally {
    try { tmux("kill-session", "-t", session); } catch { /* gone already */ }
    // Claude Code writes its files as it exits: its home goes once the process is gone.
    const end = Date.now() + 30_000;
    while (existsSync(`/proc/${pid}`) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    rmSync(home, { recursive: true, force: true });
  }
});
