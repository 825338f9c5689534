import { describe, expect, test } from "vitest";
import { activity, capAt, duration, localToday, money, picos, percent } from "./format";

describe("capAt", () => {
  test("reads the time in the offset the server wrote, with the date when not today", () => {
    const cases: [string | null, string, string | null][] = [
      ["2026-12-03T15:40:12.345+01:00", "2026-12-03", "cap at ~15:40"],
      ["2026-12-04T09:05:00.000+01:00", "2026-12-03", "cap at ~4 Dec 09:05"],
      ["2027-01-01T00:00:00.000-05:00", "2026-12-31", "cap at ~1 Jan 00:00"],
      [null, "2026-12-03", null],
    ];
    for (const [at, today, want] of cases) expect(capAt(at, today)).toBe(want);
  });
  test("today is the local calendar date", () => {
    expect(localToday(new Date(2026, 2, 9, 23, 59))).toBe("2026-03-09");
  });
});

describe("money", () => {
  test("rounds up to the cent on the digits, never through floats", () => {
    expect(money("24.91")).toBe("$24.91");
    expect(money("24.911")).toBe("$24.92");
    expect(money("0.29")).toBe("$0.29"); // 0.29 × 100 is 28.999999999999996 as a float
    expect(money("1234567.5")).toBe("$1,234,567.50");
    expect(money("25")).toBe("$25.00");
    expect(money("0")).toBe("$0.00");
    expect(money("-1.005")).toBe("-$1.01");
    expect(money("2.254")).toBe("$2.26");
  });
  test("keeps amounts under a cent visible", () => {
    expect(money("0.0003")).toBe("$0.0003");
    expect(money("0.000000000001")).toBe("$0.000000000001");
    expect(money("0.0099999")).toBe("$0.0099999");
  });
  test("shows no cap as a dash", () => {
    expect(money(null)).toBe("—");
  });
  test("parses exact decimals", () => {
    expect(picos("0.1")).toBe(100_000_000_000n);
    expect(picos("-2")).toBe(-2_000_000_000_000n);
  });
  test("percent", () => {
    expect(percent(79.96)).toBe("80 %");
    expect(percent(12.34)).toBe("12.3 %");
  });
});

describe("a session's activity", () => {
  test("says what the telemetry counted, and nothing when there was none", () => {
    expect(activity(null)).toBe("—");
    expect(activity({ lines_added: 1204, lines_removed: 8, commits: 1, pull_requests: 2, active_seconds: 840 }))
      .toBe("+1,204 −8 lines · 1 commit · 2 PRs · 14 min active");
    expect(activity({ lines_added: 4, lines_removed: 0, commits: 0, pull_requests: 0, active_seconds: 1 }))
      .toBe("+4 −0 lines · 1 s active");
  });
  test("durations read at a glance", () => {
    expect([59, 60, 3599, 3600, 7500].map(duration)).toEqual(["59 s", "1 min", "59 min", "1 h 00 min", "2 h 05 min"]);
  });
});
