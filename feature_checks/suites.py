"""The expectation suite for a transaction batch, as code (Great Expectations 1.x).

Four groups, so a failure says what kind of problem it is:
- schema: exactly the canonical columns in order, their dtypes, no nulls;
- values: positive finite amounts, non-negative finite balances, known types, 0/1 flags,
  positive ids, unique transaction ids, plausible timestamps sorted ascending;
- batch: row count and fraud rate within the bounds in params (`validate`);
- distribution: legit amounts' quantiles within a factor of the reference's, and legit
  type shares close to the reference's (KL divergence); legit rows only, because the
  batch's fraud rate is a parameter of generate, not a property of the reference.

Import this module only after feature_checks.validate has switched GX analytics off."""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.expectations.row_conditions import Column

from fraudops.countries import COUNTRY_CODES
from fraudops.geoip import KINDS
from fraudops.schema import (
    BALANCE_COLUMNS,
    LOCATION_DATA_COLUMNS,
    MAX_AMOUNT,
    MAX_ID_LENGTH,
    TRANSACTION_COLUMNS,
    TRANSACTION_TYPES,
)

SUITE_NAME = "transactions"
AMOUNT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
EARLIEST, LATEST = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01, Unix seconds
STRING_DTYPES = ["object", "str", "string", "StringDtype"]
DTYPES: dict[str, list[str]] = {
    "transaction_id": STRING_DTYPES,
    "user_id": ["int64"],
    "timestamp": ["int64"],
    "type": STRING_DTYPES,
    **{c: ["float64"] for c in ("amount", *BALANCE_COLUMNS, "is_unauthorized_overdraft")},
    "dest_id": ["int64"],
    "is_fraud": ["int8"],
    **{c: STRING_DTYPES for c in LOCATION_DATA_COLUMNS},
}
LEGIT = Column("is_fraud") == 0


class ExpectColumnQuantileValuesToBeBetweenPlainBools(gxe.ExpectColumnQuantileValuesToBeBetween):
    """The core expectation, with its per-quantile success details as plain bools: GX 1.24
    leaves numpy bools there and its own results store then fails to serialise them."""

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        outcome = super()._validate(metrics, runtime_configuration, execution_engine)
        details = outcome["result"]["details"]
        details["success_details"] = [bool(ok) for ok in details["success_details"]]
        outcome["success"] = bool(outcome["success"])
        return outcome


@dataclass(frozen=True)
class ReferenceProfile:
    """What the distribution checks compare against, measured on the reference's legit rows."""

    amount_quantiles: tuple[float, ...]
    type_shares: dict[str, float]
    located: bool = False  # the reference carries location columns: so must a batch

    @classmethod
    def from_frame(cls, reference: pd.DataFrame) -> ReferenceProfile:
        legit = reference[reference["is_fraud"] == 0]
        if legit.empty:
            raise ValueError("the reference has no legit rows to compare against")
        quantiles = np.quantile(legit["amount"].to_numpy(float), AMOUNT_QUANTILES)
        shares = legit["type"].value_counts(normalize=True)
        return cls(
            amount_quantiles=tuple(float(q) for q in quantiles),
            type_shares={t: float(shares.get(t, 0.0)) for t in TRANSACTION_TYPES},
            located=set(LOCATION_DATA_COLUMNS) <= set(reference.columns),
        )


def dataset_columns(located: bool) -> list[str]:
    """The canonical columns, with the location ones before the label when `located`."""
    extra = list(LOCATION_DATA_COLUMNS) if located else []
    return [*TRANSACTION_COLUMNS[:-1], *extra, TRANSACTION_COLUMNS[-1]]


def schema_expectations(located: bool = False) -> list:
    """Exactly the canonical columns, in order, with their dtypes and no nulls; location
    values from their vocabularies (a country code or "" unknown, a kind)."""
    columns = dataset_columns(located)
    expectations = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=columns)]
    for column in columns:
        expectations.append(
            gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=DTYPES[column])
        )
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    if located:
        countries = ["", *sorted(COUNTRY_CODES)]
        expectations += [
            gxe.ExpectColumnValuesToBeInSet(column="ip_country", value_set=countries),
            gxe.ExpectColumnValuesToBeInSet(column="card_country", value_set=countries),
            gxe.ExpectColumnValuesToBeInSet(column="ip_kind", value_set=list(KINDS)),
        ]
    return expectations


def value_expectations() -> list:
    """Row-level rules: the same ones serving enforces on a single transaction."""
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(
            column="amount", min_value=0, strict_min=True, max_value=MAX_AMOUNT
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=MAX_AMOUNT)
            for c in BALANCE_COLUMNS
        ),
        gxe.ExpectColumnValuesToBeInSet(column="type", value_set=list(TRANSACTION_TYPES)),
        gxe.ExpectColumnValuesToBeInSet(column="is_unauthorized_overdraft", value_set=[0.0, 1.0]),
        gxe.ExpectColumnValuesToBeInSet(column="is_fraud", value_set=[0, 1]),
        gxe.ExpectColumnValuesToBeBetween(column="user_id", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="dest_id", min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="transaction_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="transaction_id", min_value=1, max_value=MAX_ID_LENGTH
        ),
        gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=EARLIEST, max_value=LATEST),
        gxe.ExpectColumnValuesToBeIncreasing(column="timestamp"),
    ]
    return expectations


def batch_expectations(params: dict) -> list:
    """Whole-batch bounds from params: size and fraud rate."""
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=int(params["min_rows"]), max_value=int(params["max_rows"])
        ),
        gxe.ExpectColumnMeanToBeBetween(
            column="is_fraud",
            min_value=float(params["fraud_rate_min"]),
            max_value=float(params["fraud_rate_max"]),
        ),
    ]


def distribution_expectations(profile: ReferenceProfile, params: dict) -> list:
    """Legit amounts and type mix close to the reference's."""
    factor = float(params["amount_quantile_factor"])
    ranges = [[q / factor, q * factor] for q in profile.amount_quantiles]
    types = sorted(profile.type_shares)
    return [
        ExpectColumnQuantileValuesToBeBetweenPlainBools(
            column="amount",
            quantile_ranges={"quantiles": list(AMOUNT_QUANTILES), "value_ranges": ranges},
            row_condition=LEGIT,
        ),
        gxe.ExpectColumnKLDivergenceToBeLessThan(
            column="type",
            partition_object={"values": types, "weights": [profile.type_shares[t] for t in types]},
            threshold=float(params["type_kl_max"]),
            row_condition=LEGIT,
        ),
    ]


def build_suite(profile: ReferenceProfile, params: dict) -> gx.ExpectationSuite:
    """The full suite for a transaction batch."""
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for expectation in (
        schema_expectations(profile.located)
        + value_expectations()
        + batch_expectations(params)
        + distribution_expectations(profile, params)
    ):
        suite.add_expectation(expectation)
    return suite
