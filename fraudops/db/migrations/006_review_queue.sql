-- The analysts' daily review queue (fraudops/review_queue.py): k transactions per day, each
-- marked with why it is there, so exploration can be measured apart from the top alerts.

CREATE TABLE review_queue (
    queue_date     DATE NOT NULL,  -- the UTC day the transactions happened
    transaction_id TEXT NOT NULL REFERENCES scored_transactions (transaction_id),
    position       INT NOT NULL,  -- 1 = first to review
    reason         TEXT NOT NULL
                   CHECK (reason IN ('exploit', 'explore-threshold', 'explore-random')),
    score          DOUBLE PRECISION NOT NULL,
    band           TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_date, transaction_id),
    UNIQUE (queue_date, position)
);
CREATE INDEX review_queue_transaction_idx ON review_queue (transaction_id);
