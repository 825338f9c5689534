// The dashboard end to end in a real browser (Debian's Chromium driven by playwright-core)
// against the real `agent-budget serve` and the mock upstream. Saves a screenshot of every
// page in both themes to docs/screenshots/. Run by scripts/test.sh after the binaries are built.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = (name) => join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "debug", name);
const shots = join(root, "docs", "screenshots");

function start(cmd, args, stream, pattern) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let text = "";
    child[stream].on("data", (d) => {
      text += d;
      const m = pattern.exec(text);
      if (m) resolve({ child, port: Number(m[1]), link: m[2] });
    });
    child.on("exit", (code) => reject(new Error(`${cmd} exited with ${code}: ${text}`)));
  });
}

test("dashboard end to end", { timeout: 180_000 }, async (t) => {
  execFileSync("cargo", ["build", "--quiet", "--bin", "agent-budget", "--bin", "mock-upstream", "--workspace"], { cwd: root, stdio: "inherit" });
  const mock = await start(bin("mock-upstream"), ["0"], "stdout", /listening (\d+)/);
  const data = mkdtempSync(join(tmpdir(), "agent-budget-e2e-"));
  const keyFile = join(data, "upstream-key");
  writeFileSync(keyFile, "sk-ant-e2e-real", { mode: 0o600 });
  const proxy = await start(bin("agent-budget"), ["serve", "--port", "0", "--data-dir", data, "--upstream", `http://127.0.0.1:${mock.port}`, "--upstream-key-file", keyFile], "stderr", /ready port=(\d+)[\s\S]*dashboard: open (http:\/\/\S+\/sign-in\?code=[0-9a-f]+)/);
  const base = `http://127.0.0.1:${proxy.port}/agent-budget`;
  // The admin API takes the token the server wrote on first start; the browser signs in below.
  const token = readFileSync(join(data, "admin-token"), "utf8").trim();
  const adminFetch = (url, init = {}) => fetch(url, { ...init, headers: { ...(init.headers ?? {}), authorization: `Bearer ${token}` } });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(async () => {
    await browser.close();
    proxy.child.kill();
    mock.child.kill();
    rmSync(data, { recursive: true, force: true });
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: `http://127.0.0.1:${proxy.port}` });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Anything the server's Content-Security-Policy blocked (scripts, styles, images).
  page.on("console", (m) => { if (m.type() === "error" && /Content Security Policy/.test(m.text())) errors.push(m.text()); });

  // A proxied request costing `dollars` (Haiku 4.5 output at the given $/MTok), tagged with `budget`.
  async function spend(budget, dollars, outputPerMtok = 5) {
    const tokens = Math.round((dollars * 1e6) / outputPerMtok);
    const r = await fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "sk-e2e", "x-budget-id": budget, "x-mock": JSON.stringify({ usage: { input_tokens: 0, output_tokens: tokens } }) },
      body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(r.status, 200);
    await r.text();
  }

  await t.test("a browser without a session is asked to sign in, then the link signs it in", async () => {
    await page.goto(`${base}/`);
    await page.getByRole("heading", { name: "Sign in to agent-budget" }).waitFor();
    await page.getByText("agent-budget dashboard").first().waitFor();
    await page.screenshot({ path: join(shots, "sign-in.png") });
    await page.getByLabel("Admin token").fill("not-the-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "not the admin token" }).waitFor();
    // The one-time link `serve` printed (on this host, so the cookie is this host's).
    await page.goto(proxy.link.replace("localhost", "127.0.0.1"));
    await page.waitForURL(`${base}/`);
    const again = await page.request.get(proxy.link.replace("localhost", "127.0.0.1"), { maxRedirects: 0 });
    assert.equal(again.status(), 401, "a link works once");
  });

  await t.test("first run explains how to start", async () => {
    await page.goto(`${base}/`);
    await page.getByRole("heading", { name: "Get started in three steps" }).waitFor();
    assert.equal(await page.getByTestId("team-figures").count(), 0, "alone, the figures are this proxy's");
  });

  await t.test("keyboard-only create form with inline validation, client and server side", async () => {
    await page.goto(`${base}/#/new`);
    await page.getByRole("heading", { name: "New budget" }).waitFor();
    await page.locator("body").focus();
    // Tab from the top of the page to the first field.
    for (let i = 0; i < 20 && !(await page.evaluate(() => document.activeElement?.getAttribute("name") === "name")); i++) await page.keyboard.press("Tab");
    await page.keyboard.type("e2e-team");
    await page.keyboard.press("Tab");
    await page.keyboard.type("abc");
    await page.keyboard.press("Enter");
    await page.getByText("A dollar amount such as 25 or 12.50.").waitFor();
    await page.keyboard.press("Shift+Tab");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Control+A");
    await page.keyboard.type("1");
    for (let i = 0; i < 25 && !(await page.evaluate(() => document.activeElement?.getAttribute("name") === "thresholds")); i++) await page.keyboard.press("Tab");
    await page.keyboard.press("Control+A");
    await page.keyboard.type("50, 500");
    await page.keyboard.press("Enter");
    // The server's message for its field appears beside that field.
    await page.locator("#thr-err").getByText("field 'thresholds'").waitFor();
    await page.keyboard.press("Control+A");
    await page.keyboard.type("50, 80, 100");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Budget e2e-team" }).waitFor();
  });

  await t.test("edit a budget", async () => {
    await page.getByRole("link", { name: "Edit" }).click();
    const cap = page.getByLabel("Cap in dollars");
    await page.waitForFunction(() => document.querySelector("input[name=max_dollars]")?.value === "1");
    await cap.fill("2");
    await page.getByLabel("Period").selectOption("daily");
    // The route parsed again (the same form under another address) must not load the budget
    // again over what was typed: a load racing the typing once saved the old cap.
    const loads = [];
    const onRequest = (r) => r.method() === "GET" && r.url().endsWith("/api/budgets/e2e-team") && loads.push(r.url());
    page.on("request", onRequest);
    await page.evaluate(() => new Promise((done) => {
      addEventListener("hashchange", () => requestAnimationFrame(() => setTimeout(done)), { once: true });
      location.hash = "#/budgets/e2e-team/edit/";
    }));
    page.off("request", onRequest);
    assert.deepEqual(loads, []);
    assert.equal(await cap.inputValue(), "2");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByTestId("spent").waitFor();
    const saved = await (await adminFetch(`${base}/api/budgets/e2e-team`)).json();
    assert.deepEqual([saved.max_dollars, saved.period], ["2", "daily"]);
    await page.getByText("of $2.00").waitFor();
  });

  await t.test("a budget below another: picked in the form, shown in the tree, refused above", async () => {
    await page.goto(`${base}/#/new`);
    await page.getByLabel("Name").fill("e2e-child");
    await page.getByLabel("Parent: a budget above this one").selectOption("e2e-team");
    await page.getByRole("button", { name: "Create budget" }).click(); // no cap of its own: its parent's holds it
    await page.getByRole("heading", { name: "Budget e2e-child" }).waitFor();
    await page.getByTestId("tree").getByText("Below e2e-team: its requests must fit there too.").waitFor();
    // Its parent has $2 a day: a request whose worst case is more is refused, naming it.
    const r = await fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "sk-e2e", "x-budget-id": "e2e-child" },
      body: JSON.stringify({ model: "claude-opus-4-7", max_tokens: 100000, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(r.status, 429);
    assert.match((await r.json()).error.message, /^agent-budget: budget 'e2e-team' \(above 'e2e-child'\) would exceed its daily cap/);
    await page.goto(`${base}/#/`);
    await page.getByTestId("parent-e2e-child").getByText("↳ below e2e-team").waitFor();
    await page.goto(`${base}/#/budgets/e2e-team`);
    await page.getByTestId("tree").getByText("Above e2e-child: its spend includes theirs.").waitFor();
  });

  await t.test("spend, chart and alerts update live without reload", async () => {
    await page.goto(`${base}/`);
    const card = page.getByTestId("budget-e2e-team");
    await card.getByText("$0.00").waitFor();
    await page.evaluate(() => (window.__marker = "no reload"));
    await spend("e2e-team", 1.2);
    await card.locator(".big").getByText("$1.20").waitFor();
    await page.getByTestId("recent-alerts").getByText("reached 50%").waitFor();
    await page.getByTestId("today").getByText("$1.20").waitFor();
    assert.equal(await page.evaluate(() => window.__marker), "no reload");
    assert.ok(await page.locator("canvas").count() > 0, "the chart is drawn");
  });

  await t.test("page through usage", async () => {
    await Promise.all(Array.from({ length: 54 }, () => spend("e2e-team", 0.001)));
    await page.goto(`${base}/#/budgets/e2e-team`);
    await page.getByTestId("page").getByText("1–50 of 55").waitFor();
    await page.getByRole("button", { name: "Older" }).click();
    await page.getByTestId("page").getByText("51–55 of 55").waitFor();
    assert.equal(await page.getByTestId("usage").locator("tbody tr").count(), 5);
  });

  await t.test("an edited price prices the next request", async () => {
    await page.goto(`${base}/#/pricing`);
    await page.getByRole("button", { name: "Edit claude-haiku-4-5" }).click();
    await page.getByLabel("output", { exact: true }).fill("10");
    await page.getByRole("button", { name: "Save prices" }).click();
    await page.getByText("Saved claude-haiku-4-5").waitFor();
    await spend("e2e-team", 0.5, 5); // 100,000 output tokens, now at $10/MTok
    const usage = await (await adminFetch(`${base}/api/budgets/e2e-team/usage?limit=1`)).json();
    assert.equal(usage.items[0].cost_dollars, "1");
  });

  await t.test("a clamping budget: its form, a clamped request, its headroom", async () => {
    await page.goto(`${base}/#/new`);
    await page.getByLabel("Name").fill("e2e-clamp");
    await page.getByLabel("Cap in dollars").fill("0.5");
    await page.getByLabel("When a request's worst case does not fit").selectOption("clamp");
    await page.getByRole("button", { name: "Create budget" }).click();
    await page.getByRole("heading", { name: "Budget e2e-clamp" }).waitFor();
    await page.getByTestId("headroom").getByText("No requests yet").waitFor();
    // Opus 4.8 asking for 32,000 output tokens ($0.80) against a $0.50 cap: forwarded clamped.
    const r = await fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "sk-e2e", "x-budget-id": "e2e-clamp", "x-mock": JSON.stringify({ usage: { input_tokens: 10, output_tokens: 50 } }) },
      body: JSON.stringify({ model: "claude-opus-4-8", max_tokens: 32000, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(r.status, 200);
    const clamped = Number(r.headers.get("x-agent-budget-clamped-max-tokens"));
    assert.ok(clamped >= 1024 && clamped < 32000, `clamped to ${clamped}`);
    await r.text();
    const usage = page.getByTestId("usage");
    await usage.getByText(`clamped to ${clamped.toLocaleString("en-US")}`).waitFor();
    const headroom = page.getByTestId("headroom");
    await headroom.getByText("0 such requests fit now").waitFor();
    await headroom.getByText("Clamp: a request that does not fit gets a lower max_tokens").waitFor();
    const b = await (await adminFetch(`${base}/api/budgets/e2e-clamp`)).json();
    // money() rounds up to the cent.
    await headroom.getByText(`$${(Math.ceil(Number(b.worst_case_dollars) * 100) / 100).toFixed(2)}`).waitFor();
    // The edit form sizes the cap being typed in typical requests.
    await page.getByRole("link", { name: "Edit" }).click();
    await page.getByTestId("cap-fits").getByText("this cap holds 0 at once").waitFor();
    await page.getByLabel("Cap in dollars").fill("5");
    const each = Number(b.worst_case_dollars);
    await page.getByTestId("cap-fits").getByText(`this cap holds ${Math.floor(5 / each)} at once`).waitFor();
    assert.equal(await page.getByLabel("When a request's worst case does not fit").inputValue(), "clamp");
  });

  await t.test("guardrails: sessions, the forecast and the form", async () => {
    await adminFetch(`${base}/api/budgets`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "e2e-guard", max_dollars: "10" }) });
    for (const [session, tokens] of [["build-7", 200000], ["build-7", 100000], ["review-2", 40000]]) {
      const r = await fetch(`${base}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": "sk-e2e", "x-budget-id": "e2e-guard", "x-agent-budget-session": session, "x-mock": JSON.stringify({ usage: { input_tokens: 0, output_tokens: tokens } }) },
        body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
      });
      assert.equal(r.status, 200);
      await r.text();
    }
    await page.goto(`${base}/#/budgets/e2e-guard`);
    const sessions = page.getByTestId("sessions");
    // Haiku output at $5/MTok (the price edited above is $10 now): 300,000 tokens = $3.00.
    const row = sessions.locator("tr", { hasText: "build-7" });
    await row.getByText("$3.00").waitFor();
    assert.equal(await sessions.locator("tbody tr").first().locator("code").textContent(), "review-2", "newest first");
    const forecast = page.getByTestId("forecast");
    await forecast.getByText("$3.40").waitFor();
    await forecast.getByText(/cap at ~/).waitFor();
    await page.goto(`${base}/#/`);
    await page.getByTestId("forecast-e2e-guard").getByText(/\$3\.40\/h · cap at ~/).waitFor();
    // The form sets every guardrail.
    await page.goto(`${base}/#/budgets/e2e-guard/edit`);
    await page.getByLabel("Hourly rate: dollars in any 60 minutes").fill("abc");
    await page.getByRole("button", { name: "Save" }).click();
    await page.locator("#hour-err").getByText("A dollar amount").waitFor();
    await page.getByLabel("Hourly rate: dollars in any 60 minutes").fill("4");
    await page.getByLabel("Per-request ceiling in dollars").fill("0.5");
    await page.getByLabel("Dollars per agent session").fill("3.5");
    await page.getByLabel("Allowed models").fill("claude-haiku-4-5, claude-sonnet-4-6");
    await page.getByLabel("Runaway loops").selectOption("block");
    await page.getByLabel("Identical requests").fill("4");
    await page.getByRole("button", { name: "Save" }).click();
    const rails = page.getByTestId("guardrails");
    await rails.getByText("At most $4.00 in any 60 minutes").waitFor();
    await rails.getByText("Only claude-haiku-4-5, claude-sonnet-4-6").waitFor();
    await rails.getByText("Each agent session at most $3.50 per period").waitFor();
    // The sessions table shows each session's spend this period against that cap.
    await page.getByTestId("sessions").locator("tr", { hasText: "build-7" }).getByTestId("session-period").getByText("$3.00").waitFor();
    await rails.getByText("The same request 4 times within 10 minutes is a loop: alert and refuse repeats").waitFor();
    const b = await (await adminFetch(`${base}/api/budgets/e2e-guard`)).json();
    assert.deepEqual([b.max_dollars_per_hour, b.max_request_dollars, b.max_session_dollars, b.loop_guard], ["4", "0.5", "3.5", { repeats: 4, minutes: 10, action: "block" }]);
  });

  await t.test("virtual keys: make one with its snippets, use it, revoke it", async () => {
    await page.goto(`${base}/#/budgets/e2e-guard`);
    await page.getByLabel("Key name").fill("e2e-laptop");
    await page.getByRole("button", { name: "Create key" }).click();
    const card = page.getByTestId("new-key");
    await card.getByText("copy it now").waitFor();
    const snippet = await page.getByTestId("key-snippet-Claude Code").textContent();
    const key = /ANTHROPIC_AUTH_TOKEN=(sk-ab-[0-9a-f]{64})/.exec(snippet)?.[1];
    assert.ok(key, snippet);
    const use = () => fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": key },
      body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    });
    const used = page.getByTestId("key-used-e2e-laptop");
    assert.equal(await used.textContent(), "never");
    assert.equal((await use()).status, 200);
    await page.reload();
    await used.waitFor();
    assert.notEqual(await used.textContent(), "never", "the key's last use is listed");
    const seen = (await (await fetch(`http://127.0.0.1:${mock.port}/_mock/stats`)).json()).seen.at(-1);
    assert.equal(seen.headers["x-api-key"], "sk-ant-e2e-real");
    await page.getByTestId("keys").getByText("active").waitFor();
    page.once("dialog", (d) => d.accept());
    await page.getByRole("button", { name: "Revoke e2e-laptop" }).click();
    await page.getByTestId("keys").getByText(/revoked/).waitFor();
    assert.equal((await use()).status, 401);
  });

  await t.test("a key with its own cap: made on the page, charged, shown against its cap", async () => {
    await page.goto(`${base}/#/budgets/e2e-guard`);
    await page.getByLabel("Key name").fill("e2e-alice");
    await page.getByLabel("Its own cap in dollars").fill("1");
    await page.getByLabel("per").selectOption("daily");
    await page.getByRole("button", { name: "Create key" }).click();
    const snippet = await page.getByTestId("key-snippet-Claude Code").textContent();
    const key = /ANTHROPIC_AUTH_TOKEN=(sk-ab-[0-9a-f]{64})/.exec(snippet)?.[1];
    const r = await fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": key, "x-mock": JSON.stringify({ usage: { input_tokens: 0, output_tokens: 25000 } }) },
      body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(r.status, 200);
    await page.reload();
    // Haiku output is $10/MTok here since the price edit above: $0.25.
    await page.getByTestId("key-cap-e2e-alice").getByText("$0.25 of $1.00 daily").waitFor();
    // Changed in place while the key is in use: its spend counts against the new cap.
    await page.getByRole("button", { name: "Change the cap of e2e-alice" }).click();
    const cell = page.getByTestId("key-cap-e2e-alice");
    await cell.getByLabel("Its own cap in dollars").fill("0.4");
    await cell.getByLabel("per").selectOption("weekly");
    await cell.getByRole("button", { name: "Save cap" }).click();
    await cell.getByText("$0.25 of $0.40 weekly").waitFor();
    const over = await fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": key },
      body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 20000, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(over.status, 429, "up to $0.20 more does not fit the $0.15 left");
    assert.match((await over.json()).error.message, /key 'e2e-alice' would exceed its weekly cap/);
  });

  await t.test("Settings shows the real key by its last 4 only, and where it comes from", async () => {
    await page.goto(`${base}/#/settings`);
    const shown = page.getByTestId("upstream-key");
    await shown.getByText("…real").waitFor();
    assert.match(await shown.textContent(), /from --upstream-key-file/);
    assert.ok(!(await page.content()).includes("sk-ant-e2e-real"));
    assert.equal(await page.locator("input[name=upstream_key]").count(), 0, "a key given by file is not edited here");
  });

  await t.test("copy a setup snippet", async () => {
    await page.goto(`${base}/#/setup`);
    await page.getByLabel("Budget").selectOption("e2e-team");
    await page.getByRole("tab", { name: "Python SDK" }).click();
    await page.getByRole("button", { name: "Copy Python SDK snippet", exact: true }).click();
    await page.getByRole("button", { name: "Copied" }).waitFor();
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    assert.match(clip, /base_url="http:\/\/localhost:\d+\/agent-budget"/);
    assert.match(clip, /"X-Budget-Id": "e2e-team"/);
  });

  await t.test("Setup makes a virtual key for the chosen budget and its snippets carry it", async () => {
    const made = await adminFetch(`${base}/api/budgets`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "e2e-setup", max_dollars: "5" }) });
    assert.equal(made.status, 201);
    await page.goto(`${base}/#/setup`);
    await page.reload(); // the page is open from the test before: load the new budget
    await page.getByLabel("Budget").selectOption("e2e-setup");
    assert.match(await page.getByTestId("real-key").textContent(), /ending in …real, from --upstream-key-file/);
    const snippet = page.getByTestId("setup-key-snippet-Claude Code");
    assert.match(await snippet.textContent(), /ANTHROPIC_AUTH_TOKEN=sk-ab-…/);
    await page.getByLabel("Key name").fill("setup-laptop");
    await page.getByRole("button", { name: "Create a key for e2e-setup" }).click();
    await page.getByTestId("setup-new-key").waitFor();
    const key = /ANTHROPIC_AUTH_TOKEN=(sk-ab-[0-9a-f]{64})/.exec(await snippet.textContent())?.[1];
    assert.ok(key, "the snippet carries the new key");
    assert.match(await snippet.textContent(), /CLAUDE_CODE_USE_GATEWAY=1/, "Claude Code first, in gateway mode");
    assert.match(await page.getByTestId("setup-sign-in").textContent(), /agent-budget claude-code setup --budget e2e-setup --port \d+/);
    // One client at a time: Python's way replaces Claude Code's.
    await page.getByRole("tab", { name: "Python SDK" }).click();
    assert.match(await page.getByTestId("setup-key-snippet-Python SDK").textContent(), new RegExp(`api_key="${key}"`));
    assert.equal(await page.getByTestId("setup-key-snippet-Claude Code").count(), 0);
    await page.getByRole("tab", { name: "Claude Code" }).click();
    const requests = async () => (await (await adminFetch(`${base}/api/budgets/e2e-setup`)).json()).requests;
    assert.equal(await requests(), 0);
    const r = await fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": key },
      body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(r.status, 200);
    assert.equal(await requests(), 1, "charged to the chosen budget");
    // Another budget: the key is not its, so the snippets go back to the placeholder.
    await page.getByLabel("Budget").selectOption("default");
    assert.match(await snippet.textContent(), /ANTHROPIC_AUTH_TOKEN=sk-ab-…/);
  });

  await t.test("Claude Code's sign-in: the code is approved on the device page for a budget", async () => {
    const form = (path, fields) => fetch(`${base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", "user-agent": "claude-code/2.1.328" },
      body: new URLSearchParams(fields).toString(),
    });
    const code = await (await form("/oauth/device_authorization", { surface: "claude_code" })).json();
    // A browser without the dashboard's session is asked to sign in, never shown the buttons.
    const stranger = await (await browser.newContext()).newPage();
    await stranger.goto(code.verification_uri_complete);
    await stranger.getByRole("button", { name: "Sign in" }).waitFor();
    assert.equal(await stranger.getByRole("button", { name: "Approve" }).count(), 0);
    await stranger.close();
    await page.goto(code.verification_uri_complete); // the dashboard's page, signed in
    const card = page.getByTestId(`sign-in-${code.user_code}`);
    await card.waitFor();
    assert.match(await card.textContent(), /claude_code · claude-code\/2\.1\.328/);
    await page.getByLabel("Budget it spends").selectOption("e2e-setup");
    // A cap of its own within the budget (per developer), weekly.
    await card.getByLabel("Its own cap in dollars").fill("50");
    await card.getByLabel("per").selectOption("weekly");
    await page.screenshot({ path: join(shots, "device-approve.png") });
    await page.getByRole("button", { name: "Approve" }).click();
    await page.getByTestId("sign-in-done").waitFor();
    assert.match(await page.getByTestId("sign-in-done").textContent(), /spends budget 'e2e-setup', up to \$50 a week of it/);
    const token = await (await form("/oauth/token", { grant_type: "urn:ietf:params:oauth:grant-type:device_code", device_code: code.device_code })).json();
    assert.equal(token.token_type, "Bearer");
    const keys = await (await adminFetch(`${base}/api/budgets/e2e-setup/keys`)).json();
    const signIn = keys.items.find((k) => k.kind === "sign_in");
    assert.ok(signIn, "a key of the chosen budget");
    assert.deepEqual([signIn.max_dollars, signIn.period], ["50", "weekly"], "with its own cap");
    await page.goto(`${base}/#/budgets/e2e-setup`);
    await page.getByText("claude_code sign-in").first().waitFor();
    // What the signed-in client then sends: a session with a subagent, naming its project,
    // and its telemetry. The budget page shows the session's work, its agents, the project.
    // (Haiku output is $10/MTok here since the price edit above: each request is $1.00.)
    for (const agent of [null, "agent-9"]) {
      const r = await fetch(`${base}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token.access_token}`, "x-claude-code-session-id": "cc-1",
          ...(agent ? { "x-claude-code-agent-id": agent, "x-claude-code-agent-type": "Explore" } : {}),
          "x-mock": JSON.stringify({ usage: { input_tokens: 0, output_tokens: 100000 } }) },
        body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 10, tags: { project: "apollo" }, messages: [{ role: "user", content: "hi" }] }),
      });
      assert.equal(r.status, 200, await r.text());
    }
    const point = (name, value, type) => ({ name, sum: { aggregationTemporality: 1, dataPoints: [{ asInt: String(value),
      attributes: [{ key: "session.id", value: { stringValue: "cc-1" } }, ...(type ? [{ key: "type", value: { stringValue: type } }] : [])] }] } });
    const otlp = { resourceMetrics: [{ scopeMetrics: [{ metrics: [point("claude_code.lines_of_code.count", 12, "added"),
      point("claude_code.lines_of_code.count", 3, "removed"), point("claude_code.commit.count", 1), point("claude_code.active_time.total", 840, "user")] }] }] };
    const sent = await fetch(`${base}/v1/metrics`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token.access_token}` }, body: JSON.stringify(otlp) });
    assert.equal(sent.status, 200);
    await page.reload();
    const row = page.getByTestId("sessions").locator("tr", { hasText: "cc-1" });
    await row.getByTestId("activity").getByText("+12 −3 lines · 1 commit · 14 min active").waitFor();
    await row.getByText("main + 1 subagent").click();
    await row.getByText("Explore agent-9: $1.00 · 1 req").waitFor();
    const projects = page.getByTestId("projects");
    await projects.locator("tr", { hasText: "apollo" }).getByText("$2.00").first().waitFor();
  });

  await t.test("subscription windows: the panel, live, and a budget that stops at a share", async () => {
    // As Claude Code sends it with a Pro/Max login; the mock answers with the windows.
    const subscriber = (budget, unified) => fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-ant-oat01-e2e-subscriber", "anthropic-beta": "oauth-2025-04-20", ...(budget ? { "x-budget-id": budget } : {}), "x-mock": JSON.stringify({ unified }) },
      body: JSON.stringify({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    });
    let r = await subscriber(null, { "5h-utilization": "0.43" });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("anthropic-ratelimit-unified-5h-utilization"), "0.43", "passed through untouched");
    await r.text();
    await page.goto(`${base}/#/`);
    const panel = page.getByTestId("subscriptions");
    await panel.getByTestId("five_hour-used").getByText("43 %").waitFor();
    await panel.getByTestId("seven_day-used").getByText("12 %").waitFor();
    await panel.getByTestId("five_hour-resets").getByText(/^resets in /).waitFor();
    await page.getByTestId("rate-limits").getByText("49 of 50").first().waitFor();
    // A later answer moves the bar without a reload.
    r = await subscriber(null, { "5h-utilization": "0.62" });
    await r.text();
    await panel.getByTestId("five_hour-used").getByText("62 %").waitFor();
    // The form: a share out of range is refused in place; a valid one is saved and shown.
    await page.goto(`${base}/#/budgets/e2e-guard/edit`);
    await page.getByLabel("Stop at % of the 5-hour window").fill("150");
    await page.getByRole("button", { name: "Save" }).click();
    await page.locator("#win-err").getByText("A percent from 1 to 100").waitFor();
    await page.getByLabel("Stop at % of the 5-hour window").fill("60");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByTestId("window-caps").getByText("Stops at 60 % of a subscription's 5-hour window").waitFor();
    const b = await (await adminFetch(`${base}/api/budgets/e2e-guard`)).json();
    assert.deepEqual(b.max_subscription_utilization, { five_hour: 0.6 });
    // The window is at 62 %: this budget's next subscription request is refused, by name.
    r = await subscriber("e2e-guard", {});
    assert.equal(r.status, 429);
    assert.equal(r.headers.get("x-should-retry"), "false");
    assert.match((await r.json()).error.message, /stops at 60 % of the subscription's 5-hour window/);
  });

  await t.test("screenshots of every page in both themes", async () => {
    mkdirSync(shots, { recursive: true });
    const pages = [["overview", "#/"], ["budget", "#/budgets/e2e-team"], ["new-budget", "#/new"], ["alerts", "#/alerts"], ["pricing", "#/pricing"], ["setup", "#/setup"], ["settings", "#/settings"], ["device", "#/device"]];
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      for (const [name, hash] of pages) {
        await page.goto(`${base}/${hash}`);
        await page.getByRole("heading", { level: 1 }).waitFor();
        await page.waitForLoadState("networkidle").catch(() => {});
        await page.screenshot({ path: join(shots, `${name}-${scheme}.png`), fullPage: true });
      }
    }
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 360, height: 800 });
    await page.goto(`${base}/#/`);
    await page.getByRole("heading", { level: 1 }).waitFor();
    await page.screenshot({ path: join(shots, "overview-360px.png"), fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    assert.equal(overflow, false, "no horizontal scrolling at 360 px");
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await t.test("delete a budget, after the budget below it", async () => {
    const remove = async (name) => {
      await page.goto(`${base}/#/budgets/${name}`);
      await page.getByRole("heading", { name: `Budget ${name}` }).waitFor();
      page.once("dialog", (d) => d.accept());
      await page.getByRole("button", { name: "Delete" }).click();
    };
    await remove("e2e-team");
    await page.getByRole("alert").getByText("has budgets below it ('e2e-child')").waitFor();
    await remove("e2e-child");
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await remove("e2e-team");
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await page.getByTestId("budget-default").waitFor();
    assert.equal(await page.getByTestId("budget-e2e-team").count(), 0);
  });

  await t.test("Setup says where the admin token is, for scripts", async () => {
    await page.goto(`${base}/#/setup`);
    const section = page.getByTestId("admin-api");
    await section.getByText(join(data, "admin-token")).first().waitFor();
    assert.match(await section.innerText(), /Authorization: Bearer \$TOKEN/);
  });

  await t.test("signing out ends the session: the dashboard asks to sign in again", async () => {
    await page.goto(`${base}/#/settings`);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in to agent-budget" }).waitFor();
    const r = await page.request.get(`${base}/api/budgets`);
    assert.equal(r.status(), 401, "the cookie no longer opens the API");
    // The token typed in signs it in again.
    await page.getByLabel("Admin token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Settings", level: 1 }).waitFor();
    assert.equal((await page.request.get(`${base}/api/budgets`)).status(), 200);
  });

  assert.deepEqual(errors, [], "no errors in the page");
});
