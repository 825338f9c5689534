import { describe, expect, test } from "vitest";
import { money, picos, percent } from "./format";

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
