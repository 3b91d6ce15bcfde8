import { describe, expect, it } from "vitest";
import { formatAmount, formatLatency, formatPercent, formatScore, formatTime } from "./format";

describe("formatting", () => {
  it("formats amounts and scores", () => {
    expect(formatAmount(1234.5)).toBe("1,234.50");
    expect(formatAmount(Number.NaN)).toBe("—");
    expect(formatScore(0.98765)).toBe("0.988");
    expect(formatScore(null)).toBe("—");
  });

  it("formats times in UTC", () => {
    expect(formatTime(1_700_000_000)).toBe("2023-11-14 22:13:20");
    expect(formatTime("2026-01-02T03:04:05Z")).toBe("2026-01-02 03:04:05");
    expect(formatTime("not a time")).toBe("—");
  });

  it("formats percentages and latency", () => {
    expect(formatPercent(0.1234)).toBe("12.3%");
    expect(formatPercent(null)).toBe("—");
    expect(formatLatency(250)).toBe("250 µs");
    expect(formatLatency(2500)).toBe("2.5 ms");
  });
});
