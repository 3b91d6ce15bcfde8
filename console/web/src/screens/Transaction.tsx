import type { ChartConfiguration } from "chart.js";
import { useMemo, useState } from "react";
import { useParams } from "react-router-dom";
import { useMe } from "../lib/me";
import { Chart } from "../components/Chart";
import { LoadState } from "../components/LoadState";
import { Badge } from "../components/ui/badge";
import { Button } from "../components/ui/button";
import { Card, CardTitle } from "../components/ui/card";
import { Input, Label } from "../components/ui/input";
import { type Column, DataTable, Table, Td, Th } from "../components/ui/table";
import * as tx from "../components/columns";
import { api, type Schemas } from "../lib/api";
import { BAND_COLOURS, formatLatency, formatScore, formatTime } from "../lib/format";
import { problemOf, useResource } from "../lib/resource";

type Detail = Schemas["TransactionDetail"];

const HIDDEN = new Set(["reasons"]);

// The user's other transactions: this page's own link is the id itself, so no links.
const USER_DAY_COLUMNS: Column<Detail["user_last_24h"][number]>[] = [
  { ...tx.transaction, cell: (r) => r.transaction_id },
  { heading: "Time", cell: (r) => formatTime(r.event_ts) },
  tx.type,
  tx.amount,
  tx.channel,
  tx.band,
  tx.score,
];

function text(value: unknown): string {
  if (value === null || value === undefined) return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

export function Transaction() {
  const { id = "" } = useParams();
  const me = useMe();
  const resource = useResource<Detail>(`/api/transactions/${encodeURIComponent(id)}`);
  const detail = resource.data;
  const load = resource.reload;
  const [note, setNote] = useState("");
  const [message, setMessage] = useState("");

  async function label(verdict: "FRAUD" | "LEGIT") {
    try {
      await api.post(`/api/transactions/${encodeURIComponent(id)}/label`, { label: verdict, note });
      setMessage(`labelled ${verdict}`);
      setNote("");
      load();
    } catch (err) {
      setMessage(problemOf(err));
    }
  }

  async function claim() {
    try {
      await api.post(`/api/transactions/${encodeURIComponent(id)}/claim`);
      load();
    } catch (err) {
      setMessage(problemOf(err));
    }
  }

  const chart = useMemo<ChartConfiguration>(() => {
    const rows = detail?.user_last_24h ?? [];
    return {
      type: "scatter",
      data: {
        datasets: ["ALLOW", "CHALLENGE", "BLOCK"].map((band) => ({
          label: band,
          backgroundColor: BAND_COLOURS[band],
          data: rows
            .filter((r) => r.band === band)
            .map((r) => ({ x: r.event_ts - (detail?.transaction.event_ts as number), y: r.amount })),
        })),
      },
      options: {
        scales: {
          x: { type: "linear", title: { display: true, text: "seconds before this transaction" } },
          y: { title: { display: true, text: "amount" } },
        },
      },
    };
  }, [detail]);

  if (!detail) return <LoadState loading={resource.loading} error={resource.error} onRetry={resource.reload} />;
  const tx = detail.transaction;
  return (
    <div className="grid gap-4">
      <div className="flex items-center gap-3">
        <h1 className="text-xl font-semibold">{tx.transaction_id}</h1>
        <Badge value={tx.band} />
        <span>score {formatScore(tx.score)}</span>
        <span className="text-slate-500">
          model {tx.model_version} · {formatLatency(tx.latency_us)}
        </span>
        {detail.label && <Badge value={detail.label.label} data-testid="current-label" />}
      </div>
      <div className="grid grid-cols-3 gap-4">
        <Card className="col-span-2">
          <CardTitle>Fields</CardTitle>
          <Table>
            <tbody>
              {Object.entries(tx)
                .filter(([k]) => !HIDDEN.has(k))
                .map(([key, value]) => (
                  <tr key={key}>
                    <Th className="w-56">{key}</Th>
                    <Td data-field={key}>
                      {key === "event_ts" ? `${text(value)} (${formatTime(value as number)})` : text(value)}
                    </Td>
                  </tr>
                ))}
            </tbody>
          </Table>
        </Card>
        <div className="grid content-start gap-4">
          <Card>
            <CardTitle>Why</CardTitle>
            <ul className="list-disc pl-5 text-sm">
              {(tx.reasons ?? []).map((r) => (
                <li key={r}>{r}</li>
              ))}
            </ul>
          </Card>
          <Card data-testid="location">
            <CardTitle>Location</CardTitle>
            <dl className="grid grid-cols-2 gap-1 text-sm">
              <dt>IP country</dt>
              <dd data-field="ip-country">{text(tx.ip_country ?? (tx.ip_kind ? `(${String(tx.ip_kind)})` : null))}</dd>
              <dt>Card country</dt>
              <dd data-field="card-country">{text(tx.card_country)}</dd>
              <dt>Billing country</dt>
              <dd>{text(tx.billing_country)}</dd>
            </dl>
            <p className="mt-2 text-sm font-medium">User's countries</p>
            <ul className="text-sm" data-testid="user-countries">
              {detail.user_countries.map((c) => (
                <li key={c.country}>
                  {c.country}: {c.payments} payment{c.payments === 1 ? "" : "s"}, last {formatTime(c.last_ts)}
                </li>
              ))}
              {detail.user_countries.length === 0 && <li className="text-slate-500">None known.</li>}
            </ul>
          </Card>
          <Card>
            <CardTitle>Verdict</CardTitle>
            {detail.claim && <p className="mb-2 text-sm text-slate-600">claimed by {detail.claim.claimed_by}</p>}
            {me.may.includes("label") ? (
              <div className="flex flex-col gap-2" data-testid="label-controls">
                <Label htmlFor="note">Note</Label>
                <Input id="note" value={note} maxLength={512} onChange={(e) => setNote(e.target.value)} />
                <div className="flex gap-2">
                  <Button variant="fraud" onClick={() => label("FRAUD")}>
                    FRAUD
                  </Button>
                  <Button variant="legit" onClick={() => label("LEGIT")}>
                    LEGIT
                  </Button>
                  <Button variant="outline" onClick={claim}>
                    Claim
                  </Button>
                </div>
              </div>
            ) : (
              <p className="text-sm text-slate-500">Viewers cannot label.</p>
            )}
            {message && (
              <p className="mt-2 text-sm" role="status">
                {message}
              </p>
            )}
          </Card>
          <Card>
            <CardTitle>Label history</CardTitle>
            <ol className="text-sm">
              {detail.label_history.map((h, i) => (
                <li key={i} className="border-b border-slate-100 py-1">
                  {formatTime(h.at)}: <b>{h.new}</b> by {h.source}
                  {h.old && <span className="text-slate-500"> (supersedes {h.old})</span>}
                  {h.note && <span className="text-slate-500"> “{h.note}”</span>}
                </li>
              ))}
              {detail.label_history.length === 0 && <li className="text-slate-500">No label yet.</li>}
            </ol>
          </Card>
        </div>
      </div>
      <Card>
        <CardTitle>User {String(tx.user_id)}: last 24 hours</CardTitle>
        <Chart config={chart} height={200} />
        <DataTable className="mt-3" columns={USER_DAY_COLUMNS} rows={detail.user_last_24h} rowKey={(r) => r.transaction_id} />
      </Card>
    </div>
  );
}
