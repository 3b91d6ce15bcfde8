"""Where the simulated customers pay from: each has a home country, a card issued there
(mostly) and two addresses of their own, drawn from real ranges of the IP country database
(`fraudops.geoip`); they pay from home, sometimes while travelling, sometimes without an
address the merchant could see. Fraud is where location shows: a taken-over account or a
stolen card is mostly used from a country that is neither the customer's nor the card's.

The columns are what enrichment derives (`ip_country`, `ip_kind`, by the same function
the scorer uses) and `card_country`; the address itself is not kept. `addresses` goes the
other way: an address that enrichment reads back as a given country and kind, which the
simulator draws and the demo's replay sends (the reference keeps no address to send)."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from fraudops.geoip import GeoIpDatabase, enrich_columns
from fraudops.schema import LOCATION_DATA_COLUMNS, TRANSACTION_COLUMNS

HOMES: dict[str, float] = {"US": 0.30, "DE": 0.15, "GB": 0.12, "FR": 0.10, "BR": 0.10,
                           "IN": 0.08, "JP": 0.05, "ES": 0.05, "NG": 0.05}  # fmt: skip
ABROAD: tuple[str, ...] = ("US", "DE", "GB", "FR", "BR", "IN", "JP", "ES", "NG", "RU", "CN",
                           "VN", "ID", "UA", "RO", "TR")  # fmt: skip
# Ranges enrichment reads as a kind without a country (fraudops.geoip.address_kind): the
# addresses of those kinds are drawn from them, as (start, size).
KIND_NETS: dict[str, tuple[int, int]] = {
    "private": (int(ipaddress.IPv4Address("192.168.0.0")), 1 << 16),
    "reserved": (int(ipaddress.IPv4Address("240.0.0.0")), 1 << 28),
}


@dataclass(frozen=True)
class LocationMix:
    """Shares of where a payment comes from, by class (each row of the two sums to 1 with
    the home share: home = 1 - the rest)."""

    legit_travel: float = 0.04
    legit_unknown: float = 0.08
    legit_private: float = 0.02
    fraud_abroad: float = 0.70
    fraud_unknown: float = 0.10
    card_abroad: float = 0.03  # customers whose card was issued outside their home
    homes: dict[str, float] = field(default_factory=lambda: dict(HOMES))

    def to_json(self) -> dict:
        return asdict(self)


def fit_mix(frame: pd.DataFrame) -> LocationMix | None:
    """The shares of a dataset that carries location columns (None when it carries none,
    as a PaySim CSV does): each user's home is the country of most of their legitimate
    payments; travel or
    fraud abroad is a known country other than home; unknown and private are the kinds.
    The synthesizer keeps these, and generate draws from them."""
    if not set(LOCATION_DATA_COLUMNS) <= set(frame.columns):
        return None
    known = frame[(frame["ip_country"].astype(str) != "") & (frame["is_fraud"] == 0)]
    if known.empty:
        return None
    home = known.groupby("user_id")["ip_country"].agg(lambda s: s.value_counts().index[0])
    user_home = frame["user_id"].map(home).fillna("").to_numpy()
    country, kind = frame["ip_country"].astype(str).to_numpy(), frame["ip_kind"].to_numpy()
    abroad = (country != "") & (country != user_home)
    fraud = frame["is_fraud"].to_numpy() == 1
    share = lambda mask, rows: float(mask[rows].mean()) if rows.any() else 0.0  # noqa: E731
    cards = frame.groupby("user_id")["card_country"].first()
    homes = home.value_counts(normalize=True)
    return LocationMix(
        legit_travel=share(abroad, ~fraud), legit_unknown=share(kind == "unknown", ~fraud),
        legit_private=share(kind == "private", ~fraud), fraud_abroad=share(abroad, fraud),
        fraud_unknown=share(kind == "unknown", fraud),
        card_abroad=float((cards.reindex(home.index) != home).mean()),
        homes={str(c): float(v) for c, v in homes.items()},
    )  # fmt: skip


def country_networks(
    database: GeoIpDatabase, countries: tuple[str, ...], rng: np.random.Generator,
    probes: int = 300_000, per_country: int = 40,
) -> dict[str, list[tuple[int, int]]]:  # fmt: skip
    """Up to `per_country` IPv4 networks (start, size) per country, found by looking up
    random public addresses: real ranges of the database, in proportion to nothing."""
    wanted, found = set(countries), {c: [] for c in countries}
    for value in rng.integers(1 << 24, 224 << 24, probes).tolist():
        country, prefix = database.network_of(str(ipaddress.IPv4Address(value)))
        if country in wanted and len(found[country]) < per_country and prefix >= 8:
            size = 1 << (32 - prefix)
            found[country].append((value - value % size, size))
    return {c: nets for c, nets in found.items() if nets}


def addresses(
    nets: dict[str, list[tuple[int, int]]], countries, rng: np.random.Generator, kinds=None
) -> np.ndarray:
    """An address per row that enrichment reads back as the row's country and kind: a random
    address in a random network of its country (`country_networks`); without one, an
    address of its kind's range (KIND_NETS: private, reserved); otherwise "" (unknown: a
    public address without a country cannot be drawn, and reads the same to every
    feature). `kinds` None: every row public."""
    countries = np.asarray(countries, dtype=object)
    kinds = np.full(len(countries), "public", dtype=object) if kinds is None else np.asarray(kinds)
    out = np.full(len(countries), "", dtype=object)
    located = np.array([c in nets for c in countries], dtype=bool)
    for country in np.unique(countries[located]):
        rows = np.flatnonzero(located & (countries == country))
        pool = nets[country]
        picks = rng.integers(0, len(pool), len(rows))
        offsets = rng.random(len(rows))
        out[rows] = [str(ipaddress.IPv4Address(pool[p][0] + int(o * pool[p][1])))
                     for p, o in zip(picks.tolist(), offsets.tolist(), strict=True)]  # fmt: skip
    for kind, (first, size) in KIND_NETS.items():
        rows = np.flatnonzero((kinds == kind) & ~located)
        if len(rows):
            out[rows] = [str(ipaddress.IPv4Address(first + int(v)))
                         for v in rng.integers(1, size - 1, len(rows))]  # fmt: skip
    return out


def frame_addresses(
    frame: pd.DataFrame, database: GeoIpDatabase, rng: np.random.Generator
) -> np.ndarray:
    """An address for each row of a dataset that keeps the derived location (`ip_country`,
    `ip_kind`), drawn from real ranges of `database`, so that sending the row with it
    reproduces the row's location."""
    text = lambda name: frame[name].fillna("").astype(str).to_numpy()  # noqa: E731
    countries = text("ip_country")
    kinds = text("ip_kind") if "ip_kind" in frame.columns else None
    wanted = tuple(sorted(set(countries) - {""}))
    nets = country_networks(database, wanted, rng) if wanted else {}
    return addresses(nets, countries, rng, kinds)


