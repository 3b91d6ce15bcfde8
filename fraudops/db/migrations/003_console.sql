-- The analyst console: local accounts, their sessions, failed sign-ins (rate limiting),
-- queue claims, and the indexes the review queue reads through.

CREATE TABLE console_users (
    name          TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,31}$'),
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'analyst', 'admin')),
    password_hash TEXT NOT NULL,  -- argon2id, with its own salt and parameters
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled      BOOLEAN NOT NULL DEFAULT false
);

-- A session is looked up by the SHA-256 of its cookie, so a leaked table opens no session.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES console_users (name) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

CREATE TABLE console_login_failures (
    id        BIGSERIAL PRIMARY KEY,
    user_name TEXT NOT NULL,
    client    TEXT NOT NULL,
    at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX console_login_failures_user_idx ON console_login_failures (user_name, at);
CREATE INDEX console_login_failures_client_idx ON console_login_failures (client, at);

-- One analyst reviews an item at a time; a claim lapses at expires_at.
CREATE TABLE console_claims (
    transaction_id TEXT PRIMARY KEY REFERENCES scored_transactions (transaction_id),
    user_name      TEXT NOT NULL REFERENCES console_users (name) ON DELETE CASCADE,
    claimed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ NOT NULL
);

-- The queue holds only flagged bands: partial indexes for its two orders (keyset pages).
CREATE INDEX scored_transactions_flagged_score_idx
    ON scored_transactions (score DESC, transaction_id DESC)
    WHERE band IN ('CHALLENGE', 'BLOCK');
CREATE INDEX scored_transactions_flagged_newest_idx
    ON scored_transactions (scored_at DESC, transaction_id DESC)
    WHERE band IN ('CHALLENGE', 'BLOCK');
CREATE INDEX scored_transactions_user_event_idx ON scored_transactions (user_id, event_ts);
