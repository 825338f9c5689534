/** Budgets in tree order: each top-level budget (by the order given), then its children
 * below it, depth first, with their depth. A budget whose parent is missing is top-level. */
export function treeOrder<T extends { name: string; parent: string | null }>(budgets: T[]): { budget: T; depth: number }[] {
  const names = new Set(budgets.map((b) => b.name));
  const below = new Map<string, T[]>();
  for (const b of budgets) if (b.parent && names.has(b.parent)) below.set(b.parent, [...(below.get(b.parent) ?? []), b]);
  const out: { budget: T; depth: number }[] = [];
  const seen = new Set<string>();
  const visit = (b: T, depth: number) => {
    if (seen.has(b.name)) return;
    seen.add(b.name);
    out.push({ budget: b, depth });
    for (const c of below.get(b.name) ?? []) visit(c, depth + 1);
  };
  for (const b of budgets) if (!b.parent || !names.has(b.parent)) visit(b, 0);
  return out;
}
