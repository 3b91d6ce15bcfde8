import { useEffect, useMemo, useRef, useState } from "react";
import { useSearchParams } from "react-router-dom";
import { useMe } from "../lib/me";
import { LoadState } from "../components/LoadState";
import { Badge } from "../components/ui/badge";
import { Button } from "../components/ui/button";
import { Card, CardTitle } from "../components/ui/card";
import { Field, InputField, SelectField } from "../components/ui/input";
import { type Column, DataTable } from "../components/ui/table";
import * as tx from "../components/columns";
import { api, ApiError, type BacktestResult, type RuleRow, type RulesAnswer } from "../lib/api";
import { formatAmount, formatTime } from "../lib/format";
import { isAbort, problemOf, useResource } from "../lib/resource";
import {
  ACTIONS,
  type Action,
  type Draft,
  errorLocation,
  isRefusal,
  lastDays,
  mayPublish,
  type Refusal,
  sameRule,
  utcInstant,
} from "../lib/rules";
import { cn } from "../lib/utils";

export const ACTION_CLASS: Record<string, string> = {
  allow: "bg-green-100 text-green-800",
  review: "bg-amber-100 text-amber-800",
  block: "bg-red-100 text-red-800",
};
export const MODE_CLASS: Record<string, string> = {
  live: "bg-slate-900 text-white",
  shadow: "bg-violet-100 text-violet-800",
  draft: "bg-slate-100 text-slate-700",
  off: "bg-white text-slate-400 ring-1 ring-slate-200",
};
const EMPTY: Draft = { name: "", action: "review", condition: "" };

export function Rules() {
  const me = useMe();
  const mayEdit = me.may.includes("edit_rules");
  const rules = useResource<RulesAnswer>("/api/rules");
  const [params, setParams] = useSearchParams();
  const selected = params.get("rule");
  const saved = rules.data?.rules.find((r) => r.name === selected);
  const [message, setMessage] = useState("");
  // The reason outlives the editor (it is remounted when a new rule is saved): it goes with
  // the save and the publishing that follows.
  const [reason, setReason] = useState("");
  const select = (name: string | null) => {
    setMessage("");
    setParams(name ? { rule: name } : {});
  };

  return (
    <div className="grid grid-cols-5 gap-4">
      <Card className="col-span-2 self-start">
        <div className="mb-3 flex items-center justify-between">
          <CardTitle className="mb-0">
            Rules · {rules.data?.version ? `served set v${rules.data.version}` : "none served yet"}
          </CardTitle>
          {mayEdit && (
            <Button size="sm" variant="outline" onClick={() => select(null)} data-testid="new-rule">
              New rule
            </Button>
          )}
        </div>
        <LoadState loading={rules.loading && !rules.data} error={rules.error} onRetry={rules.reload} />
        {rules.data && <RuleTable rules={rules.data.rules} selected={selected} onSelect={select} />}
      </Card>
      <div className="col-span-3 grid content-start gap-4">
        {rules.data && selected && !saved && (
          <p className="text-sm text-slate-500">{rules.loading ? "Loading…" : `No rule named ${selected}.`}</p>
        )}
        {rules.data && (!selected || saved) && (
          <Editor
            key={selected ?? ""}
            saved={saved}
            answer={rules.data}
            mayEdit={mayEdit}
            message={message}
            setMessage={setMessage}
            reason={reason}
            setReason={setReason}
            onSaved={(name) => {
              rules.reload();
              if (name !== selected) setParams({ rule: name });
            }}
            onPublished={rules.reload}
          />
        )}
      </div>
    </div>
  );
}

const RULE_COLUMNS: Column<RuleRow>[] = [
  { heading: "#", cellClassName: "text-slate-500", cell: (r) => r.position },
  { heading: "Rule", cellClassName: "break-all font-mono text-xs font-semibold", cell: (r) => r.name },
  { heading: "Action", cell: (r) => <Badge value={r.action} className={ACTION_CLASS[r.action]} /> },
  { heading: "Mode", cell: (r) => <Badge value={r.mode} className={MODE_CLASS[r.mode]} data-testid={`mode-${r.name}`} /> },
  { heading: "Version", cell: (r) => `v${r.version}` },
  {
    heading: "Changed",
    cellClassName: "whitespace-nowrap text-xs text-slate-500",
    cellProps: (r) => ({ title: `by ${r.updated_by}` }),
    cell: (r) => formatTime(r.updated_at).slice(5, 16),
  },
];

