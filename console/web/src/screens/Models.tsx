import { useState } from "react";
import { useMe } from "../lib/me";
import { LoadState } from "../components/LoadState";
import { Badge } from "../components/ui/badge";
import { Button } from "../components/ui/button";
import { Card, CardTitle } from "../components/ui/card";
import { ConfirmDialog } from "../components/ui/dialog";
import { Table, Td, Th } from "../components/ui/table";
import { api, type Schemas } from "../lib/api";
import { formatScore, formatTime } from "../lib/format";
import { problemOf, useResource } from "../lib/resource";

type Models = Schemas["Models"];
type Drift = Schemas["Drift"];

function metric(value: unknown): string {
  return typeof value === "number" ? formatScore(value) : value === null || value === undefined ? "—" : String(value);
}

export function Models() {
  const me = useMe();
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
        <Table>
          <thead>
            <tr>
              <Th>Version</Th>
              <Th>Published</Th>
              <Th>Challenge ≥</Th>
              <Th>Block ≥</Th>
              {metricNames.map((m) => (
                <Th key={m}>{m}</Th>
              ))}
              <Th>MLflow</Th>
              <Th />
            </tr>
          </thead>
          <tbody>
            {models.versions.map((v) => (
              <tr key={v.version}>
                <Td className="font-semibold">{v.version}</Td>
                <Td>{formatTime(v.published_at)}</Td>
                <Td>{formatScore(v.thresholds.challenge)}</Td>
                <Td>{formatScore(v.thresholds.block)}</Td>
                {metricNames.map((m) => (
                  <Td key={m}>{metric(v.metrics[m])}</Td>
                ))}
                <Td>
                  {v.mlflow_run_url ? (
                    <a className="text-blue-700 hover:underline" href={v.mlflow_run_url} rel="noreferrer" target="_blank">
                      run
                    </a>
                  ) : (
                    "—"
                  )}
                </Td>
                <Td>
                  {me.may.includes("rollback") && v.version !== models.served && (
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
                  )}
                </Td>
              </tr>
            ))}
          </tbody>
        </Table>
      </Card>
      <DriftCard drift={models.drift} />
      <div className="grid grid-cols-2 gap-4">
        <Card>
          <CardTitle>Deployments</CardTitle>
          <Table>
            <thead>
              <tr>
                <Th>Version</Th>
                <Th>From</Th>
                <Th>Until</Th>
                <Th>Where</Th>
                <Th>Reason</Th>
              </tr>
            </thead>
            <tbody>
              {models.deployments.map((d) => (
                <tr key={d.id}>
                  <Td>{d.version}</Td>
                  <Td>{formatTime(d.served_from)}</Td>
                  <Td>{d.served_until ? formatTime(d.served_until) : <Badge value="serving" />}</Td>
                  <Td>
                    {d.host}:{d.pid}
                  </Td>
                  <Td>{d.reason ?? ""}</Td>
                </tr>
              ))}
            </tbody>
          </Table>
        </Card>
        <Card>
          <CardTitle>Promotions and rollbacks</CardTitle>
          <Table>
            <thead>
              <tr>
                <Th>When</Th>
                <Th>What</Th>
                <Th>Version</Th>
                <Th>By</Th>
              </tr>
            </thead>
            <tbody>
              {models.events.map((e, i) => (
                <tr key={i}>
                  <Td>{formatTime(e.at)}</Td>
                  <Td>{e.kind}</Td>
                  <Td>{e.subject}</Td>
                  <Td>{String(e.detail.user ?? "")}</Td>
                </tr>
              ))}
            </tbody>
          </Table>
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
