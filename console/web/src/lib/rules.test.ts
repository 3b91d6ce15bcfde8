import { describe, expect, it } from "vitest";
import { errorLocation, lastDays, mayPublish, shadowTable, utcInstant } from "./rules";
import { type RuleRow } from "./api";

const saved: RuleRow = {
  name: "big",
  position: 10,
  action: "block",
  condition: "amount > 5000.0",
  mode: "draft",
  backtest: null,
  backtested: false,
  version: 1,
  updated_by: "ann",
  updated_at: "2026-12-01T00:00:00Z",
};
const draft = { name: "big", action: "block" as const, condition: "amount > 5000.0" };

describe("rules", () => {
  it("points at the refused position, on any line", () => {
    expect(errorLocation("amount >", [1, 9])).toEqual({ line: 1, column: 9, text: "amount >", offset: 8 });
    expect(errorLocation("a &&\nb >", [2, 3])).toEqual({ line: 2, column: 3, text: "b >", offset: 7 });
    expect(errorLocation("x", [1, 50])?.column).toBe(2);
    expect(errorLocation("x", null)).toBeNull();
  });

  it("allows publishing only the saved text, once backtested", () => {
    expect(mayPublish(draft, saved, null)).toBe(false);
    expect(mayPublish(draft, saved, draft)).toBe(true);
    expect(mayPublish(draft, { ...saved, backtested: true }, null)).toBe(true);
    const edited = { ...draft, condition: "amount > 4000.0" };
    expect(mayPublish(edited, { ...saved, backtested: true }, draft)).toBe(false);
    expect(mayPublish(draft, saved, { ...draft, action: "review" })).toBe(false);
    expect(mayPublish(draft, undefined, draft)).toBe(false);
  });

  it("reads periods as UTC", () => {
    expect(utcInstant("2026-12-01T10:30")).toBe("2026-12-01T10:30:00Z");
    expect(lastDays(new Date("2026-12-08T10:30:20Z"), 7)).toEqual({ from: "2026-12-01T10:31", to: "2026-12-08T10:31" });
  });

  it("tabulates shadow matches per rule and day", () => {
    const table = shadowTable([
      { day: "2026-12-02", rule: "a", count: 1 },
      { day: "2026-12-01", rule: "b", count: 5 },
      { day: "2026-12-02", rule: "b", count: 2 },
    ]);
    expect(table.days).toEqual(["2026-12-01", "2026-12-02"]);
    expect(table.rows).toEqual([
      { rule: "b", counts: [5, 2], total: 7 },
      { rule: "a", counts: [0, 1], total: 1 },
    ]);
  });
});
