import { useState } from "react";
import { useSearchParams } from "react-router-dom";
import { useMe } from "../lib/me";
import { LoadState } from "../components/LoadState";
import { Badge } from "../components/ui/badge";
import { Button } from "../components/ui/button";
import { Card, CardTitle } from "../components/ui/card";
import { Input, Label, NativeSelect } from "../components/ui/input";
import { Table, Td, Th } from "../components/ui/table";
import { api } from "../lib/api";
import { formatTime } from "../lib/format";
import { problemOf, useResource } from "../lib/resource";
import { LIST_KINDS, type ListItem, type RuleList, utcInstant } from "../lib/rules";
import { cn } from "../lib/utils";

const PLACEHOLDER: Record<string, string> = {
  user: "4242, 4243",
  customer: "cus_ABC123",
  ip: "203.0.113.7, 198.51.100.0/24",
  country: "KP, IR",
};

export function Lists() {
  const me = useMe();
  const mayEdit = me.may.includes("edit_rules");
  const lists = useResource<{ lists: RuleList[] }>("/api/lists");
  const [params, setParams] = useSearchParams();
  const selected = params.get("list");
  const list = lists.data?.lists.find((l) => l.name === selected);

  return (
    <div className="grid grid-cols-5 gap-4">
      <div className="col-span-2 grid content-start gap-4">
        <Card>
          <CardTitle>Lists</CardTitle>
          <LoadState loading={lists.loading && !lists.data} error={lists.error} onRetry={lists.reload} />
          {lists.data && lists.data.lists.length === 0 && <p className="text-sm text-slate-500">No list yet.</p>}
          {lists.data && lists.data.lists.length > 0 && (
            <Table data-testid="lists-table">
              <thead>
                <tr>
                  <Th>List</Th>
                  <Th>Kind</Th>
                  <Th className="text-right">Items</Th>
                  <Th>Created</Th>
                </tr>
              </thead>
              <tbody>
                {lists.data.lists.map((l) => (
                  <tr
                    key={l.name}
                    onClick={() => setParams({ list: l.name })}
                    className={cn("cursor-pointer hover:bg-slate-50", l.name === selected && "bg-blue-50")}
                  >
                    <Td className="break-all font-mono text-xs font-semibold" title={l.description}>
                      {l.name}
                    </Td>
                    <Td>
                      <Badge value={l.kind} />
                    </Td>
                    <Td className="text-right">{l.items.toLocaleString("en-US")}</Td>
                    <Td className="whitespace-nowrap text-xs text-slate-500" title={`by ${l.created_by}`}>
                      {formatTime(l.created_at).slice(0, 16)}
                    </Td>
                  </tr>
                ))}
              </tbody>
            </Table>
          )}
        </Card>
        {mayEdit && (
          <CreateList
            onCreated={(name) => {
              lists.reload();
              setParams({ list: name });
            }}
          />
        )}
      </div>
      <div className="col-span-3">
        {list ? (
          <Items
            key={list.name}
            list={list}
            mayEdit={mayEdit}
            onChanged={lists.reload}
            onDeleted={() => {
              lists.reload();
              setParams({});
            }}
          />
        ) : (
          <Card>
            <p className="text-sm text-slate-500">
              {selected && lists.data ? `No list named ${selected}.` : "Choose a list to see its items."}
            </p>
          </Card>
        )}
      </div>
    </div>
  );
}

