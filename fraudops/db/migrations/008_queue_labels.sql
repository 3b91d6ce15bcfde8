-- A verdict given from the review queue carries the item's reason, so each reason's
-- precision is measured from the labels it really produced; a later verdict from another
-- door (a chargeback, the flagged list) replaces it with NULL, the audit log keeps both.
ALTER TABLE feedback_labels
    ADD COLUMN queue_reason TEXT
    CHECK (queue_reason IN ('exploit', 'explore-threshold', 'explore-random'));

-- The job rebuilds a day's queue in place (items kept, moved or dropped, so a label racing
-- a rebuild finds its row): positions may swap within one transaction.
ALTER TABLE review_queue
    DROP CONSTRAINT review_queue_queue_date_position_key,
    ADD CONSTRAINT review_queue_queue_date_position_key
        UNIQUE (queue_date, position) DEFERRABLE INITIALLY DEFERRED;
