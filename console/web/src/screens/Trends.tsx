import type { ChartConfiguration } from "chart.js";
import { useMemo } from "react";
import { Chart } from "../components/Chart";
import { LoadState } from "../components/LoadState";
import { ShadowMatches } from "../components/ShadowMatches";
import { Card, CardTitle } from "../components/ui/card";
import { type Column, DataTable } from "../components/ui/table";
import { BAND_COLOURS, formatPercent } from "../lib/format";
import type { Schemas } from "../lib/api";
import { useResource } from "../lib/resource";

type Trends = Schemas["Trends"];

const PRECISION_COLUMNS: Column<Schemas["BandPrecision"]>[] = [
  { heading: "Band", cell: (p) => p.band },
  { heading: "Labelled", cell: (p) => p.labelled },
  { heading: "Fraud", cell: (p) => p.fraud },
  { heading: "Precision", cell: (p) => formatPercent(p.precision) },
];

const THROUGHPUT_COLUMNS: Column<Schemas["Throughput"]>[] = [
  { heading: "Day", cell: (t) => t.day },
  { heading: "Analyst", cell: (t) => t.source.replace(/^analyst:/, "") },
  { heading: "Labels", cell: (t) => t.labels },
];

type Day = Trends["daily"][number];

/** A series of a daily chart: its label, its value on a day, and its colour. */
interface Series {
  label: string;
  value: (day: Day) => number | null;
  backgroundColor?: string;
  borderColor?: string;
}

// A function per type: each chart holds an options object of its own, none shared.
const DAILY_OPTIONS = {
  bar: () => ({ scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } }),
  line: () => ({ scales: { y: { beginAtZero: true, max: 1 } } }),
};

/** One point per day of the trends: stacked bars of counts, or a line of a rate. */
function dailyChart(trends: Trends | null, type: "bar" | "line", series: Series[]): ChartConfiguration {
  const days = trends?.daily ?? [];
  return {
    type,
    data: {
      labels: days.map((d) => d.day),
      datasets: series.map(({ value, ...rest }) => ({ ...rest, data: days.map(value) })),
    },
    options: DAILY_OPTIONS[type](),
  };
}

export function Trends() {
  const resource = useResource<Trends>("/api/trends?days=30");
  const trends = resource.data;

  const volume = useMemo(
    () =>
      dailyChart(trends, "bar", [
        { label: "CHALLENGE", value: (d) => d.challenge, backgroundColor: BAND_COLOURS.CHALLENGE },
        { label: "BLOCK", value: (d) => d.block, backgroundColor: BAND_COLOURS.BLOCK },
      ]),
    [trends],
  );
  const rate = useMemo(
    () =>
      dailyChart(trends, "line", [
        { label: "fraud among labelled", value: (d) => d.fraud_rate, borderColor: BAND_COLOURS.BLOCK },
      ]),
    [trends],
  );

  if (!trends) return <LoadState loading={resource.loading} error={resource.error} onRetry={resource.reload} />;
  return (
    <div className="grid grid-cols-2 gap-4">
      <Card>
        <CardTitle>Alert volume by band, per day</CardTitle>
        <Chart config={volume} />
      </Card>
      <Card>
        <CardTitle>Daily fraud rate (labelled transactions)</CardTitle>
        <Chart config={rate} />
      </Card>
      <Card>
        <CardTitle>Precision of the flagged bands (by labels)</CardTitle>
        <DataTable columns={PRECISION_COLUMNS} rows={trends.precision} rowKey={(p) => p.band} />
      </Card>
      <Card>
        <CardTitle>Analysts' throughput (labels per day)</CardTitle>
        <DataTable columns={THROUGHPUT_COLUMNS} rows={trends.throughput} rowKey={(t) => `${t.day}${t.source}`} />
      </Card>
      <ShadowMatches days={30} />
      <Card className="col-span-2">
        <CardTitle>Daily digests</CardTitle>
        <ul className="text-sm">
          {trends.digests.map((d) => (
            <li key={d.day}>
              {d.day}:{" "}
              {d.files.map((f) => (
                <a key={f} className="mr-2 text-blue-700 hover:underline" href={`/api/digests/${d.day}/${f}`}>
                  {f}
                </a>
              ))}
            </li>
          ))}
          {trends.digests.length === 0 && <li className="text-slate-500">No digest written yet.</li>}
        </ul>
      </Card>
    </div>
  );
}
