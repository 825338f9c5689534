// Money and time formatting, in one place. Money arrives as exact decimal strings and is
// never turned into a binary float: rounding is done on the digits.

import type { KeySource } from "../bindings/KeySource";

const SCALE = 12n;

/** Parses an exact decimal string ("24.9123", "-1.5", "25") into picodollars. */
export function picos(s: string): bigint {
  const neg = s.startsWith("-");
  const [int, frac = ""] = (neg ? s.slice(1) : s).split(".");
  const v = BigInt(int || "0") * 10n ** SCALE + BigInt((frac + "0".repeat(12)).slice(0, 12) || "0");
  return neg ? -v : v;
}

/** Dollars for display: cents, rounded up like the server's messages, so spend is never
 *  understated ("$24.92" for 24.911); amounts under a cent keep their significant digits
 *  ("$0.0003"); null (no cap) is "—". */
export function money(s: string | null | undefined): string {
  if (s === null || s === undefined) return "—";
  const v = picos(s);
  const sign = v < 0n ? "-" : "";
  const a = v < 0n ? -v : v;
  const cent = 10n ** 10n;
  if (a !== 0n && a < cent) {
    const digits = (a + 10n ** SCALE).toString().slice(1).replace(/0+$/, "");
    return `${sign}$0.${digits}`;
  }
  const cents = (a + cent - 1n) / cent;
  const whole = (cents / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${sign}$${whole}.${(cents % 100n).toString().padStart(2, "0")}`;
}

/** Percent with at most one decimal ("79.9 %"). */
export function percent(p: number): string {
  return `${Math.round(p * 10) / 10} %`;
}

export function tokens(n: number): string {
  return n.toLocaleString("en-US");
}

/** "2026-11-28T15:04:05+01:00" → "28 Nov 15:04". */
export function when(rfc3339: string | null): string {
  if (!rfc3339) return "—";
  const d = new Date(rfc3339);
  return d.toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** "cap at ~15:40" for a budget's `projected_exhaustion_at`, read in the offset the server
 * wrote it in (the configured zone, as the tray shows it); with the date when it is not
 * `today` (YYYY-MM-DD). Null when there is no projection. */
export function capAt(at: string | null, today: string): string | null {
  if (!at) return null;
  const date = at.slice(0, 10), time = at.slice(11, 16);
  if (date === today) return `cap at ~${time}`;
  const [, m, d] = date.split("-").map(Number);
  return `cap at ~${d} ${MONTHS[m - 1]} ${time}`;
}

/** Today's date (YYYY-MM-DD) where the dashboard runs. */
export function localToday(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())}`;
}

/** A dollar amount for charts only (display, not accounting). */
export function chartDollars(s: string): number {
  return Number(picos(s)) / 1e12;
}

/** Where the real Anthropic key comes from, as the user set it. */
export const KEY_SOURCE: Record<KeySource, string> = { file: "--upstream-key-file", environment: "AGENT_BUDGET_UPSTREAM_KEY", keychain: "the OS keychain" };

/** "45 s", "12 min", "2 h 05 min". */
export function duration(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

const plural = (n: number, one: string, many: string) => `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;

/** What a session's telemetry says it did: "+120 −8 lines · 2 commits · 1 PR · 14 min active". */
export function activity(a: { lines_added: number; lines_removed: number; commits: number; pull_requests: number; active_seconds: number } | null): string {
  if (!a) return "—";
  const parts = [`+${a.lines_added.toLocaleString("en-US")} −${a.lines_removed.toLocaleString("en-US")} lines`];
  if (a.commits) parts.push(plural(a.commits, "commit", "commits"));
  if (a.pull_requests) parts.push(plural(a.pull_requests, "PR", "PRs"));
  parts.push(`${duration(a.active_seconds)} active`);
  return parts.join(" · ");
}
