// @vitest-environment jsdom
import { render } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { type Column, DataTable } from "./table";

interface Row {
  id: string;
  amount: number;
}

const COLUMNS: Column<Row>[] = [
  { heading: "Id", cell: (r) => r.id, cellProps: (r) => ({ title: `row ${r.id}`, "data-testid": `id-${r.id}` }) },
  { heading: "Amount", className: "text-right", cellClassName: "tabular-nums", cell: (r, i) => `${i}:${r.amount}` },
];

describe("DataTable", () => {
  it("heads each column once and fills one cell per column and row", () => {
    const rows = [
      { id: "a", amount: 1 },
      { id: "b", amount: 2 },
    ];
    const { container } = render(
      <DataTable
        data-testid="t"
        columns={COLUMNS}
        rows={rows}
        rowKey={(r) => r.id}
        rowProps={(r, i) => ({ "data-selected": i === 1, "data-row": r.id })}
      />,
    );
    const headings = [...container.querySelectorAll("thead th")].map((th) => th.textContent);
    expect(headings).toEqual(["Id", "Amount"]);
    const cells = [...container.querySelectorAll("tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent));
    expect(cells).toEqual([
      ["a", "0:1"],
      ["b", "1:2"],
    ]);
    const second = container.querySelector("tbody tr[data-row=b]");
    expect(second?.getAttribute("data-selected")).toBe("true");
    const amount = second?.children[1];
    expect(amount?.className).toContain("text-right");
    expect(amount?.className).toContain("tabular-nums");
    expect(container.querySelector("thead th:nth-child(2)")?.className).not.toContain("tabular-nums");
    expect(container.querySelector("[data-testid=id-b]")?.getAttribute("title")).toBe("row b");
  });
});
