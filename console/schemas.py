"""What each console API route answers: the response models FastAPI validates every answer
against and publishes in its OpenAPI schema. The frontend's TypeScript types are generated
from that schema (`python -m console openapi`), so a field renamed here breaks the screen's
build, not the screen at run time."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

QueueReason = Literal["exploit", "explore-threshold", "explore-random"]
Label = Literal["FRAUD", "LEGIT"]


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- sign-in --------------------------------------------------------------------------------


class Health(Answer):
    status: str


class SignedIn(Answer):
    name: str
    role: str


class SignedOut(Answer):
    signed_out: str


class Me(SignedIn):
    may: list[str]


# --- the queues and a transaction -----------------------------------------------------------


class ScoredFacts(Answer):
    """What every list of scored transactions shows of one."""

    transaction_id: str
    user_id: int
    event_ts: int
    type: str
    amount: float
    channel: str | None
    score: float
    band: str
    model_version: str


class QueueItem(ScoredFacts):
    source: str
    scored_at: datetime
    label: str | None
    claimed_by: str | None
    claim_expires_at: datetime | None


class QueuePage(Answer):
    items: list[QueueItem]
    next_cursor: str | None


class ReviewQueueItem(ScoredFacts):
    position: int
    reason: QueueReason
    label: str | None
    label_reason: QueueReason | None
    claimed_by: str | None


class ReviewQueueDay(Answer):
    day: date
    items: int
    labelled: int


class ReviewQueuePage(Answer):
    day: date | None
    days: list[ReviewQueueDay]
    items: list[ReviewQueueItem]


class ScoredTransaction(BaseModel):
    """A row of scored_transactions; columns added later pass through (typed as unknown)."""

    model_config = ConfigDict(extra="allow")
    transaction_id: str
    user_id: int
    event_ts: int
    type: str
    amount: float
    old_balance_orig: float | None
    new_balance_orig: float | None
    old_balance_dest: float | None
    new_balance_dest: float | None
    is_unauthorized_overdraft: float | None
    dest_id: int | None
    channel: str | None
    score: float
    band: str
    model_version: str
    reasons: list[str] | None
    latency_us: int | None
    source: str
    scored_at: datetime
    ip_country: str | None
    ip_kind: str | None
    card_country: str | None
    billing_country: str | None


class StoredLabel(Answer):
    label: str
    source: str
    note: str | None
    labelled_at: datetime
    supersedes: str | None


class LabelChange(Answer):
    """One audited label change (serving/labels.py writes the detail)."""

    at: datetime
    source: str
    old: str | None
    new: str
    note: str | None = None
    labelled_at: str | None = None
    queue_reason: QueueReason | None = None


class Claim(Answer):
    claimed_by: str
    expires_at: datetime


class UserDayItem(Answer):
    transaction_id: str
    event_ts: int
    type: str
    amount: float
    score: float
    band: str
    channel: str | None


class UserCountry(Answer):
    country: str
    payments: int
    last_ts: int


class TransactionDetail(Answer):
    transaction: ScoredTransaction
    label: StoredLabel | None
    label_history: list[LabelChange]
    claim: Claim | None
    user_last_24h: list[UserDayItem]
    user_countries: list[UserCountry]


class Labelled(Answer):
    transaction_id: str
    label: Label
    superseded: str | None
    changed: bool
    source: str
    queue_reason: QueueReason | None


class Released(Answer):
    released: str


# --- models, trends, live -------------------------------------------------------------------


class Thresholds(Answer):
    challenge: float
    block: float


class Deployment(Answer):
    id: int
    version: str
    mlflow_run_id: str | None
    mlflow_run_url: str | None
    host: str
    pid: int | None
    served_from: datetime
    served_until: datetime | None
    reason: str | None


class AuditEvent(Answer):
    at: datetime
    kind: str
    subject: str
    detail: dict[str, Any]


class VersionSummary(Answer):
    version: str
    published_at: str | None
    mlflow_run_id: str | None
    mlflow_run_url: str | None
    data_hash: str | None
    git_commit: str | None
    thresholds: Thresholds
    metrics: dict[str, Any]


class Drift(Answer):
    window_start: datetime
    window_end: datetime
    model_version: str
    rows: int
    drifted: bool | None
    consecutive: int
    alarm: bool
    drifted_features: list[str]
    max_feature_psi: float | None
    score_psi: float | None
    band_psi: float | None
    skew_checked: int
    skew_mismatches: int
    last_alarm_at: datetime | None


class Models(Answer):
    served: str | None
    deployments: list[Deployment]
    events: list[AuditEvent]
    versions: list[VersionSummary]
    drift: Drift | None


class Published(Answer):
    published: str


class TrendDay(Answer):
    day: date
    transactions: int
    challenge: int
    block: int
    labelled: int
    fraud: int
    fraud_rate: float | None


class BandPrecision(Answer):
    band: str
    labelled: int
    fraud: int
    precision: float | None


class Throughput(Answer):
    day: date
    source: str
    labels: int


class Digest(Answer):
    day: date
    files: list[str]


class Trends(Answer):
    daily: list[TrendDay]
    precision: list[BandPrecision]
    throughput: list[Throughput]
    digests: list[Digest]


class LiveStatus(Answer):
    model_version: str | None
    thresholds: Thresholds | None
    consumer_lag: int | None
    consumer_group: str


# --- rules and lists ------------------------------------------------------------------------

RuleAction = Literal["allow", "review", "block"]
RuleMode = Literal["draft", "shadow", "live", "off"]


class RuleRow(Answer):
    name: str
    position: int
    action: RuleAction
    condition: str
    mode: RuleMode
    backtest: int | None
    updated_by: str
    updated_at: datetime
    version: int
    backtested: bool


class Rules(Answer):
    rules: list[RuleRow]
    version: int
    lists: dict[str, str]
    names: list[str]


class Saved(Answer):
    saved: str


class BacktestTransaction(Answer):
    transaction_id: str
    user_id: int
    type: str
    amount: float
    score: float
    band: str
    label: str | None
    scored_at: datetime


class Backtest(Answer):
    id: int
    period_from: str
    period_to: str
    considered: int
    matched: int
    by_band: dict[str, int]
    labelled: dict[Label, int]
    value: float
    fraud_value: float
    transactions: list[BacktestTransaction]


class RulesPublished(Answer):
    version: int
    mode: RuleMode


class ShadowMatch(Answer):
    day: date
    rule: str
    count: int


class ShadowMatches(Answer):
    matches: list[ShadowMatch]


class RuleList(Answer):
    name: str
    kind: str
    description: str
    created_by: str
    created_at: datetime
    items: int


class RuleLists(Answer):
    lists: list[RuleList]


class Created(Answer):
    created: str


class ListItem(Answer):
    value: str  # as stored (a single IP address: its keyed hash)
    shown: str  # as shown (a hashed address masked)
    expires_at: datetime | None
    added_by: str
    reason: str
    added_at: datetime


class ListItems(Answer):
    name: str
    items: list[ListItem]


class Added(Answer):
    added: int


class Removed(Answer):
    removed: int


class ListDeleted(Answer):
    deleted: str
    items: int
