// The page-wide singletons: the API (transport chosen by where we run) and navigation.
import { defaultApi } from "../api";

export const api = defaultApi();

export function go(hash: string) {
  location.hash = hash;
}

/** Worst-case dollars of `maxTokens` output at a price in dollars per MTok (display only). */
export function worstCase(outputPerMtok: string, maxTokens: number): string {
  const [i, f = ""] = outputPerMtok.split(".");
  const micros = BigInt(i) * 1_000_000n + BigInt((f + "000000").slice(0, 6));
  const picos = micros * BigInt(maxTokens); // $/MTok × tokens = picodollars
  const whole = picos / 1_000_000_000_000n;
  const frac = (picos % 1_000_000_000_000n).toString().padStart(12, "0").replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
}
