from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Band(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BAND_UNSPECIFIED: _ClassVar[Band]
    ALLOW: _ClassVar[Band]
    CHALLENGE: _ClassVar[Band]
    BLOCK: _ClassVar[Band]

class Label(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_UNSPECIFIED: _ClassVar[Label]
    FRAUD: _ClassVar[Label]
    LEGIT: _ClassVar[Label]
BAND_UNSPECIFIED: Band
ALLOW: Band
CHALLENGE: Band
BLOCK: Band
LABEL_UNSPECIFIED: Label
FRAUD: Label
LEGIT: Label

class TransactionRequest(_message.Message):
    __slots__ = ("transaction_id", "user_id", "amount", "timestamp", "is_fraud", "type", "old_balance_orig", "new_balance_orig", "old_balance_dest", "new_balance_dest", "is_unauthorized_overdraft", "dest_id", "channel", "balances_missing", "stripe_payment_intent_id", "stripe_charge_id", "stripe_customer_id", "ip_address", "card_country", "billing_country")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    IS_FRAUD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OLD_BALANCE_ORIG_FIELD_NUMBER: _ClassVar[int]
    NEW_BALANCE_ORIG_FIELD_NUMBER: _ClassVar[int]
    OLD_BALANCE_DEST_FIELD_NUMBER: _ClassVar[int]
    NEW_BALANCE_DEST_FIELD_NUMBER: _ClassVar[int]
    IS_UNAUTHORIZED_OVERDRAFT_FIELD_NUMBER: _ClassVar[int]
    DEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    BALANCES_MISSING_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    STRIPE_CHARGE_ID_FIELD_NUMBER: _ClassVar[int]
    STRIPE_CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CARD_COUNTRY_FIELD_NUMBER: _ClassVar[int]
    BILLING_COUNTRY_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    user_id: int
    amount: float
    timestamp: int
    is_fraud: bool
    type: str
    old_balance_orig: float
    new_balance_orig: float
    old_balance_dest: float
    new_balance_dest: float
    is_unauthorized_overdraft: float
    dest_id: int
    channel: str
    balances_missing: bool
    stripe_payment_intent_id: str
    stripe_charge_id: str
    stripe_customer_id: str
    ip_address: str
    card_country: str
    billing_country: str
    def __init__(self, transaction_id: _Optional[str] = ..., user_id: _Optional[int] = ..., amount: _Optional[float] = ..., timestamp: _Optional[int] = ..., is_fraud: _Optional[bool] = ..., type: _Optional[str] = ..., old_balance_orig: _Optional[float] = ..., new_balance_orig: _Optional[float] = ..., old_balance_dest: _Optional[float] = ..., new_balance_dest: _Optional[float] = ..., is_unauthorized_overdraft: _Optional[float] = ..., dest_id: _Optional[int] = ..., channel: _Optional[str] = ..., balances_missing: _Optional[bool] = ..., stripe_payment_intent_id: _Optional[str] = ..., stripe_charge_id: _Optional[str] = ..., stripe_customer_id: _Optional[str] = ..., ip_address: _Optional[str] = ..., card_country: _Optional[str] = ..., billing_country: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("transaction_id", "score", "band", "model_version", "reasons", "latency_us", "scored_at", "decided_by", "rules_version")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    SCORED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    score: float
    band: Band
    model_version: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    latency_us: int
    scored_at: int
    decided_by: str
    rules_version: str
    def __init__(self, transaction_id: _Optional[str] = ..., score: _Optional[float] = ..., band: _Optional[_Union[Band, str]] = ..., model_version: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., latency_us: _Optional[int] = ..., scored_at: _Optional[int] = ..., decided_by: _Optional[str] = ..., rules_version: _Optional[str] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[TransactionRequest]
    def __init__(self, transactions: _Optional[_Iterable[_Union[TransactionRequest, _Mapping]]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ScoreResponse]
    def __init__(self, scores: _Optional[_Iterable[_Union[ScoreResponse, _Mapping]]] = ...) -> None: ...

class SendAck(_message.Message):
    __slots__ = ("transaction_id", "partition", "offset")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    partition: int
    offset: int
    def __init__(self, transaction_id: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class LabelRequest(_message.Message):
    __slots__ = ("transaction_id", "label", "source", "note")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    label: Label
    source: str
    note: str
    def __init__(self, transaction_id: _Optional[str] = ..., label: _Optional[_Union[Label, str]] = ..., source: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class LabelAck(_message.Message):
    __slots__ = ("transaction_id", "label", "superseded_previous")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    label: Label
    superseded_previous: bool
    def __init__(self, transaction_id: _Optional[str] = ..., label: _Optional[_Union[Label, str]] = ..., superseded_previous: _Optional[bool] = ...) -> None: ...
