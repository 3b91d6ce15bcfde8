-- fraudops schema: scores, analyst labels, model deployments and the audit trail.

CREATE TABLE scored_transactions (
    transaction_id            TEXT PRIMARY KEY,
    user_id                   BIGINT NOT NULL,
    event_ts                  BIGINT NOT NULL,  -- the transaction's Unix seconds
    type                      TEXT NOT NULL,
    amount                    DOUBLE PRECISION NOT NULL,
    old_balance_orig          DOUBLE PRECISION,
    new_balance_orig          DOUBLE PRECISION,
    old_balance_dest          DOUBLE PRECISION,
    new_balance_dest          DOUBLE PRECISION,
    is_unauthorized_overdraft DOUBLE PRECISION,
    dest_id                   BIGINT,
    channel                   TEXT,
    score                     DOUBLE PRECISION NOT NULL,
    band                      TEXT NOT NULL,
    model_version             TEXT NOT NULL,
    reasons                   JSONB,
    latency_us                BIGINT,
    source                    TEXT NOT NULL CHECK (source IN ('stream', 'inline')),
    scored_at                 TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX scored_transactions_scored_at_idx ON scored_transactions (scored_at);
CREATE INDEX scored_transactions_user_id_idx ON scored_transactions (user_id);

CREATE TABLE feedback_labels (
    transaction_id TEXT PRIMARY KEY REFERENCES scored_transactions (transaction_id),
    label          TEXT NOT NULL CHECK (label IN ('FRAUD', 'LEGIT')),
    source         TEXT NOT NULL,
    note           TEXT,
    labelled_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    supersedes     TEXT  -- the previous label, if this one replaced it
);
CREATE INDEX feedback_labels_labelled_at_idx ON feedback_labels (labelled_at);

CREATE TABLE model_deployments (
    id            BIGSERIAL PRIMARY KEY,
    version       TEXT NOT NULL,
    mlflow_run_id TEXT,
    host          TEXT,
    pid           INT,
    served_from   TIMESTAMPTZ NOT NULL DEFAULT now(),
    served_until  TIMESTAMPTZ,
    reason        TEXT
);
CREATE INDEX model_deployments_version_idx ON model_deployments (version);
CREATE INDEX model_deployments_open_idx ON model_deployments (host, pid) WHERE served_until IS NULL;

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    kind    TEXT NOT NULL,  -- promotion, rollback, reload, reload_rejected, label, ...
    subject TEXT,
    detail  JSONB
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_kind_subject_idx ON audit_log (kind, subject);

-- The audit trail is append-only: history that can be edited is not evidence.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
