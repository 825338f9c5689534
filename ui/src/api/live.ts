// Live updates: core events from the server (SSE in a browser; the desktop app will deliver
// the same events as Tauri events). Pages reload what they show, coalesced, when one arrives.
import type { CoreEvent } from "../bindings/CoreEvent";

export type LiveEvent = CoreEvent | { type: "lagged" };

const KINDS = ["usage_recorded", "request_blocked", "alert_raised", "budget_created", "budget_changed", "budget_deleted", "pricing_changed", "lagged"];

/** Subscribes to core events (Tauri events in the app, SSE in a browser); returns the
 *  unsubscribe function. */
export function subscribe(onEvent: (e: LiveEvent) => void, url = "/agent-budget/api/events"): () => void {
  if (typeof window !== "undefined" && window.__TAURI_INTERNALS__) {
    let stop = () => {};
    let stopped = false;
    import("./tauri").then(({ onCoreEvent }) => onCoreEvent(onEvent)).then((s) => (stopped ? s() : (stop = s)));
    return () => {
      stopped = true;
      stop();
    };
  }
  if (typeof EventSource === "undefined") return () => {};
  const source = new EventSource(url);
  for (const kind of KINDS) {
    source.addEventListener(kind, (m) => {
      try {
        onEvent(kind === "lagged" ? { type: "lagged" } : (JSON.parse((m as MessageEvent).data) as CoreEvent));
      } catch {
        /* a malformed event is ignored; the next one refreshes */
      }
    });
  }
  return () => source.close();
}

/** Runs `reload` once per burst of calls: at most every `ms`, and once more after the last. */
export function coalesce(reload: () => void, ms = 250, timers = { setTimeout, clearTimeout }) {
  let pending: ReturnType<typeof setTimeout> | null = null;
  let again = false;
  return () => {
    if (pending) {
      again = true;
      return;
    }
    reload();
    const tick = () => {
      if (again) {
        again = false;
        reload();
        pending = timers.setTimeout(tick, ms);
      } else {
        pending = null;
      }
    };
    pending = timers.setTimeout(tick, ms);
  };
}