function RuleTable({
  rules,
  selected,
  onSelect,
}: {
  rules: RuleRow[];
  selected: string | null;
  onSelect: (name: string) => void;
}) {
  if (rules.length === 0)
    return <p className="text-sm text-slate-500">No rule yet: the model's band decides every transaction.</p>;
  return (
    <DataTable
      data-testid="rules-table"
      columns={RULE_COLUMNS}
      rows={rules}
      rowKey={(r) => r.name}
      rowProps={(r) => ({
        onClick: () => onSelect(r.name),
        "data-rule": r.name,
        className: cn("cursor-pointer hover:bg-slate-50", r.name === selected && "bg-blue-50"),
      })}
    />
  );
}

interface EditorProps {
  saved: RuleRow | undefined;
  answer: RulesAnswer;
  mayEdit: boolean;
  onSaved: (name: string) => void;
  onPublished: () => void;
  message: string;
  setMessage: (message: string) => void;
  reason: string;
  setReason: (reason: string) => void;
}

function Editor({ saved, answer, mayEdit, onSaved, onPublished, message, setMessage, reason, setReason }: EditorProps) {
  const [draft, setDraft] = useState<Draft>(
    saved ? { name: saved.name, action: saved.action, condition: saved.condition } : EMPTY,
  );
  const [position, setPosition] = useState(String(saved?.position ?? Math.max(0, ...answer.rules.map((r) => r.position)) + 10));
  const [refusal, setRefusal] = useState<Refusal | null>(null);
  const [busy, setBusy] = useState(false);
  const condition = useRef<HTMLTextAreaElement>(null);
  const [backtested, setBacktested] = useState<Draft | null>(null);
  const isSaved = sameRule(draft, saved);
  const publishable = mayPublish(draft, saved, backtested);

  const edit = (change: Partial<Draft>) => {
    setDraft((d) => ({ ...d, ...change }));
    setRefusal(null);
  };

  async function save() {
    setBusy(true);
    setMessage("");
    try {
      const body = { action: draft.action, condition: draft.condition, position: Number(position), reason };
      await api.put(`/api/rules/${encodeURIComponent(draft.name)}`, body);
      setRefusal(null);
      setMessage(`saved ${draft.name} as a draft: backtest it to publish it`);
      onSaved(draft.name);
    } catch (err) {
      if (err instanceof ApiError && isRefusal(err.detail)) showRefusal(err.detail);
      else setMessage(problemOf(err));
    } finally {
      setBusy(false);
    }
  }

  function showRefusal(found: Refusal) {
    setRefusal(found);
    const at = errorLocation(draft.condition, found.position);
    if (at && condition.current) {
      condition.current.focus();
      condition.current.setSelectionRange(at.offset, at.offset + 1);
    }
  }

  async function publish(mode: "shadow" | "live" | "off") {
    setBusy(true);
    try {
      const done = await api.post<{ version: number }>(`/api/rules/${encodeURIComponent(draft.name)}/publish`, { mode, reason });
      setMessage(`${draft.name} is ${mode}: rule set v${done.version} published; the scorers swap it in within a second`);
      onPublished();
    } catch (err) {
      setMessage(problemOf(err));
    } finally {
      setBusy(false);
    }
  }

  const names = useMemo(() => answer.names.join(", "), [answer.names]);
  const lists = Object.entries(answer.lists);
  return (
    <>
      <Card data-testid="rule-editor">
        <CardTitle>{saved ? `Rule ${saved.name} (v${saved.version}, ${saved.mode})` : "New rule"}</CardTitle>
        <div className="grid grid-cols-[1fr_10rem_6rem] gap-3">
          <InputField
            label="Name"
            id="rule-name"
            value={draft.name}
            disabled={!!saved || !mayEdit}
            placeholder="big_transfer_new_device"
            onChange={(e) => edit({ name: e.target.value })}
          />
          <SelectField
            label="Action"
            id="rule-action"
            value={draft.action}
            disabled={!mayEdit}
            options={ACTIONS}
            onChange={(e) => edit({ action: e.target.value as Action })}
          />
          <InputField
            label="Order"
            id="rule-position"
            type="number"
            min={0}
            value={position}
            disabled={!mayEdit}
            onChange={(e) => setPosition(e.target.value)}
          />
        </div>
        <Field label="Condition (CEL)" htmlFor="rule-condition" className="mt-3">
          <textarea
            id="rule-condition"
            ref={condition}
            rows={4}
            spellCheck={false}
            readOnly={!mayEdit}
            value={draft.condition}
            placeholder="amount > 5000.0 && type == 'TRANSFER' && !in_list('trusted_users', user_id)"
            className={cn(
              "rounded-md border bg-white p-2 font-mono text-sm focus:outline-none focus:ring-2 focus:ring-slate-400",
              refusal ? "border-red-400" : "border-slate-300",
            )}
            onChange={(e) => edit({ condition: e.target.value })}
          />
          {refusal && <CompileError refusal={refusal} condition={draft.condition} />}
          <details className="text-xs text-slate-500">
            <summary className="cursor-pointer">Names a condition may use</summary>
            <p className="mt-1 font-mono">{names}</p>
            <p className="mt-1">
              Lists: <span className="font-mono">in_list('name', value)</span> with{" "}
              {lists.length ? lists.map(([n, k]) => `${n} (${k})`).join(", ") : "no list yet"}.
            </p>
          </details>
        </Field>
        {mayEdit && (
          <div className="mt-3 flex items-end gap-2">
            <InputField
              label="Reason (kept in the audit log)"
              id="rule-reason"
              fieldClassName="flex-1"
              value={reason}
              maxLength={500}
              placeholder="case 1234: mule accounts"
              onChange={(e) => setReason(e.target.value)}
            />
            <Button
              onClick={save}
              disabled={busy || !draft.name || !draft.condition || !reason || isSaved}
              data-testid="save-rule"
            >
              Save
            </Button>
          </div>
        )}
        {message && (
          <p className="mt-2 text-sm" role="status" data-testid="rule-message">
            {message}
          </p>
        )}
      </Card>
      {mayEdit && saved && (
        <Backtest rule={draft} isSaved={isSaved} onDone={setBacktested}>
          <div className="flex flex-wrap items-center gap-2">
            <Button
              onClick={() => publish("shadow")}
              disabled={busy || !publishable || !reason || saved.mode === "shadow"}
              variant="outline"
              data-testid="publish-shadow"
            >
              Publish as shadow
            </Button>
            <Button
              onClick={() => publish("live")}
              disabled={busy || !publishable || !reason || saved.mode === "live"}
              data-testid="publish-live"
            >
              Publish live
            </Button>
            {(saved.mode === "live" || saved.mode === "shadow") && (
              <Button onClick={() => publish("off")} disabled={busy || !reason} variant="ghost">
                Turn off
              </Button>
            )}
            <span className="text-xs text-slate-500">
              {!isSaved
                ? "Save the rule to backtest it."
                : !publishable
                  ? "Backtest the rule as it stands to publish it."
                  : !reason
                    ? "Give a reason above to publish."
                    : ""}
            </span>
          </div>
        </Backtest>
      )}
    </>
  );
}

