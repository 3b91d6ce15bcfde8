"""What kind of evidence a label is, read from its source (`analyst:alice`, `chargeback:visa`).

Two kinds, because they are sampled differently and so must be learnt from differently:
- feedback: an analyst's verdict on an alert someone chose to review. The sample is biased
  toward what the serving model already scored high (and what the review queue explored).
- delayed: chargebacks, disputes, early fraud warnings, customer claims. They arrive days
  later and can land on any transaction, reviewed or not, so together with transactions
  that stayed unlabelled past the label-delay window they are a near-unbiased sample.

Used by training (collect_feedback's `label_kind` column, featurize's weights); the
serving side stores the source as given."""

from __future__ import annotations

FEEDBACK, DELAYED = "feedback", "delayed"
KINDS: tuple[str, ...] = (FEEDBACK, DELAYED)

# The source of a transaction exported as LEGIT because no label came within the delay.
MATURED_SOURCE = "matured"
# The part of a source before the first ':' names who labelled.
DELAYED_SOURCES = frozenset(
    {"chargeback", "dispute", "stripe", "claim", "customer", "issuer", "efw", MATURED_SOURCE}
)
FEEDBACK_SOURCES = frozenset({"analyst", "console", "review", "investigator"})


def label_kind(source: str) -> str:
    """`feedback` or `delayed` for a label's source.

    An unknown source counts as feedback: a label nobody's feed produced was entered by a
    person, and a person labels what was put in front of them."""
    who = source.split(":", 1)[0].strip().lower()
    return DELAYED if who in DELAYED_SOURCES else FEEDBACK
