// The official TypeScript SDK through the proxy to the mock upstream.
// Needs AGENT_BUDGET_URL and MOCK_URL (tests/sdk/run.sh sets them).
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";

const PROXY = process.env.AGENT_BUDGET_URL;
const MOCK = process.env.MOCK_URL;

/** The admin token goes to the admin API only (never to a proxy route or the mock). */
function adminHeaders(url) {
  const h = { "content-type": "application/json" };
  if (url.includes("/agent-budget/api/")) h.authorization = `Bearer ${process.env.AGENT_BUDGET_ADMIN_TOKEN}`;
  return h;
}

async function call(method, url, body) {
  const r = await fetch(url, {
    method,
    headers: adminHeaders(url),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

beforeEach(() => call("POST", `${MOCK}/_mock/reset`));

let n = 0;
async function budget(cap = "5") {
  const name = `ts-${process.pid}-${n++}`;
  await call("POST", `${PROXY}/api/budgets`, { name, max_dollars: cap, period: "weekly" });
  return name;
}

const client = (name, opts = {}) =>
  new Anthropic({ baseURL: PROXY, apiKey: "sk-ant-test", defaultHeaders: { "X-Budget-Id": name }, ...opts });

test("non-streaming message is forwarded and charged", async () => {
  const name = await budget();
  const msg = await client(name).messages.create(
    { model: "claude-sonnet-4-6", max_tokens: 1024, messages: [{ role: "user", content: "Hello" }] },
    { headers: { "x-mock": JSON.stringify({ usage: { input_tokens: 1000, output_tokens: 200 } }) } },
  );
  assert.equal(msg.content[0].text, "Hello from the mock upstream.");
  const b = await call("GET", `${PROXY}/api/budgets/${name}`);
  assert.equal(b.spent_dollars, "0.006");
  const seen = (await call("GET", `${MOCK}/_mock/stats`)).seen[0];
  assert.equal(seen.headers["x-budget-id"], undefined);
  // Sent as x-api-key or as a bearer token, depending on the SDK version: unchanged either way.
  assert.match(`${seen.headers["x-api-key"] ?? ""} ${seen.headers["authorization"] ?? ""}`, /sk-ant-test/);
});

test("streaming message arrives whole and is charged", async () => {
  const name = await budget();
  const usage = { input_tokens: 100, output_tokens: 40, cache_read_input_tokens: 1000 };
  const stream = client(name).messages.stream(
    { model: "claude-haiku-4-5", max_tokens: 512, messages: [{ role: "user", content: "Hello" }] },
    { headers: { "x-mock": JSON.stringify({ usage, text: "streamed through the proxy" }) } },
  );
  let text = "";
  stream.on("text", (t) => (text += t));
  const final = await stream.finalMessage();
  assert.equal(text, "streamed through the proxy");
  assert.equal(final.usage.output_tokens, 40);
  const rec = (await call("GET", `${PROXY}/api/budgets/${name}/usage`)).items[0];
  assert.equal(rec.stream, true);
  assert.equal(rec.cost_dollars, "0.0004");
});

test("a clamped request is a normal message that stops at max_tokens", async () => {
  const name = await budget("0.30");
  await call("PATCH", `${PROXY}/api/budgets/${name}`, { admission: "clamp" });
  const script = JSON.stringify({ usage: { input_tokens: 10, output_tokens: 50000 }, stop_at_max_tokens: true });
  // Opus 4.8 with 20,000 output tokens reserves $0.50: clamped to what $0.30 allows.
  const { data: msg, response } = await client(name)
    .messages.create({ model: "claude-opus-4-8", max_tokens: 20000, messages: [{ role: "user", content: "Hi" }] }, { headers: { "x-mock": script } })
    .withResponse();
  const n = Number(response.headers.get("x-agent-budget-clamped-max-tokens"));
  assert.ok(n >= 1024 && n < 20000, `clamped to ${n}`);
  assert.equal(msg.stop_reason, "max_tokens");
  assert.equal(msg.usage.output_tokens, n);
  assert.equal(JSON.parse((await call("GET", `${MOCK}/_mock/stats`)).seen[0].body).max_tokens, n);

  // Streaming, as Claude Code calls it.
  await call("PATCH", `${PROXY}/api/budgets/${name}`, { max_dollars: "0.60" });
  const { data: events, response: streamed } = await client(name)
    .messages.create({ model: "claude-opus-4-8", max_tokens: 32000, stream: true, messages: [{ role: "user", content: "Hi" }] }, { headers: { "x-mock": script } })
    .withResponse();
  const m = Number(streamed.headers.get("x-agent-budget-clamped-max-tokens"));
  let stop = null, output = null;
  for await (const e of events) {
    if (e.type === "message_delta") { stop = e.delta.stop_reason; output = e.usage.output_tokens; }
  }
  assert.ok(m >= 1024 && m < 32000, `clamped to ${m}`);
  assert.equal(stop, "max_tokens");
  assert.equal(output, m);
  const records = (await call("GET", `${PROXY}/api/budgets/${name}/usage`)).items;
  assert.deepEqual(records.map((r) => r.clamped_max_tokens), [m, n]);
  assert.ok(Number((await call("GET", `${PROXY}/api/budgets/${name}`)).spent_dollars) <= 0.6);
});

test("a virtual key alone selects the budget and never goes upstream", async () => {
  const name = await budget();
  const made = await call("POST", `${PROXY}/api/budgets/${name}/keys`, { name: "ts" });
  const c = new Anthropic({ baseURL: PROXY, apiKey: made.key });
  const msg = await c.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] });
  assert.equal(msg.content[0].text, "Hello from the mock upstream.");
  const seen = (await call("GET", `${MOCK}/_mock/stats`)).seen[0].headers;
  assert.equal(seen["x-api-key"], "sk-ant-sdk-real");
  assert.ok(!JSON.stringify(seen).includes(made.key));
  assert.equal((await call("GET", `${PROXY}/api/budgets/${name}`)).requests, 1);
});

test("blocked request raises RateLimitError without retry", async () => {
  const name = await budget("0.01");
  await assert.rejects(
    client(name, { maxRetries: 2 }).messages.create({
      model: "claude-sonnet-4-6",
      max_tokens: 20000,
      messages: [{ role: "user", content: "Hi" }],
    }),
    (err) => {
      assert.ok(err instanceof Anthropic.RateLimitError, String(err));
      assert.equal(err.status, 429);
      assert.equal(err.error.error.type, "billing_error");
      assert.match(err.error.error.message, /would exceed its weekly cap/);
      return true;
    },
  );
  assert.equal((await call("GET", `${MOCK}/_mock/stats`)).messages, 0);
  assert.equal((await call("GET", `${PROXY}/api/budgets/${name}`)).blocked, 1);
});

test("streaming blocked request raises too", async () => {
  const name = await budget("0.01");
  const stream = client(name).messages.stream({
    model: "claude-opus-4-8",
    max_tokens: 64000,
    messages: [{ role: "user", content: "Hi" }],
  });
  await assert.rejects(stream.finalMessage(), (err) => err instanceof Anthropic.RateLimitError);
  assert.equal((await call("GET", `${PROXY}/api/budgets/${name}`)).blocked, 1);
});
