// Subscription windows for display: percents, countdowns and the pace forecast, read in the
// zone the server wrote each instant in (as the tray shows them).

import type { WindowView } from "../bindings/WindowView";

/** Whole percent of a window used (utilization is a fraction; above 1 past the limit). */
export function used(w: WindowView | null | undefined): number {
  return Math.round((w?.utilization ?? 0) * 100);
}

/** "1 h 20 min", "45 min", "2 d 3 h"; "0 min" for less than a minute. */
export function duration(ms: number): string {
  const min = Math.max(0, Math.floor(ms / 60_000));
  const d = Math.floor(min / 1440), h = Math.floor((min % 1440) / 60), m = min % 60;
  if (d > 0) return h > 0 ? `${d} d ${h} h` : `${d} d`;
  if (h > 0) return m > 0 ? `${h} h ${m} min` : `${h} h`;
  return `${m} min`;
}

/** "15:40", or "5 Dec 15:40" when not on `today` (YYYY-MM-DD), as written by the server. */
export function clock(at: string, today: string): string {
  const date = at.slice(0, 10), time = at.slice(11, 16);
  if (date === today) return time;
  const d = Number(date.slice(8, 10));
  const month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][Number(date.slice(5, 7)) - 1];
  return `${d} ${month} ${time}`;
}

/** "resets in 2 h 5 min (15:40)"; null without a reset. */
export function resets(w: WindowView, now: Date, today: string): string | null {
  if (!w.resets_at) return null;
  const left = new Date(w.resets_at).getTime() - now.getTime();
  if (left <= 0) return `reset at ${clock(w.resets_at, today)}`;
  return `resets in ${duration(left)} (${clock(w.resets_at, today)})`;
}

/** "at this pace the 5-hour window fills at 14:20, 1 h 20 min before it resets"; null when
 *  there is no pace yet (fewer than two readings a minute apart, or not rising). */
export function pace(name: string, w: WindowView, today: string): string | null {
  if (w.per_hour === null || w.per_hour <= 0) return null;
  if (!w.fills_at) return `at this pace the ${name} window does not fill before it resets`;
  const before = w.resets_at ? new Date(w.resets_at).getTime() - new Date(w.fills_at).getTime() : null;
  const tail = before !== null && before > 0 ? `, ${duration(before)} before it resets` : "";
  return `at this pace the ${name} window fills at ${clock(w.fills_at, today)}${tail}`;
}

/** The bar's colour: warning from 80 %, over at 100 % or when refused. */
export function level(w: WindowView): "" | "warn" | "bad" {
  if (used(w) >= 100 || w.status === "rejected") return "bad";
  if (used(w) >= 80 || w.status === "allowed_warning") return "warn";
  return "";
}
