import { useCallback, useState } from "react";
import { useMe } from "../lib/me";
import { LoadState } from "../components/LoadState";
import { Badge } from "../components/ui/badge";
import { Button } from "../components/ui/button";
import { Card } from "../components/ui/card";
import { Field, Select } from "../components/ui/input";
import { type Column, DataTable } from "../components/ui/table";
import * as tx from "../components/columns";
import { ApiError, api, type QueueReason, type ReviewQueueItem, type ReviewQueuePage } from "../lib/api";
import { problemOf, useResource } from "../lib/resource";
import { formatTime } from "../lib/format";
import { cn } from "../lib/utils";
import { useListKeys } from "./listKeys";

/** What each reason means to an analyst, in the words of the policy that chose it. */
export const REASONS: Record<QueueReason, { title: string; why: string; className: string }> = {
  exploit: {
    title: "Highest score",
    why: "among the day's highest scores: the model's strongest alerts",
    className: "bg-slate-900 text-white",
  },
  "explore-threshold": {
    title: "Near a threshold",
    why: "scored next to a band threshold: its label moves the line the most",
    className: "bg-violet-100 text-violet-800 ring-1 ring-inset ring-violet-300",
  },
  "explore-random": {
    title: "Random ALLOW sample",
    why: "a random sample of allowed payments: the only unbiased look at fraud that got through",
    className: "bg-sky-100 text-sky-800 ring-1 ring-inset ring-sky-300",
  },
};

export function ReasonBadge({ reason }: { reason: QueueReason }) {
  const r = REASONS[reason];
  return (
    <span
      title={r.why}
      data-reason={reason}
      className={cn("inline-flex items-center whitespace-nowrap rounded-full px-2 py-0.5 text-xs font-medium", r.className)}
    >
      {r.title}
    </span>
  );
}

function Progress({ done, total }: { done: number; total: number }) {
  const share = total ? Math.round((100 * done) / total) : 0;
  return (
    <div className="flex min-w-48 flex-col gap-1">
      <div className="flex justify-between text-xs text-slate-500">
        <span>labelled</span>
        <span data-testid="review-progress">
          {done} / {total}
        </span>
      </div>
      <div className="h-2 overflow-hidden rounded-full bg-slate-100">
        <div className="h-full rounded-full bg-emerald-500 transition-all" style={{ width: `${share}%` }} />
      </div>
    </div>
  );
}

function ReasonCounts({ items }: { items: ReviewQueueItem[] }) {
  return (
    <div className="grid flex-1 grid-cols-3 gap-2">
      {(Object.keys(REASONS) as QueueReason[]).map((reason) => {
        const mine = items.filter((i) => i.reason === reason);
        const fraud = mine.filter((i) => i.label === "FRAUD").length;
        const labelled = mine.filter((i) => i.label).length;
        return (
          <div key={reason} className="rounded-md border border-slate-200 px-3 py-2" data-testid={`reason-${reason}`}>
            <div className="flex items-center justify-between gap-2">
              <ReasonBadge reason={reason} />
              <span className="text-lg font-semibold tabular-nums">{mine.length}</span>
            </div>
            <p className="mt-1 text-xs text-slate-500">{REASONS[reason].why}</p>
            <p className="mt-1 text-xs text-slate-600">
              {labelled} labelled{labelled ? ` · ${fraud} fraud` : ""}
            </p>
          </div>
        );
      })}
    </div>
  );
}

type Label = (item: ReviewQueueItem, verdict: "FRAUD" | "LEGIT") => Promise<void>;

/** The queue's columns: why each item is there, the transaction, and its verdict (buttons
 *  for those who may label). */
function columns(mayLabel: boolean, label: Label): Column<ReviewQueueItem>[] {
  return [
    { heading: "#", className: "w-8", cellClassName: "tabular-nums text-slate-400", cell: (item) => item.position },
    { heading: "Why", cell: (item) => <ReasonBadge reason={item.reason} /> },
    { ...tx.transaction, cell: (item) => <tx.TransactionLink id={item.transaction_id} className="font-mono text-xs" /> },
    tx.user,
    tx.type,
    { ...tx.amount, cellClassName: "tabular-nums" },
    tx.band,
    { ...tx.score, cellClassName: "tabular-nums" },
    { heading: "When", cellClassName: "whitespace-nowrap text-xs", cell: (item) => formatTime(item.event_ts) },
    tx.claimedBy,
    { heading: "Verdict", className: "text-right", cell: (item) => <Verdict item={item} mayLabel={mayLabel} label={label} /> },
  ];
}

