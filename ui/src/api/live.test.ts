import { expect, test, vi } from "vitest";
import { coalesce } from "./live";

test("a burst of events reloads once at once and once after the burst", () => {
  vi.useFakeTimers();
  const reload = vi.fn();
  const poke = coalesce(reload, 250);
  for (let i = 0; i < 100; i++) poke();
  expect(reload).toHaveBeenCalledTimes(1);
  vi.advanceTimersByTime(250);
  expect(reload).toHaveBeenCalledTimes(2);
  vi.advanceTimersByTime(1000);
  expect(reload).toHaveBeenCalledTimes(2);
  poke();
  expect(reload).toHaveBeenCalledTimes(3);
  vi.useRealTimers();
});
