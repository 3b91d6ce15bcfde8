import { useCallback, useMemo, useState } from "react";
import { useSearchParams } from "react-router-dom";
import { useMe } from "../lib/me";
import { LoadState } from "../components/LoadState";
import { Button } from "../components/ui/button";
import { Card } from "../components/ui/card";
import { Field, Input, InputField, type Option, SelectField } from "../components/ui/input";
import { type Column, DataTable } from "../components/ui/table";
import * as tx from "../components/columns";
import { api, type QueueItem, type QueuePage } from "../lib/api";
import { BANDS, filtersFromSearch, type QueueFilters, searchFromFilters, TYPES } from "../lib/filters";
import { problemOf, useResource } from "../lib/resource";
import { cn } from "../lib/utils";
import { useListKeys } from "./listKeys";
import { ReviewQueue } from "./ReviewQueue";

const PAGE_SIZE = 50;

const COLUMNS: Column<QueueItem>[] = [
  tx.transaction,
  tx.user,
  tx.type,
  tx.amount,
  tx.channel,
  tx.band,
  tx.score,
  tx.model,
  tx.scoredAt,
  tx.claimedBy,
];

function queuePath(filters: QueueFilters, cursor: string | null): string {
  const query = new URLSearchParams(searchFromFilters(filters));
  query.set("limit", String(PAGE_SIZE));
  if (cursor) query.set("cursor", cursor);
  return `/api/queue?${query}`;
}

/** The next page of the same filter appended to the rows shown. */
function joinPages(shown: QueuePage, page: QueuePage): QueuePage {
  return { items: [...shown.items, ...page.items], next_cursor: page.next_cursor };
}

/** The filters that are one choice of a few: the field, its label, its options. */
const CHOICES = [
  ["source", "Scored", [["", "both"], "inline", "stream"]],
  ["labelled", "Labelled", ["no", "yes", "any"]],
  ["sort", "Order", [["score", "highest score"], "newest"]],
] as const satisfies readonly (readonly [keyof QueueFilters, string, readonly Option[]])[];

const VIEWS = [
  ["review", "Review queue", "chosen by the active-learning job, each item with why: work it first"],
  ["flagged", "All flagged", "search every CHALLENGE and BLOCK transaction"],
] as const;

/** The Queue screen: the review queue first, then every flagged transaction to search. */
export function Queue() {
  const [params, setParams] = useSearchParams();
  const view = params.get("view") === "flagged" ? "flagged" : "review";
  return (
    <div className="grid gap-4">
      <div className="flex items-center gap-4">
        <div role="tablist" className="inline-flex rounded-lg bg-slate-100 p-1">
          {VIEWS.map(([key, title, hint]) => (
            <button
              key={key}
              role="tab"
              aria-selected={view === key}
              title={hint}
              data-testid={`tab-${key}`}
              onClick={() => setParams(key === "review" ? {} : { view: key })}
              className={cn(
                "rounded-md px-3 py-1.5 text-sm font-medium transition-colors",
                view === key ? "bg-white text-slate-900 shadow-sm" : "text-slate-500 hover:text-slate-900",
              )}
            >
              {title}
            </button>
          ))}
        </div>
        <p className="text-sm text-slate-500">{VIEWS.find(([key]) => key === view)?.[2]}</p>
      </div>
      {view === "review" ? <ReviewQueue /> : <FlaggedList />}
    </div>
  );
}

