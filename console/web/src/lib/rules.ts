/** The rules and lists screens' shapes and their pure logic (unit-tested): where a compile
 *  error points, when publishing is allowed, periods. */

import type { RuleRow, ShadowMatch } from "./api";

export const ACTIONS = ["allow", "review", "block"] as const;
export type Action = (typeof ACTIONS)[number];
export const LIST_KINDS = ["user", "customer", "ip", "country"] as const;

/** A rule as the editor holds it. */
export interface Draft {
  name: string;
  action: Action;
  condition: string;
}

/** A refused rule's problem: the API's 422 detail. `position` is [line, column], 1-based. */
export interface Refusal {
  field: string;
  problem: string;
  position: [number, number] | null;
  message: string;
}

export function isRefusal(detail: unknown): detail is Refusal {
  return typeof detail === "object" && detail !== null && "problem" in detail && "field" in detail;
}

/** Where a refusal points in the condition: the offending line, the column, and the offset
 *  into the whole text (to put the caret there). Null when it names no position. */
export function errorLocation(condition: string, position: [number, number] | null) {
  if (!position) return null;
  const [line, column] = position;
  const lines = condition.split("\n");
  const text = lines[line - 1] ?? "";
  const before = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  const col = Math.max(1, Math.min(column, text.length + 1));
  return { line, column: col, text, offset: before + col - 1 };
}

export function sameRule(a: Draft, b: Pick<RuleRow, "name" | "action" | "condition"> | undefined): boolean {
  return !!b && a.name === b.name && a.action === b.action && a.condition === b.condition;
}

/** Publishing (shadow or live) needs the editor's text saved and a backtest of exactly it:
 *  one the server knows of, or one just run here. */
export function mayPublish(draft: Draft, saved: RuleRow | undefined, lastBacktest: Draft | null): boolean {
  if (!sameRule(draft, saved)) return false;
  return !!saved?.backtested || (lastBacktest !== null && sameRule(lastBacktest, saved));
}

/** A datetime-local value (read as UTC, as the console shows times) as an ISO instant. */
export function utcInstant(local: string): string {
  return local.length === 16 ? `${local}:00Z` : `${local}Z`;
}

/** The default backtest period: the last `days` days to the next minute, as datetime-local values in UTC. */
export function lastDays(now: Date, days: number): { from: string; to: string } {
  const to = new Date(Math.ceil(now.getTime() / 60_000) * 60_000);
  const from = new Date(to.getTime() - days * 86_400_000);
  const local = (d: Date) => d.toISOString().slice(0, 16);
  return { from: local(from), to: local(to) };
}

/** Shadow matches as one row per rule with a count per day (days ascending). */
export function shadowTable(matches: ShadowMatch[]): {
  days: string[];
  rows: { rule: string; counts: number[]; total: number }[];
} {
  const days = [...new Set(matches.map((m) => m.day))].sort();
  const byRule = new Map<string, number[]>();
  for (const m of matches) {
    const counts = byRule.get(m.rule) ?? days.map(() => 0);
    counts[days.indexOf(m.day)] += m.count;
    byRule.set(m.rule, counts);
  }
  const rows = [...byRule.entries()].map(([rule, counts]) => ({ rule, counts, total: counts.reduce((a, b) => a + b, 0) }));
  rows.sort((a, b) => b.total - a.total || a.rule.localeCompare(b.rule));
  return { days, rows };
}
