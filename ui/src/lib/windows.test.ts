import { describe, expect, it } from "vitest";
import { clock, duration, level, pace, resets, used } from "./windows";
import type { WindowView } from "../bindings/WindowView";

const w = (over: Partial<WindowView>): WindowView => ({
  utilization: 0.43, resets_at: "2026-12-04T15:40:00+01:00", status: "allowed", per_hour: null, fills_at: null, ...over,
});

describe("subscription windows", () => {
  it("shows durations and clocks", () => {
    expect(duration(80 * 60_000)).toBe("1 h 20 min");
    expect(duration(45 * 60_000 + 59_000)).toBe("45 min");
    expect(duration((2 * 1440 + 180) * 60_000)).toBe("2 d 3 h");
    expect(duration(-5)).toBe("0 min");
    expect(clock("2026-12-04T15:40:00+01:00", "2026-12-04")).toBe("15:40");
    expect(clock("2026-12-05T09:00:00+01:00", "2026-12-04")).toBe("5 Dec 09:00");
  });

  it("counts down to the reset", () => {
    const now = new Date("2026-12-04T12:35:00+01:00");
    expect(resets(w({}), now, "2026-12-04")).toBe("resets in 3 h 5 min (15:40)");
    expect(resets(w({ resets_at: null }), now, "2026-12-04")).toBeNull();
    expect(resets(w({}), new Date("2026-12-04T16:00:00+01:00"), "2026-12-04")).toBe("reset at 15:40");
  });

  it("forecasts when the window fills at its pace", () => {
    expect(pace("5-hour", w({}), "2026-12-04")).toBeNull();
    expect(pace("5-hour", w({ per_hour: 0.2, fills_at: "2026-12-04T14:20:00+01:00" }), "2026-12-04"))
      .toBe("at this pace the 5-hour window fills at 14:20, 1 h 20 min before it resets");
    expect(pace("weekly", w({ per_hour: 0.01 }), "2026-12-04"))
      .toBe("at this pace the weekly window does not fill before it resets");
  });

  it("colours by how full", () => {
    expect([used(w({})), level(w({}))]).toEqual([43, ""]);
    expect(level(w({ utilization: 0.8 }))).toBe("warn");
    expect(level(w({ utilization: 1.02 }))).toBe("bad");
    expect(level(w({ utilization: 0.5, status: "rejected" }))).toBe("bad");
  });
});