/** Every flagged transaction, filtered and searched (the view is in the URL). */
function FlaggedList() {
  const me = useMe();
  const mayLabel = me.may.includes("label");
  const [params, setParams] = useSearchParams();
  const search = params.toString();
  const filters = useMemo(() => filtersFromSearch(search), [search]);
  const path = useMemo(() => queuePath(filters, null), [filters]);
  const resource = useResource<QueuePage>(path, joinPages);
  const { data, update: updatePage } = resource;
  const items = useMemo(() => data?.items ?? [], [data]);
  const cursor = data?.next_cursor ?? null;
  // The selection belongs to one filter: a new filter starts at the first row.
  const [selection, setSelection] = useState({ path, index: 0 });
  const selected = selection.path === path ? selection.index : 0;
  const setSelected = useCallback((index: number) => setSelection({ path, index }), [path]);
  const [message, setMessage] = useState("");

  const update = (change: Partial<QueueFilters>) => {
    const next = new URLSearchParams(searchFromFilters({ ...filters, ...change }));
    next.set("view", "flagged");
    setParams(next);
  };

  const label = useCallback(
    async (item: QueueItem | undefined, verdict: "FRAUD" | "LEGIT") => {
      if (!item || !mayLabel) return;
      try {
        await api.post(`/api/transactions/${encodeURIComponent(item.transaction_id)}/label`, { label: verdict, note: "" });
        setMessage("");
        updatePage((page) => ({ ...page, items: page.items.filter((i) => i.transaction_id !== item.transaction_id) }));
      } catch (err) {
        setMessage(`${item.transaction_id}: ${problemOf(err)}`);
      }
    },
    [mayLabel, updatePage],
  );

  const claimNext = useCallback(
    (next: QueueItem | undefined) => {
      if (next && mayLabel)
        void api.post(`/api/transactions/${encodeURIComponent(next.transaction_id)}/claim`).catch(() => undefined);
    },
    [mayLabel],
  );
  useListKeys(items, selected, setSelected, label, claimNext);

  const toggle = (list: string[], value: string) => (list.includes(value) ? list.filter((v) => v !== value) : [...list, value]);

  return (
    <div className="grid gap-4">
      <Card className="flex flex-wrap items-end gap-3">
        <InputField
          label="Transaction or user id"
          id="q"
          name="q"
          defaultValue={filters.q}
          key={filters.q}
          onKeyDown={(e) => e.key === "Enter" && update({ q: e.currentTarget.value })}
        />
        <Field label="Band">
          <div className="flex gap-1">
            {BANDS.map((b) => (
              <Button
                key={b}
                size="sm"
                variant={filters.band.includes(b) ? "default" : "outline"}
                data-testid={`band-${b}`}
                onClick={() => update({ band: toggle(filters.band, b) })}
              >
                {b}
              </Button>
            ))}
          </div>
        </Field>
        <SelectField
          label="Type"
          id="type"
          value={filters.type[0] ?? ""}
          options={[["", "any"], ...TYPES]}
          onChange={(e) => update({ type: e.target.value ? [e.target.value] : [] })}
        />
        <Field label="Amount from / to" htmlFor="amount_min">
          <div className="flex gap-1">
            {(["amount_min", "amount_max"] as const).map((key) => (
              <Input
                key={`${key}${filters[key]}`}
                id={key}
                className="w-24"
                defaultValue={filters[key]}
                onBlur={(e) => update({ [key]: e.target.value })}
              />
            ))}
          </div>
        </Field>
        <Field label="Scored since / until (UTC)" htmlFor="since">
          <div className="flex gap-1">
            <Input id="since" type="datetime-local" value={filters.since} onChange={(e) => update({ since: e.target.value })} />
            <Input id="until" type="datetime-local" value={filters.until} onChange={(e) => update({ until: e.target.value })} />
          </div>
        </Field>
        <InputField
          label="Model"
          id="model_version"
          className="w-20"
          defaultValue={filters.model_version}
          key={`mv${filters.model_version}`}
          onBlur={(e) => update({ model_version: e.target.value })}
        />
        {CHOICES.map(([key, label, options]) => (
          <SelectField
            key={key}
            label={label}
            id={key}
            value={filters[key]}
            options={options}
            onChange={(e) => update({ [key]: e.target.value })}
          />
        ))}
        <Button asChild variant="outline">
          <a href={`/api/queue.csv?${searchFromFilters(filters)}`}>Export CSV</a>
        </Button>
      </Card>
      <LoadState loading={resource.loading} error={resource.error} onRetry={resource.reload} />
      {message && (
        <p className="text-sm text-red-600" role="alert" data-testid="label-message">
          {message}
        </p>
      )}
      <Card>
        <p className="mb-2 text-xs text-slate-500">
          j / k move · Enter opens · n next (claims it){mayLabel ? " · f fraud · l legit" : ""}
        </p>
        <DataTable
          data-testid="queue-table"
          columns={COLUMNS}
          rows={items}
          rowKey={(item) => item.transaction_id}
          rowProps={(_item, i) => ({
            onClick: () => setSelected(i),
            className: cn(i === selected && "bg-blue-50"),
            "data-selected": i === selected,
          })}
        />
        {items.length === 0 && <p className="p-4 text-sm text-slate-500">Nothing to review for this filter.</p>}
        {cursor && (
          <Button variant="outline" className="mt-3" onClick={() => resource.more(queuePath(filters, cursor))}>
            More
          </Button>
        )}
      </Card>
    </div>
  );
}
