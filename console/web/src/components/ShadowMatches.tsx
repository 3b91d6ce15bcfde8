import type { ChartConfiguration } from "chart.js";
import { useMemo } from "react";
import { Link } from "react-router-dom";
import { useResource } from "../lib/resource";
import { shadowTable } from "../lib/rules";
import { type ShadowMatch } from "../lib/api";
import { Chart } from "./Chart";
import { LoadState } from "./LoadState";
import { Card, CardTitle } from "./ui/card";
import { type Column, DataTable } from "./ui/table";

type Row = ReturnType<typeof shadowTable>["rows"][number];

const SHADOW_COLUMNS: Column<Row>[] = [
  {
    heading: "Rule",
    cell: (r) => (
      <Link className="font-mono text-xs text-blue-700 hover:underline" to={`/rules?rule=${encodeURIComponent(r.rule)}`}>
        {r.rule}
      </Link>
    ),
  },
  {
    heading: "Matches",
    className: "text-right",
    cellProps: (r) => ({ "data-testid": `shadow-total-${r.rule}` }),
    cell: (r) => r.total,
  },
  { heading: "Last day", cell: (r) => r.counts[r.counts.length - 1] },
];

const COLOURS = ["#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#475569"];

/** What the shadow rules would have done, per day: they decide nothing while they are watched. */
export function ShadowMatches({ days }: { days: number }) {
  const shadow = useResource<{ matches: ShadowMatch[] }>(`/api/rules/shadow?days=${days}`);
  const table = useMemo(() => shadowTable(shadow.data?.matches ?? []), [shadow.data]);
  const chart = useMemo<ChartConfiguration>(
    () => ({
      type: "bar",
      data: {
        labels: table.days,
        datasets: table.rows
          .slice(0, COLOURS.length)
          .map((r, i) => ({ label: r.rule, data: r.counts, backgroundColor: COLOURS[i] })),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    }),
    [table],
  );

  return (
    <Card className="col-span-2" data-testid="shadow-matches">
      <CardTitle>Shadow rules: matches per day (last {days} days)</CardTitle>
      <LoadState loading={shadow.loading && !shadow.data} error={shadow.error} onRetry={shadow.reload} />
      {shadow.data && table.rows.length === 0 && (
        <p className="text-sm text-slate-500">
          No shadow rule matched in this period. Publish a rule as shadow on the{" "}
          <Link className="text-blue-700 hover:underline" to="/rules">
            Rules
          </Link>{" "}
          screen to watch it here.
        </p>
      )}
      {table.rows.length > 0 && (
        <div className="grid grid-cols-2 gap-4">
          <Chart config={chart} />
          <DataTable className="self-start" columns={SHADOW_COLUMNS} rows={table.rows} rowKey={(r) => r.rule} />
        </div>
      )}
    </Card>
  );
}
