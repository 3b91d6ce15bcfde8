-- Drift and skew monitoring: one row per watched window, and the feature vectors the
-- scorer actually scored with for a small sample of transactions.

CREATE TABLE drift_reports (
    id               BIGSERIAL PRIMARY KEY,
    window_start     TIMESTAMPTZ NOT NULL,
    window_end       TIMESTAMPTZ NOT NULL,
    model_version    TEXT NOT NULL,  -- the champion whose reference the window was held to
    rows             BIGINT NOT NULL,
    drifted          BOOLEAN,        -- NULL: too few rows to judge; breaks no run of windows
    consecutive      INT NOT NULL,   -- drifted windows in a row, this one included
    alarm            BOOLEAN NOT NULL DEFAULT false,
    drifted_features TEXT[] NOT NULL DEFAULT '{}',
    max_feature_psi  DOUBLE PRECISION,
    score_psi        DOUBLE PRECISION,
    band_psi         DOUBLE PRECISION,
    skew_checked     INT NOT NULL DEFAULT 0,
    skew_mismatches  INT NOT NULL DEFAULT 0,
    report           JSONB NOT NULL,  -- the window's JSON report, gauges included
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (window_end, model_version)
);
CREATE INDEX drift_reports_window_end_idx ON drift_reports (window_end);

CREATE TABLE feature_samples (
    transaction_id TEXT PRIMARY KEY REFERENCES scored_transactions (transaction_id),
    features       DOUBLE PRECISION[] NOT NULL,  -- fraudops.features.FEATURE_NAMES order
    model_version  TEXT NOT NULL
);
