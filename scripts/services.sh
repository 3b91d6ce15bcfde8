#!/usr/bin/env bash
# Local services of fraudops on one machine, all bound to 127.0.0.1, state in run/:
#   Kafka     127.0.0.1:9092   one KRaft broker+controller, jars from Maven Central
#   Postgres  127.0.0.1:55432  a project-local cluster of Debian's PostgreSQL
#   MLflow    127.0.0.1:5000   mlflow server, SQLite backend, artifacts in mlruns/
#   Airflow   127.0.0.1:8080   the components of `airflow standalone`, AIRFLOW_HOME=run/airflow
#
# Usage: scripts/services.sh up|down|status [kafka] [postgres] [mlflow] [airflow]
#        scripts/services.sh env      (export lines for the endpoints)
# `up` is idempotent and returns once every named service answers; no names = all.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN="$ROOT/run"
LOGS="$RUN/logs"
PY="$ROOT/.venv/bin/python"
ALL_SERVICES=(kafka postgres mlflow airflow)

KAFKA_BOOTSTRAP=127.0.0.1:9092
KAFKA_DIR="$RUN/kafka"
KAFKA_TOPICS=(raw_transactions transaction_scores transaction_labels
  raw_transactions.dlq transaction_labels.dlq inline_scores.dlq)
PG_PORT=55432
PG_DIR="$RUN/postgres"
PG_DATA="$PG_DIR/data"
DATABASE_URL_DEFAULT="postgresql://fraudops@127.0.0.1:$PG_PORT/fraudops"
MLFLOW_PORT=5000
MLFLOW_URI="http://127.0.0.1:$MLFLOW_PORT"
AIRFLOW_PORT=8080
AIRFLOW_HOME_DIR="$RUN/airflow"

log() { printf '[services] %s\n' "$*" >&2; }
die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}

require_venv() {
  [[ -x "$PY" ]] || die "$PY is missing: run 'make install' first"
}

# --- process helpers -------------------------------------------------------------------

pid_alive() { # pidfile -> 0 when the recorded process is running
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

port_open() { # port -> 0 when something accepts TCP connections on 127.0.0.1:port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_background() { # pidfile logfile cmd... : detached (own session) so a caller's exit or
  local pidfile=$1 logfile=$2 # Ctrl-C does not take the service down with it.
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  echo $! >"$pidfile"
}

stop_pidfile() { # name pidfile : SIGTERM the process group, SIGKILL after 30 s
  local name=$1 pidfile=$2 pid i
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still running after 30 s, killing"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

wait_until() { # name timeout_s pidfile logfile cmd... : poll cmd until it succeeds, failing
  local name=$1 timeout=$2 pidfile=$3 logfile=$4 deadline # early if our process died
  shift 4
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -f "$pidfile" ]] && ! pid_alive "$pidfile"; then
      tail -n 30 "$logfile" >&2 || true
      die "$name exited during start-up; see $logfile"
    fi
    ((SECONDS < deadline)) || die "$name not ready after ${timeout}s; see $logfile"
    sleep 0.5
  done
}

http_ok() { # url -> 0 on an HTTP 2xx answer
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"
}

# --- Kafka -------------------------------------------------------------------------------

kafka_libs() { # broker jars from Maven Central, refreshed when the pom changes
  local stamp="$KAFKA_DIR/libs/.resolved"
  if [[ -f "$stamp" && "$stamp" -nt "$ROOT/infra/kafka/pom.xml" ]]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
  command -v java >/dev/null || die "java not found (Java 17+: apt-get install -y openjdk-17-jre-headless)"
  log "kafka: resolving broker jars with Maven (first time only)"
  rm -rf "$KAFKA_DIR/libs"
  mvn -B -q -Dstyle.color=never -f "$ROOT/infra/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_DIR/libs" >>"$LOGS/kafka.log" 2>&1 ||
    die "kafka: Maven could not resolve the broker jars; see $LOGS/kafka.log"
  touch "$stamp"
}

