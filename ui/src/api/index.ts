// The one typed API of the dashboard, over two transports: HTTP (fetch, in a browser) and
// Tauri commands (inside the desktop app). Pages call `api.*`; only transports know how.
import type { AlertView } from "../bindings/AlertView";
import type { BudgetDetail } from "../bindings/BudgetDetail";
import type { BudgetPatch } from "../bindings/BudgetPatch";
import type { BudgetView } from "../bindings/BudgetView";
import type { DesktopStatus } from "../bindings/DesktopStatus";
import type { Items } from "../bindings/Items";
import type { NewBudget } from "../bindings/NewBudget";
import type { PriceEntry } from "../bindings/PriceEntry";
import type { PricingTable } from "../bindings/PricingTable";
import type { KeyCreated } from "../bindings/KeyCreated";
import type { KeyView } from "../bindings/KeyView";
import type { NewKey } from "../bindings/NewKey";
import type { NewUpstreamKey } from "../bindings/NewUpstreamKey";
import type { UpstreamKeyView } from "../bindings/UpstreamKeyView";
import type { SessionPage } from "../bindings/SessionPage";
import type { Settings } from "../bindings/Settings";
import type { SpendSeries } from "../bindings/SpendSeries";
import type { Stats } from "../bindings/Stats";
import type { UsagePage } from "../bindings/UsagePage";
import type { WebhookTest } from "../bindings/WebhookTest";

/** Every operation, with its arguments. Command names double as Tauri command names. */
export type Op =
  | { name: "list_budgets" }
  | { name: "get_budget"; id: string }
  | { name: "create_budget"; input: NewBudget }
  | { name: "patch_budget"; id: string; patch: BudgetPatch }
  | { name: "delete_budget"; id: string }
  | { name: "usage"; id: string; limit: number; offset: number }
  | { name: "sessions"; id: string; limit: number; offset: number }
  | { name: "list_keys"; id: string }
  | { name: "create_key"; id: string; input: NewKey }
  | { name: "revoke_key"; id: string; keyId: string }
  | { name: "alerts"; limit: number; budget?: string }
  | { name: "pricing" }
  | { name: "put_price"; entry: PriceEntry }
  | { name: "stats" }
  | { name: "spend"; days: number }
  | { name: "settings" }
  | { name: "upstream_key" }
  | { name: "set_upstream_key"; input: NewUpstreamKey }
  | { name: "delete_upstream_key" }
  | { name: "test_webhook"; id: string };

/** An error from either transport: `{ type, message }` plus the HTTP status where there is one. */
export class ApiError extends Error {
  constructor(public kind: string, message: string, public status = 0) {
    super(message);
  }
  /** The field a validation message names (`field 'max_dollars' …`), for inline errors. */
  get field(): string | null {
    return /field '([a-z_.]+)/.exec(this.message)?.[1]?.split(".")[0] ?? null;
  }
}

export interface Transport {
  call<T>(op: Op): Promise<T>;
}

const enc = encodeURIComponent;

/** Method, path and body of each operation on the REST API. */
export function route(op: Op): [string, string, unknown?] {
  switch (op.name) {
    case "list_budgets": return ["GET", "/api/budgets"];
    case "get_budget": return ["GET", `/api/budgets/${enc(op.id)}`];
    case "create_budget": return ["POST", "/api/budgets", op.input];
    case "patch_budget": return ["PATCH", `/api/budgets/${enc(op.id)}`, op.patch];
    case "delete_budget": return ["DELETE", `/api/budgets/${enc(op.id)}`];
    case "usage": return ["GET", `/api/budgets/${enc(op.id)}/usage?limit=${op.limit}&offset=${op.offset}`];
    case "list_keys": return ["GET", `/api/budgets/${enc(op.id)}/keys`];
    case "create_key": return ["POST", `/api/budgets/${enc(op.id)}/keys`, op.input];
    case "revoke_key": return ["DELETE", `/api/budgets/${enc(op.id)}/keys/${enc(op.keyId)}`];
    case "sessions": return ["GET", `/api/budgets/${enc(op.id)}/sessions?limit=${op.limit}&offset=${op.offset}`];
    case "alerts": return ["GET", `/api/alerts?limit=${op.limit}${op.budget ? `&budget=${enc(op.budget)}` : ""}`];
    case "pricing": return ["GET", "/api/pricing"];
    case "put_price": return ["PUT", "/api/pricing", op.entry];
    case "stats": return ["GET", "/api/stats"];
    case "spend": return ["GET", `/api/spend?days=${op.days}`];
    case "settings": return ["GET", "/api/settings"];
    case "upstream_key": return ["GET", "/api/settings/upstream-key"];
    case "set_upstream_key": return ["PUT", "/api/settings/upstream-key", op.input];
    case "delete_upstream_key": return ["DELETE", "/api/settings/upstream-key"];
    case "test_webhook": return ["POST", `/api/budgets/${enc(op.id)}/test-webhook`];
  }
}

/** Told when the server no longer knows this browser (401: signed out, or restarted), so the
 *  app can show its sign-in page instead of errors on every page. */
