-- Analysts' rules and lists beside the model (fraudops/rules.py, fraudops/rule_sets.py).
-- Lists and rules are edited here; what the scoring processes serve is the latest row of
-- rule_set_versions (a checked snapshot of the served rules) plus the lists as of the
-- latest rule_list_changes sequence number: both only grow, so a process polls two numbers.

CREATE TABLE rule_lists (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'customer', 'ip', 'country')),
    description TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE rule_list_items (
    list_name  TEXT NOT NULL REFERENCES rule_lists (name) ON DELETE CASCADE,
    value      TEXT NOT NULL,  -- fraudops.rules.canonical_value of the list's kind
    expires_at TIMESTAMPTZ,    -- NULL: until removed
    added_by   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (list_name, value)
);

-- Every item added or removed, in order: a scoring process applies what is new to its copy.
CREATE TABLE rule_list_changes (
    seq        BIGSERIAL PRIMARY KEY,
    list_name  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    op         TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    expires_at TIMESTAMPTZ
);

CREATE TABLE rule_backtests (
    id          BIGSERIAL PRIMARY KEY,
    rule_name   TEXT NOT NULL,
    action      TEXT NOT NULL,
    condition   TEXT NOT NULL,
    period_from TIMESTAMPTZ NOT NULL,
    period_to   TIMESTAMPTZ NOT NULL,
    result      JSONB NOT NULL,
    run_by      TEXT NOT NULL,
    run_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rule_backtests_rule_idx ON rule_backtests (rule_name, run_at);

CREATE TABLE rules (
    name       TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    position   INT NOT NULL,  -- evaluation order, lowest first
    action     TEXT NOT NULL CHECK (action IN ('allow', 'review', 'block')),
    condition  TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN ('draft', 'shadow', 'live', 'off')),
    backtest   BIGINT REFERENCES rule_backtests (id),  -- the run that allowed publishing
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE rule_set_versions (
    version      BIGSERIAL PRIMARY KEY,
    rules        JSONB NOT NULL,  -- [{name, action, condition, mode}] in evaluation order
    published_by TEXT NOT NULL,
    reason       TEXT NOT NULL,
    published_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What decided each stored score: 'model' or the rule's name; the shadow rules that matched.
ALTER TABLE scored_transactions
    ADD COLUMN decided_by    TEXT NOT NULL DEFAULT 'model',
    ADD COLUMN shadow_rules  TEXT[],
    ADD COLUMN rules_version TEXT;
CREATE INDEX scored_transactions_shadow_idx ON scored_transactions (scored_at)
    WHERE shadow_rules IS NOT NULL;