kafka_configure() { # server.properties from the template; storage formatted once
  sed "s|@DATA_DIR@|$KAFKA_DIR/data|" "$ROOT/infra/kafka/server.properties" \
    >"$KAFKA_DIR/server.properties"
  cp "$ROOT/infra/kafka/log4j2.properties" "$KAFKA_DIR/log4j2.properties"
  [[ -f "$KAFKA_DIR/data/meta.properties" ]] && return 0
  local cluster_id
  cluster_id=$(java -cp "$KAFKA_DIR/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null)
  log "kafka: formatting storage (cluster id $cluster_id)"
  java -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" -cp "$KAFKA_DIR/libs/*" \
    kafka.tools.StorageTool format --standalone -t "$cluster_id" \
    -c "$KAFKA_DIR/server.properties" >>"$LOGS/kafka.log" 2>&1 ||
    die "kafka: storage format failed; see $LOGS/kafka.log"
}

kafka_admin() { # create|ready [topics...] via confluent_kafka's AdminClient
  "$PY" - "$KAFKA_BOOTSTRAP" "$@" <<'PYEOF'
import sys
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, action, *topics = sys.argv[1:]
admin = AdminClient({"bootstrap.servers": bootstrap})
metadata = admin.list_topics(timeout=3)  # raises when no broker answers
if action == "create":
    missing = [NewTopic(t, num_partitions=3) for t in topics if t not in metadata.topics]
    futures = admin.create_topics(missing) if missing else {}
    for name, future in futures.items():
        try:
            future.result(timeout=30)
            print(f"[services] kafka: created topic {name}", file=sys.stderr)
        except KafkaException as err:
            if "TOPIC_ALREADY_EXISTS" not in str(err):
                raise
PYEOF
}

kafka_up() {
  local pidfile="$KAFKA_DIR/kafka.pid"
  mkdir -p "$KAFKA_DIR" "$LOGS"
  if pid_alive "$pidfile"; then
    log "kafka: already running (pid $(cat "$pidfile"))"
  elif rm -f "$pidfile" && port_open 9092; then
    log "kafka: port 9092 already in use by a process not started here; using it"
  else
    kafka_libs
    kafka_configure
    log "kafka: starting broker on $KAFKA_BOOTSTRAP (log: $LOGS/kafka.log)"
    start_background "$pidfile" "$LOGS/kafka.log" java -Xms512m -Xmx1g \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
      -cp "$KAFKA_DIR/libs/*" kafka.Kafka "$KAFKA_DIR/server.properties"
  fi
  wait_until kafka 120 "$pidfile" "$LOGS/kafka.log" \
    kafka_admin ready
  kafka_admin create "${KAFKA_TOPICS[@]}"
  log "kafka: ready on $KAFKA_BOOTSTRAP"
}

kafka_down() { stop_pidfile kafka "$KAFKA_DIR/kafka.pid"; }

kafka_status() {
  if port_open 9092; then echo "kafka     up    $KAFKA_BOOTSTRAP"; else echo "kafka     down"; fi
}

# --- Postgres ----------------------------------------------------------------------------

pg_bin() { # directory of Debian's PostgreSQL binaries; installs the package when root
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -z "$dir" ]]; then
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed (apt-get install -y postgresql)"
    log "postgres: installing Debian's postgresql package"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

as_pg_owner() { # PostgreSQL refuses to run as root: use the postgres OS user then
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_traversable() { # dir : let the postgres user reach dir (o+x on any parent that blocks it)
  local dir=$1
  while [[ "$dir" != / ]]; do
    dir=$(dirname "$dir")
    if ! runuser -u postgres -- test -x "$dir"; then
      log "postgres: chmod o+x $dir so the postgres user can reach its data directory"
      chmod o+x "$dir"
    fi
  done
}

pg_init() { # one-time initdb with the local settings below
  local bin=$1
  mkdir -p "$PG_DIR" "$LOGS"
  touch "$LOGS/postgres.log"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$PG_DIR" "$LOGS/postgres.log"
    pg_traversable "$PG_DIR"
  fi
  [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
  log "postgres: initdb in $PG_DATA"
  as_pg_owner "$bin/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --locale=C \
    --auth=trust >>"$LOGS/postgres.log" 2>&1 || die "initdb failed; see $LOGS/postgres.log"
  # Trust authentication, on loopback and the socket only: a local development cluster
  # reachable from this machine alone. Anything shared uses passwords (see .env.example).
  as_pg_owner tee "$PG_DATA/pg_hba.conf" >/dev/null <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF
  as_pg_owner tee -a "$PG_DATA/postgresql.conf" >/dev/null <<EOF
# fraudops local development cluster (scripts/services.sh)
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 100
shared_buffers = 256MB
fsync = on
synchronous_commit = on
max_wal_size = 2GB
log_min_duration_statement = 1000
EOF
}

pg_psql() { # sql : run as the superuser over loopback
  "$1/psql" -X -q -v ON_ERROR_STOP=1 -tA "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" -c "$2"
}

pg_up() {
  require_venv
  local bin
  bin=$(pg_bin)
  pg_init "$bin"
  if as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "postgres: already running"
  elif port_open "$PG_PORT"; then
    log "postgres: port $PG_PORT already in use by a cluster not started here; using it"
  else
    log "postgres: starting on 127.0.0.1:$PG_PORT (log: $LOGS/postgres.log)"
    as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$LOGS/postgres.log" -w -t 60 start >/dev/null 9>&- ||
      die "postgres did not start; see $LOGS/postgres.log"
  fi
  wait_until postgres 60 "" "$LOGS/postgres.log" \
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres
  if [[ -z $(pg_psql "$bin" "SELECT 1 FROM pg_roles WHERE rolname = 'fraudops'") ]]; then
    pg_psql "$bin" "CREATE ROLE fraudops LOGIN CREATEDB"
  fi
  if [[ -z $(pg_psql "$bin" "SELECT 1 FROM pg_database WHERE datname = 'fraudops'") ]]; then
    pg_psql "$bin" "CREATE DATABASE fraudops OWNER fraudops"
  fi
  (cd "$ROOT" && "$PY" -m serving.db migrate --database-url "$DATABASE_URL_DEFAULT")
  log "postgres: ready at $DATABASE_URL_DEFAULT"
}

pg_down() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -z "$bin" || ! -f "$PG_DATA/postmaster.pid" ]]; then
    log "postgres: not running"
    return 0
  fi
  as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null && log "postgres: stopped"
}

pg_status() {
  if port_open "$PG_PORT"; then
    echo "postgres  up    $DATABASE_URL_DEFAULT"
  else
    echo "postgres  down"
  fi
}

# --- MLflow ------------------------------------------------------------------------------

mlflow_up() {
  require_venv
  local pidfile="$RUN/mlflow/mlflow.pid"
  mkdir -p "$RUN/mlflow" "$ROOT/mlruns" "$LOGS"
  if pid_alive "$pidfile"; then
    log "mlflow: already running (pid $(cat "$pidfile"))"
  elif rm -f "$pidfile" && port_open "$MLFLOW_PORT"; then
    log "mlflow: port $MLFLOW_PORT already in use by a process not started here; using it"
  else
    log "mlflow: starting on $MLFLOW_URI (log: $LOGS/mlflow.log)"
    # No job runner: its dozen huey workers would compete for the machine's 2 cores.
    (cd "$ROOT" && MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
      start_background "$pidfile" "$LOGS/mlflow.log" "$ROOT/.venv/bin/mlflow" \
      server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
      --backend-store-uri "sqlite:///$RUN/mlflow/mlflow.db" \
      --artifacts-destination "$ROOT/mlruns" --serve-artifacts)
  fi
  wait_until mlflow 120 "$pidfile" "$LOGS/mlflow.log" \
    http_ok "$MLFLOW_URI/health"
  log "mlflow: ready on $MLFLOW_URI"
}

mlflow_down() { stop_pidfile mlflow "$RUN/mlflow/mlflow.pid"; }

mlflow_status() {
  if port_open "$MLFLOW_PORT"; then echo "mlflow    up    $MLFLOW_URI"; else echo "mlflow    down"; fi
}

# --- Airflow -----------------------------------------------------------------------------
# The components `airflow standalone` runs, started here instead because standalone starts
# the scheduler's and triggerer's log servers on every interface (0.0.0.0:8793/8794); with
# the LocalExecutor on one machine the API server reads task logs from disk, so they are
# skipped. SQLite metadata in run/airflow (the embedded default, see DESIGN.md).

airflow_env() { # the configuration of the local Airflow, as environment variables
  export AIRFLOW_HOME="$AIRFLOW_HOME_DIR"
  export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  # Two cores: a few tasks at once, two per DAG run.
  export AIRFLOW__CORE__PARALLELISM=4
  export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=2
  # Airflow 3's API server binds every interface unless told otherwise.
  export AIRFLOW__API__HOST=127.0.0.1
  export AIRFLOW__API__PORT=$AIRFLOW_PORT
  export AIRFLOW__API__WORKERS=1
  export AIRFLOW__API__BASE_URL="http://127.0.0.1:$AIRFLOW_PORT"
  # Local demo only: SimpleAuthManager with every user an admin and no login page, on a
  # loopback-only server. A shared deployment configures real users (see docker-compose).
  export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
  # Signing keys generated once per run/ (Airflow's own default is too short for HS512).
  export AIRFLOW__API_AUTH__JWT_SECRET
  AIRFLOW__API_AUTH__JWT_SECRET=$(airflow_secret jwt_secret)
  export AIRFLOW__API__SECRET_KEY
  AIRFLOW__API__SECRET_KEY=$(airflow_secret secret_key)
  export FRAUDOPS_PROJECT_DIR="$ROOT"
  export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-$MLFLOW_URI}"
  export DATABASE_URL="${DATABASE_URL:-$DATABASE_URL_DEFAULT}"
  export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$KAFKA_BOOTSTRAP}"
  export PATH="$ROOT/.venv/bin:$PATH"
}

airflow_secret() { # name -> a random secret kept in run/airflow (mode 600)
  local file="$AIRFLOW_HOME_DIR/.$1"
  if [[ ! -s "$file" ]]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(64))' >"$file")
  fi
  cat "$file"
}

airflow_supervise() { # runs detached: the four components; any one exiting stops them all
  airflow_env
  cd "$ROOT"
  airflow db migrate
  airflow scheduler --skip-serve-logs &
  airflow dag-processor &
  airflow triggerer --skip-serve-logs &
  airflow api-server &
  trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
  wait -n
  echo "[services] airflow: a component exited ($?); stopping the others" >&2
}

airflow_healthy() { # the API answers and reports a live scheduler and DAG processor
  "$PY" - "http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health" <<'PYEOF'
import json, sys, urllib.request
health = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
sys.exit(any(health[c]["status"] != "healthy" for c in ("scheduler", "dag_processor")))
PYEOF
}

airflow_up() {
  require_venv
  local pidfile="$AIRFLOW_HOME_DIR/airflow.pid"
  mkdir -p "$AIRFLOW_HOME_DIR" "$ROOT/dags" "$LOGS"
  if pid_alive "$pidfile"; then
    log "airflow: already running (pid $(cat "$pidfile"))"
  elif rm -f "$pidfile" && port_open "$AIRFLOW_PORT"; then
    log "airflow: port $AIRFLOW_PORT already in use by a process not started here; using it"
  else
    log "airflow: starting on 127.0.0.1:$AIRFLOW_PORT (log: $LOGS/airflow.log)"
    start_background "$pidfile" "$LOGS/airflow.log" bash "$ROOT/scripts/services.sh" \
      _airflow-supervise
  fi
  wait_until airflow 300 "$pidfile" "$LOGS/airflow.log" airflow_healthy
  log "airflow: ready on http://127.0.0.1:$AIRFLOW_PORT"
}

airflow_down() { stop_pidfile airflow "$AIRFLOW_HOME_DIR/airflow.pid"; }

airflow_status() {
  if port_open "$AIRFLOW_PORT"; then
    echo "airflow   up    http://127.0.0.1:$AIRFLOW_PORT"
  else
    echo "airflow   down"
  fi
}

# --- commands ----------------------------------------------------------------------------

print_env() {
  cat <<EOF
export KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP
export DATABASE_URL=$DATABASE_URL_DEFAULT
export MLFLOW_TRACKING_URI=$MLFLOW_URI
export AIRFLOW_URL=http://127.0.0.1:$AIRFLOW_PORT
EOF
}

run_each() { # action services...
  local action=$1 service fn
  shift
  for service in "$@"; do
    case $service in
      kafka | postgres | mlflow | airflow) ;;
      *) die "unknown service '$service' (one of: ${ALL_SERVICES[*]})" ;;
    esac
    fn=${service/postgres/pg}_$action
    "$fn"
  done
}

main() {
  local command=${1:-}
  [[ $# -gt 0 ]] && shift
  local services=("$@")
  [[ ${#services[@]} -gt 0 ]] || services=("${ALL_SERVICES[@]}")
  if [[ $command == up || $command == down ]]; then
    # One `up`/`down` at a time: test sessions starting together must not start two
    # brokers. Services are started with this descriptor closed, so they never hold it.
    mkdir -p "$RUN"
    exec 9>"$RUN/.services.lock"
    flock -w 900 9 || die "another scripts/services.sh is still running after 900 s"
  fi
  case $command in
    up) run_each up "${services[@]}" ;;
    # Reverse order: Airflow and MLflow may be writing to the others while they stop.
    down) run_each down $(printf '%s\n' "${services[@]}" | tac) ;;
    status) run_each status "${services[@]}" ;;
    env) print_env ;;
    _airflow-supervise) airflow_supervise ;;
    *) die "usage: $0 up|down|status [kafka] [postgres] [mlflow] [airflow] | env" ;;
  esac
}

main "$@"