export const session = { onSignedOut: () => {} };

export function httpTransport(base: string, fetchFn: typeof fetch = fetch): Transport {
  return {
    async call<T>(op: Op): Promise<T> {
      const [method, path, body] = route(op);
      let r: Response;
      try {
        r = await fetchFn(base + path, {
          method,
          headers: body === undefined ? {} : { "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        throw new ApiError("network_error", `agent-budget is not reachable (${String(e)})`);
      }
      const text = await r.text();
      const json = text ? JSON.parse(text) : null;
      if (r.status === 401) session.onSignedOut();
      if (!r.ok) throw new ApiError(json?.error?.type ?? "api_error", json?.error?.message ?? r.statusText, r.status);
      return json as T;
    },
  };
}

/** Inside the desktop app: one Tauri command per operation; errors arrive as `{ type, message }`. */
export function tauriTransport(invoke: (cmd: string, args: Record<string, unknown>) => Promise<unknown>): Transport {
  return {
    async call<T>(op: Op): Promise<T> {
      const { name, ...args } = op;
      try {
        return (await invoke(name, args)) as T;
      } catch (e) {
        const err = e as { type?: string; message?: string };
        throw new ApiError(err?.type ?? "api_error", err?.message ?? String(e));
      }
    },
  };
}

export function makeApi(t: Transport) {
  return {
    budgets: () => t.call<Items<BudgetView>>({ name: "list_budgets" }).then((r) => r.items),
    budget: (id: string) => t.call<BudgetDetail>({ name: "get_budget", id }),
    createBudget: (input: NewBudget) => t.call<BudgetView>({ name: "create_budget", input }),
    patchBudget: (id: string, patch: BudgetPatch) => t.call<BudgetView>({ name: "patch_budget", id, patch }),
    deleteBudget: (id: string) => t.call<null>({ name: "delete_budget", id }),
    usage: (id: string, limit: number, offset: number) => t.call<UsagePage>({ name: "usage", id, limit, offset }),
    sessions: (id: string, limit: number, offset: number) => t.call<SessionPage>({ name: "sessions", id, limit, offset }),
    keys: (id: string) => t.call<Items<KeyView>>({ name: "list_keys", id }).then((r) => r.items),
    createKey: (id: string, name: string) => t.call<KeyCreated>({ name: "create_key", id, input: { name } }),
    revokeKey: (id: string, keyId: number) => t.call<null>({ name: "revoke_key", id, keyId: String(keyId) }),
    alerts: (limit = 50, budget?: string) => t.call<Items<AlertView>>({ name: "alerts", limit, budget }).then((r) => r.items),
    pricing: () => t.call<PricingTable>({ name: "pricing" }),
    putPrice: (entry: PriceEntry) => t.call<PriceEntry>({ name: "put_price", entry }),
    stats: () => t.call<Stats>({ name: "stats" }),
    spend: (days = 30) => t.call<SpendSeries>({ name: "spend", days }),
    settings: () => t.call<Settings>({ name: "settings" }),
    upstreamKey: () => t.call<UpstreamKeyView>({ name: "upstream_key" }),
    setUpstreamKey: (key: string) => t.call<UpstreamKeyView>({ name: "set_upstream_key", input: { key } }),
    deleteUpstreamKey: () => t.call<null>({ name: "delete_upstream_key" }),
    testWebhook: (id: string) => t.call<WebhookTest>({ name: "test_webhook", id }),
  };
}

export type Api = ReturnType<typeof makeApi>;

declare global {
  interface Window {
    __TAURI_INTERNALS__?: { invoke: (cmd: string, args: Record<string, unknown>) => Promise<unknown> };
  }
}

/** The desktop app's own settings (proxy start, launch at login, notifications); null in a browser. */
export function desktopApi() {
  if (typeof window === "undefined" || !window.__TAURI_INTERNALS__) return null;
  const t = tauriTransport((c, a) => import("./tauri").then((m) => m.invoke(c, a)));
  const call = (name: string, args: Record<string, unknown> = {}) => t.call<DesktopStatus>({ name, ...args } as unknown as Op);
  return {
    status: () => call("desktop_status"),
    restartProxy: (port: number) => call("restart_proxy", { port }),
    setAutostart: (enabled: boolean) => call("set_autostart", { enabled }),
    setNotificationsMuted: (muted: boolean) => call("set_notifications_muted", { muted }),
    setTeamDatabase: (url: string | null) => call("set_team_database", { url }),
    /** Opens a path of the server (a CSV export) in the default browser, signed in. */
    openInBrowser: (path: string) => t.call<null>({ name: "open_in_browser", path } as unknown as Op),
  };
}

/** The transport for where the page runs: Tauri commands in the desktop app, else HTTP. */
export function defaultApi(): Api {
  const inTauri = typeof window !== "undefined" && !!window.__TAURI_INTERNALS__;
  if (!inTauri) return makeApi(httpTransport("/agent-budget"));
  const invoke = (c: string, a: Record<string, unknown>) => import("./tauri").then((t) => t.invoke(c, a));
  return makeApi(tauriTransport(invoke));
}
