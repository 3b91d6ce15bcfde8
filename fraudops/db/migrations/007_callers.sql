-- Callers of the gRPC server (serving/callers.py): who may call which methods, and which
-- label sources each may write. A caller authenticates with a bearer token, stored only as
-- its SHA-256 (a leaked table opens nothing), or with a mutual-TLS client certificate whose
-- common name is the caller's name. A revoked caller keeps its row, for the audit trail.

CREATE TABLE api_callers (
    name       TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    token_hash TEXT NOT NULL UNIQUE,
    scopes     TEXT[] NOT NULL CHECK (scopes <@ ARRAY['ingest', 'score', 'label']),
    sources    TEXT[] NOT NULL DEFAULT '{}',  -- glob patterns of the label sources it may write
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
