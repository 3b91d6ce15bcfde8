import type { ChartConfiguration } from "chart.js";
import { useEffect, useMemo, useState } from "react";
import { Chart } from "../components/Chart";
import { Card, CardTitle } from "../components/ui/card";
import { type Column, DataTable } from "../components/ui/table";
import * as tx from "../components/columns";
import { LoadState } from "../components/LoadState";
import type { LiveItem, Schemas } from "../lib/api";
import { useResource } from "../lib/resource";
import { BAND_COLOURS, formatLatency, formatScore } from "../lib/format";

const WINDOW_S = 15 * 60;
const RECENT = 50;
// Scores arrive many times a second and go into the table at once; the chart's per-second
// counts are redrawn at most this often.
const CHART_REDRAW_MS = 250;
const STATUS_POLL_MS = 5000;
const BANDS = ["ALLOW", "CHALLENGE", "BLOCK"];

type Status = Schemas["LiveStatus"];

const LIVE_COLUMNS: Column<LiveItem>[] = [
  tx.transaction,
  tx.band,
  tx.score,
  tx.model,
  { heading: "Reasons", cellClassName: "text-slate-600", cell: (item) => item.reasons.join("; ") },
  { heading: "Latency", cell: (item) => formatLatency(item.latency_us) },
];

interface Second {
  at: number;
  counts: Record<string, number>;
}

/** Ticks come several times a second: their counts add up into one-second buckets. */
function addTick(seconds: Second[], at: number, counts: Record<string, number>): Second[] {
  const last = seconds[seconds.length - 1];
  if (last && last.at === at) {
    const merged = { ...last.counts };
    for (const [band, n] of Object.entries(counts)) merged[band] = (merged[band] ?? 0) + n;
    return [...seconds.slice(0, -1), { at, counts: merged }];
  }
  return [...seconds, { at, counts }].slice(-WINDOW_S);
}

export function Live() {
  const [seconds, setSeconds] = useState<Second[]>([]);
  const [recent, setRecent] = useState<LiveItem[]>([]);
  const statusResource = useResource<Status>("/api/live/status");
  const status = statusResource.data;
  const { reload: reloadStatus } = statusResource;
  const [connected, setConnected] = useState(false);

  useEffect(() => {
    let pending: Second[] = [];
    const source = new EventSource("/api/live/stream");
    source.addEventListener("ready", () => setConnected(true));
    source.addEventListener("tick", (event) => {
      const tick = JSON.parse((event as MessageEvent).data) as { counts: Record<string, number>; items: LiveItem[] };
      pending = addTick(pending, Math.floor(Date.now() / 1000) * 1000, tick.counts);
      if (tick.items.length) setRecent((r) => [...tick.items.reverse(), ...r].slice(0, RECENT));
    });
    source.onerror = () => setConnected(false);
    const redraw = window.setInterval(() => {
      if (!pending.length) return;
      const ticks = pending;
      pending = [];
      setSeconds((s) => ticks.reduce((acc, t) => addTick(acc, t.at, t.counts), s));
    }, CHART_REDRAW_MS);
    return () => {
      window.clearInterval(redraw);
      source.close();
    };
  }, []);

  useEffect(() => {
    const timer = window.setInterval(reloadStatus, STATUS_POLL_MS);
    return () => window.clearInterval(timer);
  }, [reloadStatus]);

  const chart = useMemo<ChartConfiguration>(
    () => ({
      type: "line",
      data: {
        labels: seconds.map((s) => new Date(s.at).toISOString().slice(11, 19)),
        datasets: BANDS.map((band) => ({
          label: band,
          data: seconds.map((s) => s.counts[band] ?? 0),
          borderColor: BAND_COLOURS[band],
          pointRadius: 0,
        })),
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "per second" } } } },
    }),
    [seconds],
  );

  return (
    <div className="grid gap-4">
      <div className="grid grid-cols-4 gap-4">
        <Card>
          <CardTitle>Stream</CardTitle>
          <p data-testid="live-connected">{connected ? "connected" : "connecting…"}</p>
        </Card>
        <Card>
          <CardTitle>Served model</CardTitle>
          <p className="text-xl font-semibold" data-testid="served-version">
            {status?.model_version ?? "—"}
          </p>
        </Card>
        <Card>
          <CardTitle>Thresholds</CardTitle>
          <p>
            challenge ≥ {formatScore(status?.thresholds?.challenge)} · block ≥ {formatScore(status?.thresholds?.block)}
          </p>
        </Card>
        <Card>
          <CardTitle>Consumer lag</CardTitle>
          <p className="text-xl font-semibold">{status?.consumer_lag ?? "—"}</p>
        </Card>
      </div>
      <LoadState loading={false} error={statusResource.error} onRetry={reloadStatus} />
      <Card>
        <CardTitle>Scores by band, last 15 minutes</CardTitle>
        <Chart config={chart} />
      </Card>
      <Card>
        <CardTitle>Arriving now (flagged first)</CardTitle>
        <DataTable data-testid="live-table" columns={LIVE_COLUMNS} rows={recent} rowKey={(item) => item.transaction_id} />
      </Card>
    </div>
  );
}
