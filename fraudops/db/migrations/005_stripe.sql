-- Stripe webhook events already processed: Stripe retries and may deliver out of order, so
-- an event id seen before changes nothing. `outcome` says what the event became.

CREATE TABLE stripe_events (
    event_id       TEXT PRIMARY KEY,
    type           TEXT NOT NULL,
    livemode       BOOLEAN NOT NULL,
    object_id      TEXT,            -- the pi_/ch_/dp_/issfr_/re_ id the event is about
    transaction_id TEXT,            -- the transaction it scored or labelled, if any
    outcome        TEXT NOT NULL,   -- transaction, label, duplicate_payment, ignored
    event_created  BIGINT NOT NULL, -- Stripe's Unix seconds
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_transaction_idx ON stripe_events (transaction_id);

-- One transaction per payment: payment_intent.succeeded and charge.succeeded describe the
-- same payment, and whichever arrives first is the one scored.
CREATE TABLE stripe_payments (
    transaction_id TEXT PRIMARY KEY,
    event_id       TEXT NOT NULL REFERENCES stripe_events (event_id)
);
