import { useState } from "react";
import { useMe } from "../lib/me";
import { LoadState } from "../components/LoadState";
import { Badge } from "../components/ui/badge";
import { Button } from "../components/ui/button";
import { Card, CardTitle } from "../components/ui/card";
import { ConfirmDialog } from "../components/ui/dialog";
import { type Column, DataTable } from "../components/ui/table";
import { api, type Schemas } from "../lib/api";
import { formatScore, formatTime } from "../lib/format";
import { problemOf, useResource } from "../lib/resource";

type Models = Schemas["Models"];
type Drift = Schemas["Drift"];

function metric(value: unknown): string {
  return typeof value === "number" ? formatScore(value) : value === null || value === undefined ? "—" : String(value);
}

type Version = Schemas["VersionSummary"];

/** The published versions: thresholds, the first metrics, the MLflow run, and a rollback
 *  button (given `rollback`) on every version but the served one. */
function versionColumns(
  metricNames: string[],
  rollback: ((version: string) => void) | null,
  served: string | null,
): Column<Version>[] {
  return [
    { heading: "Version", cellClassName: "font-semibold", cell: (v) => v.version },
    { heading: "Published", cell: (v) => formatTime(v.published_at) },
    { heading: "Challenge ≥", cell: (v) => formatScore(v.thresholds.challenge) },
    { heading: "Block ≥", cell: (v) => formatScore(v.thresholds.block) },
    ...metricNames.map((m): Column<Version> => ({ heading: m, cell: (v) => metric(v.metrics[m]) })),
    {
      heading: "MLflow",
      cell: (v) =>
        v.mlflow_run_url ? (
          <a className="text-blue-700 hover:underline" href={v.mlflow_run_url} rel="noreferrer" target="_blank">
            run
          </a>
        ) : (
          "—"
        ),
    },
    {
      heading: null,
      cell: (v) =>
        rollback &&
        v.version !== served && (
          <ConfirmDialog
            title={`Serve ${v.version} again?`}
            description="The version is re-published; every scorer checks and hot-reloads it."
            trigger={
              <Button size="sm" variant="outline">
                Roll back to {v.version}
              </Button>
            }
            confirm={
              <Button size="sm" onClick={() => rollback(v.version)}>
                Roll back
              </Button>
            }
          />
        ),
    },
  ];
}

const DEPLOYMENT_COLUMNS: Column<Schemas["Deployment"]>[] = [
  { heading: "Version", cell: (d) => d.version },
  { heading: "From", cell: (d) => formatTime(d.served_from) },
  { heading: "Until", cell: (d) => (d.served_until ? formatTime(d.served_until) : <Badge value="serving" />) },
  { heading: "Where", cell: (d) => `${d.host}:${d.pid}` },
  { heading: "Reason", cell: (d) => d.reason ?? "" },
];

const EVENT_COLUMNS: Column<Schemas["AuditEvent"]>[] = [
  { heading: "When", cell: (e) => formatTime(e.at) },
  { heading: "What", cell: (e) => e.kind },
  { heading: "Version", cell: (e) => e.subject },
  { heading: "By", cell: (e) => String(e.detail.user ?? "") },
];

export function Models() {
  const me = useMe();
  const mayRollback = me.may.includes("rollback");
  const resource = useResource<Models>("/api/models");
  const models = resource.data;
  const [message, setMessage] = useState("");

  async function rollback(to: string) {
    try {
      const result = await api.post<Schemas["Published"]>("/api/models/rollback", { to });
      setMessage(`re-published ${result.published}; the scorers reload it`);
      resource.reload();
    } catch (err) {
      setMessage(problemOf(err));
    }
  }

  if (!models) return <LoadState loading={resource.loading} error={resource.error} onRetry={resource.reload} />;
  const metricNames = [
    ...new Set(models.versions.flatMap((v) => Object.keys(v.metrics).filter((k) => typeof v.metrics[k] === "number"))),
  ].slice(0, 6);
  return (
    <div className="grid gap-4">
      {message && <p role="status">{message}</p>}
      <Card>
        <CardTitle>Published versions (served: {models.served ?? "—"})</CardTitle>
        <DataTable
          columns={versionColumns(metricNames, mayRollback ? rollback : null, models.served)}
          rows={models.versions}
          rowKey={(v) => v.version}
        />
      </Card>
      <DriftCard drift={models.drift} />
      <div className="grid grid-cols-2 gap-4">
        <Card>
          <CardTitle>Deployments</CardTitle>
          <DataTable columns={DEPLOYMENT_COLUMNS} rows={models.deployments} rowKey={(d) => d.id} />
        </Card>
        <Card>
          <CardTitle>Promotions and rollbacks</CardTitle>
          <DataTable columns={EVENT_COLUMNS} rows={models.events} rowKey={(_e, i) => i} />
        </Card>
      </div>
    </div>
  );
}

function DriftCard({ drift }: { drift: Drift | null }) {
  if (!drift) {
    return (
      <Card data-testid="drift">
        <CardTitle>Drift watch</CardTitle>
        <p className="text-sm text-slate-600">No drift report yet (the hourly fraud_drift_watch DAG writes one per window).</p>
      </Card>
    );
  }
  const verdict = drift.drifted === null ? "too few rows to judge" : drift.drifted ? "drifted" : "like the training reference";
  return (
    <Card data-testid="drift">
      <CardTitle>
        Drift watch {drift.alarm && <Badge value="ALARM" className="bg-red-600 text-white" data-testid="drift-alarm" />}
      </CardTitle>
      <p className="text-sm">
        Window {formatTime(drift.window_start)} – {formatTime(drift.window_end)} against {drift.model_version}: {drift.rows} rows,{" "}
        <span className="font-semibold" data-testid="drift-verdict">
          {verdict}
        </span>{" "}
        ({drift.consecutive} drifted in a row).
      </p>
      <p className="text-sm">
        Drifted:{" "}
        <span data-testid="drift-features">{drift.drifted_features.length ? drift.drifted_features.join(", ") : "none"}</span>
        {" · "}max feature PSI {metric(drift.max_feature_psi)} · score PSI {metric(drift.score_psi)} · band PSI{" "}
        {metric(drift.band_psi)}
        {" · "}skew: {drift.skew_mismatches} mismatches in {drift.skew_checked} samples
        {drift.last_alarm_at && <> · last alarm {formatTime(drift.last_alarm_at)}</>}
      </p>
    </Card>
  );
}