def add_locations(
    frame: pd.DataFrame, database: GeoIpDatabase, rng: np.random.Generator,
    mix: LocationMix = LocationMix(),
) -> pd.DataFrame:  # fmt: skip
    """`frame` with `ip_country`, `ip_kind` and `card_country` (see the module docstring)."""
    nets = country_networks(database, tuple(sorted(set(mix.homes) | set(ABROAD))), rng)
    homes_known = [c for c in mix.homes if c in nets]
    weights = np.array([mix.homes[c] for c in homes_known])
    users, user_of = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
    home = rng.choice(homes_known, size=len(users), p=weights / weights.sum())
    card = np.where(rng.random(len(users)) < mix.card_abroad,
                    rng.choice(homes_known, size=len(users)), home)  # fmt: skip
    own = np.stack([addresses(nets, home, rng) for _ in range(2)], axis=1)
    fraud = frame["is_fraud"].to_numpy() == 1
    roll = rng.random(len(frame))
    away_p = np.where(fraud, mix.fraud_abroad, mix.legit_travel)
    unknown_p = away_p + np.where(fraud, mix.fraud_unknown, mix.legit_unknown)
    abroad, unknown = roll < away_p, (roll >= away_p) & (roll < unknown_p)
    private = ~fraud & (roll >= unknown_p) & (roll < unknown_p + mix.legit_private)
    away = np.array(sorted(c for c in ABROAD if c in nets))
    elsewhere = rng.choice(away, size=len(frame))
    at_home = elsewhere == home[user_of]  # abroad means another country: the next one
    elsewhere[at_home] = away[(np.searchsorted(away, elsewhere[at_home]) + 1) % len(away)]
    ips = own[user_of, rng.integers(0, 2, len(frame))]
    ips[abroad] = addresses(nets, elsewhere[abroad], rng)
    n_private = int(private.sum())
    ips[private] = addresses(nets, np.full(n_private, ""), rng, np.full(n_private, "private"))
    ips[unknown] = ""
    out = frame.copy()
    enriched = enrich_columns(ips.tolist(), database)
    out["ip_country"], out["ip_kind"] = enriched["ip_country"], enriched["ip_kind"]
    out["card_country"] = card[user_of]
    return out[[*TRANSACTION_COLUMNS[:-1], *LOCATION_DATA_COLUMNS, TRANSACTION_COLUMNS[-1]]]