function CreateList({ onCreated }: { onCreated: (name: string) => void }) {
  const [form, setForm] = useState({ name: "", kind: "user", description: "", reason: "" });
  const [message, setMessage] = useState("");
  async function create() {
    try {
      await api.post("/api/lists", form);
      setMessage(`created ${form.name}`);
      onCreated(form.name);
      setForm({ name: "", kind: form.kind, description: "", reason: "" });
    } catch (err) {
      setMessage(problemOf(err));
    }
  }
  const set = (change: Partial<typeof form>) => setForm((f) => ({ ...f, ...change }));
  return (
    <Card>
      <CardTitle>New list</CardTitle>
      <div className="grid grid-cols-[1fr_8rem] gap-2">
        <div className="flex flex-col gap-1">
          <Label htmlFor="list-name">Name</Label>
          <Input id="list-name" value={form.name} placeholder="blocked_users" onChange={(e) => set({ name: e.target.value })} />
        </div>
        <div className="flex flex-col gap-1">
          <Label htmlFor="list-kind">Kind</Label>
          <NativeSelect id="list-kind" value={form.kind} onChange={(e) => set({ kind: e.target.value })}>
            {LIST_KINDS.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </NativeSelect>
        </div>
        <div className="col-span-2 flex flex-col gap-1">
          <Label htmlFor="list-description">Description</Label>
          <Input
            id="list-description"
            value={form.description}
            maxLength={500}
            onChange={(e) => set({ description: e.target.value })}
          />
        </div>
        <div className="col-span-2 flex flex-col gap-1">
          <Label htmlFor="list-reason">Reason</Label>
          <Input id="list-reason" value={form.reason} maxLength={500} onChange={(e) => set({ reason: e.target.value })} />
        </div>
      </div>
      <div className="mt-3 flex items-center gap-3">
        <Button onClick={create} disabled={!form.name || !form.reason}>
          Create list
        </Button>
        {message && (
          <span className="text-sm" role="status">
            {message}
          </span>
        )}
      </div>
    </Card>
  );
}

function Items({
  list,
  mayEdit,
  onChanged,
  onDeleted,
}: {
  list: RuleList;
  mayEdit: boolean;
  onChanged: () => void;
  onDeleted: () => void;
}) {
  const items = useResource<{ items: ListItem[] }>(`/api/lists/${encodeURIComponent(list.name)}`);
  const [values, setValues] = useState("");
  const [expires, setExpires] = useState("");
  const [reason, setReason] = useState("");
  const [message, setMessage] = useState("");

  async function change(path: "items" | "remove", chosen: string[]) {
    try {
      const body: Record<string, unknown> = { values: chosen, reason };
      if (path === "items" && expires) body.expires_at = utcInstant(expires);
      const done = await api.post<{ added?: number; removed?: number }>(
        `/api/lists/${encodeURIComponent(list.name)}/${path}`,
        body,
      );
      setMessage(path === "items" ? `added ${done.added}` : `removed ${done.removed}`);
      if (path === "items") setValues("");
      items.reload();
      onChanged();
    } catch (err) {
      setMessage(problemOf(err));
    }
  }

  /** Delete the whole list; the server refuses (naming them) while a live or shadow rule reads it. */
  async function deleteList() {
    try {
      await api.post(`/api/lists/${encodeURIComponent(list.name)}/delete`, { reason });
      onDeleted();
    } catch (err) {
      setMessage(problemOf(err));
    }
  }

  const entered = values.split(/[\s,]+/).filter(Boolean);
  return (
    <Card data-testid="list-items">
      <CardTitle>
        {list.name} · {list.kind} · {list.items.toLocaleString("en-US")} in force
      </CardTitle>
      {list.description && <p className="mb-3 text-sm text-slate-600">{list.description}</p>}
      {mayEdit && (
        <div className="mb-4 grid grid-cols-[1fr_13rem] gap-2 rounded-md bg-slate-50 p-3">
          <div className="flex flex-col gap-1">
            <Label htmlFor="item-values">Values (comma or space separated)</Label>
            <Input
              id="item-values"
              value={values}
              placeholder={PLACEHOLDER[list.kind]}
              onChange={(e) => setValues(e.target.value)}
            />
          </div>
          <div className="flex flex-col gap-1">
            <Label htmlFor="item-expires">Expires (UTC, optional)</Label>
            <Input id="item-expires" type="datetime-local" value={expires} onChange={(e) => setExpires(e.target.value)} />
          </div>
          <div className="flex flex-col gap-1">
            <Label htmlFor="item-reason">Reason (for adding and removing)</Label>
            <Input
              id="item-reason"
              value={reason}
              maxLength={500}
              placeholder="case 1234"
              onChange={(e) => setReason(e.target.value)}
            />
          </div>
          <div className="flex items-end gap-2">
            <Button className="flex-1" onClick={() => change("items", entered)} disabled={!entered.length || !reason}>
              Add
            </Button>
            <Button
              variant="fraud"
              onClick={deleteList}
              disabled={!reason}
              title={reason ? "delete the list and its items" : "give a reason first"}
            >
              Delete list
            </Button>
          </div>
          {message && (
            <p className="col-span-2 text-sm" role="status">
              {message}
            </p>
          )}
        </div>
      )}
      <LoadState loading={items.loading && !items.data} error={items.error} onRetry={items.reload} />
      {items.data && (
        <Table>
          <thead>
            <tr>
              <Th>Value</Th>
              <Th>Expires</Th>
              <Th>Added</Th>
              <Th>By</Th>
              <Th>Reason</Th>
              {mayEdit && <Th />}
            </tr>
          </thead>
          <tbody>
            {items.data.items.map((item) => {
              const expired = isExpired(item);
              return (
                <tr key={item.value} className={cn(expired && "text-slate-400")}>
                  <Td
                    className="font-mono text-xs"
                    title={item.shown === item.value ? undefined : "an IP address, kept only as its keyed hash"}
                  >
                    {item.shown}
                  </Td>
                  <Td>{item.expires_at ? `${formatTime(item.expires_at)}${expired ? " (expired)" : ""}` : "never"}</Td>
                  <Td>{formatTime(item.added_at)}</Td>
                  <Td>{item.added_by}</Td>
                  <Td>{item.reason}</Td>
                  {mayEdit && (
                    <Td className="text-right">
                      <Button
                        size="sm"
                        variant="ghost"
                        disabled={!reason}
                        title={reason ? "" : "give a reason first"}
                        onClick={() => change("remove", [item.value])}
                      >
                        Remove
                      </Button>
                    </Td>
                  )}
                </tr>
              );
            })}
          </tbody>
        </Table>
      )}
      {items.data && items.data.items.length === 0 && <p className="p-2 text-sm text-slate-500">The list is empty.</p>}
      {items.data && items.data.items.length >= 200 && (
        <p className="p-2 text-xs text-slate-500">The 200 most recently added items are shown.</p>
      )}
    </Card>
  );
}

/** Whether an item's expiry has passed as the screen renders it (the list reloads after every
 *  change, so "now" is recent enough for a struck-through row). */
function isExpired(item: ListItem): boolean {
  return item.expires_at !== null && new Date(item.expires_at).getTime() <= Date.now();
}
