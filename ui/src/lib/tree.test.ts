import { describe, expect, test } from "vitest";
import { treeOrder } from "./tree";

describe("treeOrder", () => {
  test("puts children under their parent, depth first, keeping the given order", () => {
    const b = (name: string, parent: string | null = null) => ({ name, parent });
    const order = treeOrder([b("default"), b("a", "total"), b("total"), b("x", "a"), b("b", "total"), b("lost", "gone")]);
    expect(order.map((o) => `${"-".repeat(o.depth)}${o.budget.name}`)).toEqual(["default", "total", "-a", "--x", "-b", "lost"]);
  });
});