const VERDICTS = [
  {
    verdict: "FRAUD",
    text: "Fraud",
    className: "border-red-200 text-red-700 hover:border-red-600 hover:bg-red-600 hover:text-white",
  },
  {
    verdict: "LEGIT",
    text: "Legit",
    className: "border-green-200 text-green-700 hover:border-green-600 hover:bg-green-600 hover:text-white",
  },
] as const;

function Verdict({ item, mayLabel, label }: { item: ReviewQueueItem; mayLabel: boolean; label: Label }) {
  if (item.label) return <Badge value={item.label} data-testid="review-verdict" />;
  if (!mayLabel) return <span className="text-xs text-slate-400">to review</span>;
  return (
    <span className="inline-flex gap-1">
      {VERDICTS.map(({ verdict, text, className }) => (
        <Button
          key={verdict}
          size="sm"
          variant="outline"
          data-testid={`review-${verdict.toLowerCase()}-${item.transaction_id}`}
          className={className}
          onClick={() => void label(item, verdict)}
        >
          {text}
        </Button>
      ))}
    </span>
  );
}

/** The review queue the scheduled job built for a day: the analyst's work list, first. */
export function ReviewQueue() {
  const me = useMe();
  const mayLabel = me.may.includes("label");
  const [day, setDay] = useState<string>("");
  const resource = useResource<ReviewQueuePage>(`/api/review-queue${day ? `?day=${encodeURIComponent(day)}` : ""}`);
  const { data: page, reload } = resource;
  const [selected, setSelected] = useState(0);
  const [message, setMessage] = useState("");

  const items = page?.items ?? [];
  const label = useCallback(
    async (item: ReviewQueueItem | undefined, verdict: "FRAUD" | "LEGIT") => {
      if (!item || !mayLabel || !page?.day) return;
      try {
        await api.post(`/api/transactions/${encodeURIComponent(item.transaction_id)}/label`, {
          label: verdict,
          note: "",
          queue_date: page.day,
        });
        setMessage(`${item.transaction_id} labelled ${verdict} (${REASONS[item.reason].title})`);
      } catch (err) {
        const conflict = err instanceof ApiError && err.status === 409;
        setMessage(conflict ? "The queue was rebuilt meanwhile: it has been reloaded." : problemOf(err));
      }
      reload();
    },
    [mayLabel, page, reload],
  );

  useListKeys(items, selected, setSelected, label);

  if (!page) return <LoadState loading={resource.loading} error={resource.error} onRetry={reload} />;
  const done = items.filter((i) => i.label).length;
  return (
    <div className="grid gap-4">
      <Card className="flex flex-wrap items-start gap-6">
        <Field label="Queue of (UTC day)" htmlFor="queue-day">
          <Select
            id="queue-day"
            value={page.day ?? ""}
            options={page.days.map((d) => [d.day, `${d.day} · ${d.labelled}/${d.items}`] as const)}
            onChange={(e) => setDay(e.target.value)}
          />
          <Progress done={done} total={items.length} />
        </Field>
        <ReasonCounts items={items} />
      </Card>
      <Card>
        <div className="mb-2 flex items-center justify-between gap-4 text-xs">
          <p className="text-slate-500">
            Rebuilt by the fraud_review_queue job · j / k move · Enter opens
            {mayLabel ? " · f fraud · l legit" : ""}
          </p>
          <p className="font-medium text-slate-700" role="status" data-testid="review-message">
            {message}
          </p>
        </div>
        <DataTable
          data-testid="review-queue-table"
          columns={columns(mayLabel, label)}
          rows={items}
          rowKey={(item) => item.transaction_id}
          rowProps={(item, i) => ({
            onClick: () => setSelected(i),
            "data-selected": i === selected,
            "data-reason": item.reason,
            "data-testid": `review-item-${item.transaction_id}`,
            className: cn(i === selected && "bg-blue-50", item.label && "text-slate-400"),
          })}
        />
        {items.length === 0 && (
          <p className="p-4 text-sm text-slate-500">
            No review queue built yet: the fraud_review_queue job builds one from the day's scored transactions.
          </p>
        )}
      </Card>
    </div>
  );
}
