/** Display formatting shared by every screen (pure: unit-tested). */

export function formatAmount(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

export function formatScore(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return value.toFixed(3);
}

export function formatPercent(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return `${(value * 100).toFixed(1)}%`;
}

/** Unix seconds or an ISO string as "YYYY-MM-DD HH:MM:SS" in UTC. */
export function formatTime(value: number | string | null | undefined): string {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return "—";
  return date.toISOString().replace("T", " ").slice(0, 19);
}

export function formatLatency(us: number | null | undefined): string {
  if (us === null || us === undefined || !Number.isFinite(us)) return "—";
  return us < 1000 ? `${us} µs` : `${(us / 1000).toFixed(1)} ms`;
}

export const BAND_COLOURS: Record<string, string> = {
  ALLOW: "#16a34a",
  CHALLENGE: "#d97706",
  BLOCK: "#dc2626",
};
