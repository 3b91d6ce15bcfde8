/** The queue's filters and the URL's query string, both ways (pure: unit-tested).
 *  The URL holds the view, so a link shares it; the API takes the same parameters. */

export const BANDS = ["CHALLENGE", "BLOCK"] as const;
export const TYPES = ["CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER"] as const;

export interface QueueFilters {
  band: string[];
  type: string[];
  amount_min: string;
  amount_max: string;
  since: string;
  until: string;
  model_version: string;
  source: "" | "inline" | "stream";
  labelled: "no" | "yes" | "any";
  q: string;
  sort: "score" | "newest";
}

export const DEFAULT_FILTERS: QueueFilters = {
  band: [],
  type: [],
  amount_min: "",
  amount_max: "",
  since: "",
  until: "",
  model_version: "",
  source: "",
  labelled: "no",
  q: "",
  sort: "score",
};

function oneOf<T extends string>(value: string | null, allowed: readonly T[], fallback: T): T {
  return allowed.includes(value as T) ? (value as T) : fallback;
}

/** Filters from a query string; unknown or malformed values fall back to the defaults. */
export function filtersFromSearch(search: string): QueueFilters {
  const p = new URLSearchParams(search);
  const known = (values: string[], allowed: readonly string[]) => values.filter((v) => allowed.includes(v));
  return {
    band: known(p.getAll("band"), BANDS),
    type: known(p.getAll("type"), TYPES),
    amount_min: p.get("amount_min") ?? "",
    amount_max: p.get("amount_max") ?? "",
    since: p.get("since") ?? "",
    until: p.get("until") ?? "",
    model_version: p.get("model_version") ?? "",
    source: oneOf(p.get("source"), ["", "inline", "stream"] as const, ""),
    labelled: oneOf(p.get("labelled"), ["no", "yes", "any"] as const, "no"),
    q: p.get("q") ?? "",
    sort: oneOf(p.get("sort"), ["score", "newest"] as const, "score"),
  };
}

/** The query string of filters: only what differs from the defaults, in a stable order. */
export function searchFromFilters(f: QueueFilters): string {
  const p = new URLSearchParams();
  f.band.forEach((b) => p.append("band", b));
  f.type.forEach((t) => p.append("type", t));
  const scalars = ["amount_min", "amount_max", "since", "until", "model_version", "source", "q"] as const;
  for (const key of scalars) {
    const value = f[key].trim();
    if (value) p.set(key, value);
  }
  if (f.labelled !== DEFAULT_FILTERS.labelled) p.set("labelled", f.labelled);
  if (f.sort !== DEFAULT_FILTERS.sort) p.set("sort", f.sort);
  return p.toString();
}
