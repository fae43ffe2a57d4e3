// RFC 2782 target selection and RFC 3403 / RFC 3263 NAPTR ordering: pure functions over records,
// randomness injected so that tests can check the weights.

/** A choice within one SRV priority: a weight and what choosing it yields. */
export interface Weighted<T> {
  readonly weight: number;
  readonly value: T;
}

/**
 * RFC 2782 "Usage rules": order the records of ONE priority by weighted random selection.
 * "arrange all SRV RRs (that have not been ordered yet) in any order, except that all those with
 * weight 0 are placed at the beginning of the list. Compute the sum of the weights of those RRs,
 * and with each RR associate the running sum in the selected order. Then choose a uniform random
 * number between 0 and the sum computed (inclusive), and select the RR whose running sum value is
 * the first in the selected order which is greater than or equal to the random number selected."
 * Repeated until every record is ordered. `random` returns [0, 1).
 */
export function weightedOrder<T>(items: readonly Weighted<T>[], random: () => number, out: T[] = []): T[] {
  if (items.length === 1) { out.push(items[0]!.value); return out; }
  // weight 0 first, the others in received order (the "any order" of the RFC)
  const rest: Weighted<T>[] = [];
  for (const x of items) if (x.weight === 0) rest.push(x);
  for (const x of items) if (x.weight !== 0) rest.push(x);
  let sum = 0;
  for (const x of rest) sum += x.weight;
  while (rest.length > 0) {
    // uniform integer in [0, sum] (inclusive, as the RFC says)
    const r = Math.floor(random() * (sum + 1));
    let running = 0;
    let pick = rest.length - 1;
    for (let i = 0; i < rest.length; i++) {
      running += rest[i]!.weight;
      if (running >= r) { pick = i; break; }
    }
    const [chosen] = rest.splice(pick, 1);
    sum -= chosen!.weight;
    out.push(chosen!.value);
  }
  return out;
}

/** Records of one SRV RRset grouped by priority, lowest (most preferred) first (RFC 2782:
 *  "A client MUST attempt to contact the target host with the lowest-numbered priority"). */
export function byPriority<T extends { readonly priority: number }>(records: readonly T[]): T[][] {
  const groups = new Map<number, T[]>();
  for (const r of records) {
    let g = groups.get(r.priority);
    if (g === undefined) { g = []; groups.set(r.priority, g); }
    g.push(r);
  }
  return [...groups.keys()].sort((a, b) => a - b).map((p) => groups.get(p)!);
}

/** RFC 3263 4.1 / RFC 3403 4.1: NAPTR records in order, then preference (both ascending). */
export function naptrOrder<T extends { readonly order: number; readonly preference: number }>(records: readonly T[]): T[] {
  return [...records].sort((a, b) => a.order - b.order || a.preference - b.preference);
}
