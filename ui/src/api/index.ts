// The one typed API of the dashboard, over two transports: HTTP (fetch, in a browser) and
// Tauri commands (inside the desktop app). Pages call `api.*`; only transports know how.
import type { SubscriptionView } from "../bindings/SubscriptionView";
import type { RateLimitView } from "../bindings/RateLimitView";
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
import type { KeyPatch } from "../bindings/KeyPatch";
import type { NewKey } from "../bindings/NewKey";
import type { NewUpstreamKey } from "../bindings/NewUpstreamKey";
import type { UpstreamKeyView } from "../bindings/UpstreamKeyView";
import type { SessionPage } from "../bindings/SessionPage";
import type { Settings } from "../bindings/Settings";
import type { SpendSeries } from "../bindings/SpendSeries";
import type { ProjectSpend } from "../bindings/ProjectSpend";
import type { Stats } from "../bindings/Stats";
import type { UsagePage } from "../bindings/UsagePage";
import type { WebhookTest } from "../bindings/WebhookTest";
import type { SignInView } from "../bindings/SignInView";
import type { ApproveSignIn } from "../bindings/ApproveSignIn";

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

/** How a request of the REST API reaches the server: `path` is below `/agent-budget`. */
export interface Transport {
  request<T>(method: string, path: string, body?: unknown): Promise<T>;
}

const enc = encodeURIComponent;

/** Told when the server no longer knows this browser (401: signed out, or restarted), so the
 *  app can show its sign-in page instead of errors on every page. */
export const session = { onSignedOut: () => {} };

export function httpTransport(base: string, fetchFn: typeof fetch = fetch): Transport {
  return {
    async request<T>(method: string, path: string, body?: unknown): Promise<T> {
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

/** Inside the desktop app: the same REST API, served in-process by the `api` command. */
export function tauriTransport(invoke: (cmd: string, args: Record<string, unknown>) => Promise<unknown>): Transport {
  return {
    async request<T>(method: string, path: string, body?: unknown): Promise<T> {
      try {
        return (await invoke("api", { method, path, body: body ?? null })) as T;
      } catch (e) {
        throw commandError(e);
      }
    },
  };
}

function commandError(e: unknown): ApiError {
  const err = e as { type?: string; message?: string };
  return new ApiError(err?.type ?? "api_error", err?.message ?? String(e));
}

/** Every operation of the dashboard: one typed line over the REST route that serves it. */
export function makeApi(t: Transport) {
  const budget = (id: string) => `/api/budgets/${enc(id)}`;
  return {
    budgets: () => t.request<Items<BudgetView>>("GET", "/api/budgets").then((r) => r.items),
    budget: (id: string) => t.request<BudgetDetail>("GET", budget(id)),
    createBudget: (input: NewBudget) => t.request<BudgetView>("POST", "/api/budgets", input),
    patchBudget: (id: string, patch: BudgetPatch) => t.request<BudgetView>("PATCH", budget(id), patch),
    deleteBudget: (id: string) => t.request<null>("DELETE", budget(id)),
    usage: (id: string, limit: number, offset: number) => t.request<UsagePage>("GET", `${budget(id)}/usage?limit=${limit}&offset=${offset}`),
    sessions: (id: string, limit: number, offset: number) => t.request<SessionPage>("GET", `${budget(id)}/sessions?limit=${limit}&offset=${offset}`),
    projects: (id: string) => t.request<Items<ProjectSpend>>("GET", `${budget(id)}/projects`).then((r) => r.items),
    keys: (id: string) => t.request<Items<KeyView>>("GET", `${budget(id)}/keys`).then((r) => r.items),
    createKey: (id: string, name: string, cap?: Pick<NewKey, "max_dollars" | "period">) =>
      t.request<KeyCreated>("POST", `${budget(id)}/keys`, { name, ...cap } satisfies NewKey),
    revokeKey: (id: string, keyId: number) => t.request<null>("DELETE", `${budget(id)}/keys/${keyId}`),
    patchKey: (id: string, keyId: number, patch: KeyPatch) => t.request<KeyView>("PATCH", `${budget(id)}/keys/${keyId}`, patch),
    alerts: (limit = 50, forBudget?: string) =>
      t.request<Items<AlertView>>("GET", `/api/alerts?limit=${limit}${forBudget ? `&budget=${enc(forBudget)}` : ""}`).then((r) => r.items),
    pricing: () => t.request<PricingTable>("GET", "/api/pricing"),
    putPrice: (entry: PriceEntry) => t.request<PriceEntry>("PUT", "/api/pricing", entry),
    stats: () => t.request<Stats>("GET", "/api/stats"),
    subscriptions: () => t.request<Items<SubscriptionView>>("GET", "/api/subscriptions").then((r) => r.items),
    rateLimits: () => t.request<Items<RateLimitView>>("GET", "/api/rate-limits").then((r) => r.items),
    spend: (days = 30) => t.request<SpendSeries>("GET", `/api/spend?days=${days}`),
    settings: () => t.request<Settings>("GET", "/api/settings"),
    upstreamKey: () => t.request<UpstreamKeyView>("GET", "/api/settings/upstream-key"),
    setUpstreamKey: (key: string) => t.request<UpstreamKeyView>("PUT", "/api/settings/upstream-key", { key } satisfies NewUpstreamKey),
    deleteUpstreamKey: () => t.request<null>("DELETE", "/api/settings/upstream-key"),
    testWebhook: (id: string) => t.request<WebhookTest>("POST", `${budget(id)}/test-webhook`),
    signIns: () => t.request<Items<SignInView>>("GET", "/api/sign-ins").then((r) => r.items),
    approveSignIn: (code: string, forBudget: string, cap?: Pick<ApproveSignIn, "max_dollars" | "period">) =>
      t.request<unknown>("POST", `/api/sign-ins/${enc(code)}/approve`, { budget: forBudget, ...cap } satisfies ApproveSignIn),
    denySignIn: (code: string) => t.request<unknown>("POST", `/api/sign-ins/${enc(code)}/deny`),
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
  const call = async <T = DesktopStatus>(name: string, args: Record<string, unknown> = {}) => {
    try {
      return (await import("./tauri").then((m) => m.invoke(name, args))) as T;
    } catch (e) {
      throw commandError(e);
    }
  };
  return {
    status: () => call("desktop_status"),
    restartProxy: (port: number) => call("restart_proxy", { port }),
    setAutostart: (enabled: boolean) => call("set_autostart", { enabled }),
    setNotificationsMuted: (muted: boolean) => call("set_notifications_muted", { muted }),
    setTeamDatabase: (url: string | null) => call("set_team_database", { url }),
    /** Opens a path of the server (a CSV export) in the default browser, signed in. */
    openInBrowser: (path: string) => call<null>("open_in_browser", { path }),
  };
}

/** The transport for where the page runs: Tauri commands in the desktop app, else HTTP. */
export function defaultApi(): Api {
  const inTauri = typeof window !== "undefined" && !!window.__TAURI_INTERNALS__;
  if (!inTauri) return makeApi(httpTransport("/agent-budget"));
  const invoke = (c: string, a: Record<string, unknown>) => import("./tauri").then((t) => t.invoke(c, a));
  return makeApi(tauriTransport(invoke));
}
