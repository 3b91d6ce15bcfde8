#!/usr/bin/env bash
# The fraudops demo: run the training pipeline once through Airflow, then say where to look.
# Assumes `make install` and `python -m devstack up` (the Makefile's demo target
# does both); the endpoints come from the dev stack's settings (`devstack env`).
# Triggers the `fraud_training` DAG over Airflow's REST API, prints each task's state as it
# changes, and exits non-zero if the run fails.
set -euo pipefail
# When `make demo` began (epoch seconds), so that the duration printed counts the install.
STARTED=${DEMO_STARTED:-$(date +%s)}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"
eval "$(cd "$ROOT" && "$PY" -m devstack env)"
AIRFLOW=$AIRFLOW_URL
MLFLOW=$MLFLOW_TRACKING_URI
DAG=fraud_training
TIMEOUT=${DEMO_TIMEOUT_SECONDS:-3600}

say() { printf '[demo] %s\n' "$*"; }
field() { "$PY" -c "import json,sys; print(json.load(sys.stdin)$1)"; }
api() { # method path [json body]
  curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${3:+-d "$3"} "$AIRFLOW/api/v2$2"
}

# The local Airflow runs SimpleAuthManager with every user an admin: a token needs no login.
TOKEN=$(curl -sf "$AIRFLOW/auth/token" | field "['access_token']")

say "waiting for Airflow to parse the $DAG DAG"
for _ in $(seq 120); do api GET "/dags/$DAG" >/dev/null 2>&1 && break || sleep 2; done
# Unpausing may make the scheduler start the latest daily run at once (Airflow 3.3 does so
# on a resume): follow that run rather than queue a second one behind it.
api PATCH "/dags/$DAG" '{"is_paused": false}' >/dev/null
RUN_ID=""
for _ in $(seq 10); do
  RUN_ID=$(api GET "/dags/$DAG/dagRuns?state=queued&state=running" | "$PY" -c "import json,sys
print(next((r['dag_run_id'] for r in json.load(sys.stdin)['dag_runs']), ''))" || true)
  [[ -n "$RUN_ID" ]] && break || sleep 2
done
if [[ -n "$RUN_ID" ]]; then
  say "following $DAG run $RUN_ID, started by unpausing: $AIRFLOW/dags/$DAG/runs/$RUN_ID"
else
  RUN_ID=$(api POST "/dags/$DAG/dagRuns" '{"logical_date": null}' | field "['dag_run_id']")
  say "triggered $DAG run $RUN_ID: $AIRFLOW/dags/$DAG/runs/$RUN_ID"
fi

deadline=$((SECONDS + TIMEOUT))
last=""
while :; do
  state=$(api GET "/dags/$DAG/dagRuns/$RUN_ID" | field "['state']")
  if [[ "$state" == queued ]]; then # max_active_runs=1: e.g. the daily run unpausing started
    progress="queued behind another $DAG run (one run at a time)"
  else
    progress=$(api GET "/dags/$DAG/dagRuns/$RUN_ID/taskInstances" | "$PY" -c "import json,sys
print(' '.join(f\"{t['task_id']}={t['state'] or 'waiting'}\" for t in json.load(sys.stdin)['task_instances']))")
  fi
  [[ "$progress" != "$last" ]] && say "$progress" && last=$progress
  [[ "$state" == success || "$state" == failed ]] && break
  ((SECONDS < deadline)) || { say "still $state after ${TIMEOUT}s; giving up waiting"; exit 1; }
  sleep 10
done
say "run $RUN_ID finished: $state"
[[ -f "$ROOT/reports/promotion.json" ]] && "$PY" -c "import json,sys
p = json.load(open(sys.argv[1]))
print(f\"[demo] promotion: {p['decision']} (registered version {p['registered_version']})\")
for reason in p['reasons']: print(f'[demo]   {reason}')" "$ROOT/reports/promotion.json"
"$PY" -c "import sys; from fraudops.modelspec import published_versions as p
v = p(sys.argv[1]); print('[demo] served (newest published):', v[-1][0] if v else 'nothing yet')" \
  "$ROOT/models/serving"

[[ "$state" == success ]] || exit 1

# The live loop: inline server, stream scorer, label consumer, the console, and a replay of
# held-out transactions; a demo analyst with a password generated here (not in the repo).
(cd "$ROOT" && "$PY" -m devstack up server scorer label-consumer console)
PASSWORD=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')
printf '%s\n' "$PASSWORD" | (cd "$ROOT" && "$PY" -m console users add demo-analyst --role analyst)
# The replay gets a token of its own (caller `replay`, scope ingest) from the dev stack; this
# one is for you: every gRPC call names its caller (README, "Who may call the server").
GRPC_TOKEN=$(cd "$ROOT" && "$PY" -m serving.callers add demo-client --scopes ingest,score,label \
  --sources 'chargeback:*')
(cd "$ROOT" && "$PY" -m devstack up replay)
# The rest of the loop, on their schedules: the analysts' review queue (every 15 minutes), the label
# and drift watches that start the next training run, the daily digest.
for dag in fraud_review_queue fraud_label_watch fraud_drift_watch fraud_daily_digest; do
  api PATCH "/dags/$dag" '{"is_paused": false}' >/dev/null && say "switched on $dag"
done
CONSOLE=$(cd "$ROOT" && "$PY" -c 'from fraudops.settings import load_settings; print(load_settings().console_url())')

cat <<EOF

  Analyst console  $CONSOLE  (sign in as demo-analyst / $PASSWORD)
  Airflow UI       $AIRFLOW  (DAG $DAG; task logs show each stage's output)
  MLflow UI        $MLFLOW  (experiment fraud-training; model fraud-detector, alias champion)
  Served model     $ROOT/models/serving/ (newest v<N> is live)
  gRPC token       export TOKEN=$GRPC_TOKEN
                   (caller demo-client: ingest, score, labels from chargeback:*; shown once)
                   grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"transaction_id": "t1", "user_id": 7, "amount": 950, "timestamp": 1700000000, "type": "TRANSFER"}' $FRAUDOPS_GRPC_HOST:$FRAUDOPS_GRPC_PORT fraud.v1.FraudScoring/Score

  Running now (logs in run/logs/): the gRPC server on $FRAUDOPS_GRPC_HOST:$FRAUDOPS_GRPC_PORT,
  the stream scorer ($FRAUDOPS_TOPIC_RAW -> $FRAUDOPS_TOPIC_SCORES + Postgres), the label
  consumer ($FRAUDOPS_TOPIC_LABELS -> feedback_labels), the console, and a replay of held-out
  transactions through SendTransaction. They watch models/serving/ and hot-reload each newly
  promoted model. Stop everything (apps and services): .venv/bin/python -m devstack down
EOF
elapsed=$(($(date +%s) - STARTED))
say "ready: make demo took $((elapsed / 60)) min $((elapsed % 60)) s"
