"""The analyst console: a FastAPI backend (this package) and its React frontend (`web/`).

Analysts watch live scoring, work the review queue of flagged transactions and label them;
the labels go through the same function as `Feedback.SubmitLabel` and feed the next run."""
