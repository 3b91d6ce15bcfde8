import { describe, expect, it } from "vitest";
import { DEFAULT_FILTERS, filtersFromSearch, searchFromFilters } from "./filters";

describe("queue filters in the URL", () => {
  it("round-trips every filter", () => {
    const filters = {
      ...DEFAULT_FILTERS,
      band: ["BLOCK"],
      type: ["TRANSFER", "CASH_OUT"],
      amount_min: "100",
      q: "tx-1",
      labelled: "any" as const,
      sort: "newest" as const,
      source: "inline" as const,
    };
    expect(filtersFromSearch(searchFromFilters(filters))).toEqual(filters);
  });

  it("writes nothing for the defaults", () => {
    expect(searchFromFilters(DEFAULT_FILTERS)).toBe("");
  });

  it("drops values the API would refuse", () => {
    const f = filtersFromSearch("band=ALLOW&band=BLOCK&type=WIRE&sort=amount&labelled=maybe");
    expect(f.band).toEqual(["BLOCK"]);
    expect(f.type).toEqual([]);
    expect(f.sort).toBe("score");
    expect(f.labelled).toBe("no");
  });

  it("encodes hostile text instead of interpreting it", () => {
    const q = "' OR 1=1 --&band=BLOCK";
    const search = searchFromFilters({ ...DEFAULT_FILTERS, q });
    expect(filtersFromSearch(search).q).toBe(q);
    expect(filtersFromSearch(search).band).toEqual([]);
  });
});