function CompileError({ refusal, condition }: { refusal: Refusal; condition: string }) {
  const at = errorLocation(condition, refusal.position);
  return (
    <div className="rounded-md border border-red-200 bg-red-50 p-2 text-sm text-red-800" role="alert" data-testid="compile-error">
      <p>
        {at ? `Line ${at.line}, column ${at.column}: ` : ""}
        {refusal.problem}
      </p>
      {at && (
        <pre className="mt-1 overflow-x-auto font-mono text-xs leading-5 text-red-900">
          {at.text}
          {"\n"}
          {" ".repeat(at.column - 1)}^
        </pre>
      )}
    </div>
  );
}

function Backtest({
  rule,
  isSaved,
  onDone,
  children,
}: {
  rule: Draft;
  isSaved: boolean;
  onDone: (of: Draft) => void;
  children: React.ReactNode;
}) {
  const [period, setPeriod] = useState(() => lastDays(new Date(), 7));
  const [result, setResult] = useState<{ of: Draft; answer: BacktestResult } | null>(null);
  const [error, setError] = useState("");
  const [running, setRunning] = useState(false);
  const inFlight = useRef<AbortController | null>(null);
  // A backtest of older text is stale: cancel it when the text or the screen goes away.
  useEffect(() => () => inFlight.current?.abort(), [rule.name, rule.action, rule.condition]);

  async function run() {
    inFlight.current?.abort();
    const controller = new AbortController();
    inFlight.current = controller;
    const of = { ...rule };
    setRunning(true);
    setError("");
    try {
      const body = { period_from: utcInstant(period.from), period_to: utcInstant(period.to) };
      const answer = await api.post<BacktestResult>(
        `/api/rules/${encodeURIComponent(of.name)}/backtest`,
        body,
        controller.signal,
      );
      setResult({ of, answer });
      onDone(of);
    } catch (err) {
      if (!isAbort(err)) setError(problemOf(err));
    } finally {
      if (inFlight.current === controller) setRunning(false);
    }
  }

  const current = result && sameRule(rule, result.of) ? result.answer : null;
  return (
    <Card data-testid="backtest">
      <CardTitle>Backtest over stored scores</CardTitle>
      <div className="flex flex-wrap items-end gap-2">
        {(["from", "to"] as const).map((end) => (
          <InputField
            key={end}
            label={`${end === "from" ? "From" : "To"} (UTC)`}
            id={`backtest-${end}`}
            type="datetime-local"
            value={period[end]}
            onChange={(e) => setPeriod((p) => ({ ...p, [end]: e.target.value }))}
          />
        ))}
        <Button variant="outline" onClick={run} disabled={!isSaved || running} data-testid="run-backtest">
          {running ? "Backtesting…" : "Backtest"}
        </Button>
      </div>
      {error && (
        <p className="mt-2 text-sm text-red-700" role="alert">
          {error}
        </p>
      )}
      {result && !current && (
        <p className="mt-2 text-sm text-slate-500">The rule changed since its last backtest: run it again.</p>
      )}
      {current && <BacktestFigures result={current} />}
      <div className="mt-4 border-t border-slate-100 pt-3">{children}</div>
      {current && <BacktestTransactions result={current} />}
    </Card>
  );
}

