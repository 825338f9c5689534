import { describe, expect, test } from "vitest";
import { ApiError, httpTransport, makeApi, session, tauriTransport } from "./index";

function fakeFetch(status: number, body: unknown, seen: { url?: string; init?: RequestInit }) {
  return (async (url: string, init?: RequestInit) => {
    seen.url = url;
    seen.init = init;
    return new Response(body === null ? null : JSON.stringify(body), { status });
  }) as unknown as typeof fetch;
}

describe("http transport", () => {
  test("maps operations to REST calls", async () => {
    const seen: { url?: string; init?: RequestInit } = {};
    const api = makeApi(httpTransport("/agent-budget", fakeFetch(201, { id: 3, name: "team" }, seen)));
    const b = await api.createBudget({ name: "team", max_dollars: "5" });
    expect(b.name).toBe("team");
    expect(seen.url).toBe("/agent-budget/api/budgets");
    expect(seen.init?.method).toBe("POST");
    expect(JSON.parse(String(seen.init?.body))).toEqual({ name: "team", max_dollars: "5" });
    await api.usage("a b", 50, 100);
    expect(seen.url).toBe("/agent-budget/api/budgets/a%20b/usage?limit=50&offset=100");
    await api.sessions("team", 20, 40);
    expect(seen.url).toBe("/agent-budget/api/budgets/team/sessions?limit=20&offset=40");
  });
  test("turns error bodies into typed errors naming the field", async () => {
    const body = { type: "error", error: { type: "invalid_request_error", message: "field 'max_dollars' must be greater than 0" } };
    const api = makeApi(httpTransport("", fakeFetch(400, body, {})));
    const err = await api.createBudget({ name: "x", max_dollars: "0" }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect([err.kind, err.status, err.field]).toEqual(["invalid_request_error", 400, "max_dollars"]);
  });
  test("a 401 tells the app the browser is signed out", async () => {
    let told = 0;
    session.onSignedOut = () => told++;
    const body = { type: "error", error: { type: "authentication_error", message: "agent-budget: this API needs the admin token" } };
    const err = await makeApi(httpTransport("", fakeFetch(401, body, {}))).stats().catch((e) => e);
    expect([err.kind, err.status, told]).toEqual(["authentication_error", 401, 1]);
    await makeApi(httpTransport("", fakeFetch(200, {}, {}))).stats();
    expect(told).toBe(1);
    session.onSignedOut = () => {};
  });
  test("DELETE's empty 204 is fine", async () => {
    const api = makeApi(httpTransport("", fakeFetch(204, null, {})));
    await expect(api.deleteBudget("x")).resolves.toBeNull();
  });
});

describe("tauri transport", () => {
  test("sends each operation to the in-process REST API as method, path and body", async () => {
    const calls: [string, Record<string, unknown>][] = [];
    const api = makeApi(tauriTransport(async (cmd, args) => {
      calls.push([cmd, args]);
      return args.path === "/api/budgets" ? { items: [{ name: "default" }] } : null;
    }));
    expect((await api.budgets())[0].name).toBe("default");
    await api.patchBudget("team a", { period: "daily" });
    expect(calls).toEqual([
      ["api", { method: "GET", path: "/api/budgets", body: null }],
      ["api", { method: "PATCH", path: "/api/budgets/team%20a", body: { period: "daily" } }],
    ]);
  });
  test("the API's errors become ApiErrors", async () => {
    const api = makeApi(tauriTransport(async () => { throw { type: "not_found_error", message: "budget 'x' does not exist" }; }));
    const err = await api.budget("x").catch((e) => e);
    expect([err.kind, err.message]).toEqual(["not_found_error", "budget 'x' does not exist"]);
  });
});