function Figure({ label, value, testid }: { label: string; value: React.ReactNode; testid?: string }) {
  return (
    <div className="rounded-md bg-slate-50 px-3 py-2">
      <div className="text-xs text-slate-500">{label}</div>
      <div className="text-lg font-semibold" data-testid={testid}>
        {value}
      </div>
    </div>
  );
}

function BacktestFigures({ result }: { result: BacktestResult }) {
  return (
    <div className="mt-3 grid gap-3" data-testid="backtest-result">
      <p className="text-sm text-slate-600">
        {formatTime(result.period_from)} – {formatTime(result.period_to)}: the rule matches{" "}
        <b data-testid="backtest-matched">{result.matched}</b> of {result.considered} scored transactions.
      </p>
      <div className="grid grid-cols-4 gap-2">
        {(["ALLOW", "CHALLENGE", "BLOCK"] as const).map((band) => (
          <Figure key={band} label={`model said ${band}`} value={result.by_band[band] ?? 0} testid={`backtest-band-${band}`} />
        ))}
        <Figure
          label="labelled fraud / legit"
          value={
            <>
              <span data-testid="backtest-fraud">{result.labelled.FRAUD}</span> /{" "}
              <span data-testid="backtest-legit">{result.labelled.LEGIT}</span>
            </>
          }
        />
        <Figure label="value at stake" value={formatAmount(result.value)} testid="backtest-value" />
        <Figure label="of which labelled fraud" value={formatAmount(result.fraud_value)} />
      </div>
    </div>
  );
}

const BACKTEST_COLUMNS: Column<BacktestResult["transactions"][number]>[] = [
  { ...tx.transaction, cellClassName: "whitespace-nowrap" },
  tx.user,
  tx.type,
  tx.amount,
  tx.band,
  tx.score,
  { heading: "Label", cell: (t) => (t.label ? <Badge value={t.label} /> : "") },
  { ...tx.scoredAt, cellClassName: "whitespace-nowrap" },
];

function BacktestTransactions({ result }: { result: BacktestResult }) {
  return (
    <div className="mt-4">
      {result.transactions.length > 0 && (
        <DataTable
          data-testid="backtest-transactions"
          columns={BACKTEST_COLUMNS}
          rows={result.transactions}
          rowKey={(t) => t.transaction_id}
        />
      )}
      {result.matched > result.transactions.length && (
        <p className="text-xs text-slate-500">
          The first {result.transactions.length} of {result.matched} are listed.
        </p>
      )}
    </div>
  );
}
