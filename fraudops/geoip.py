"""Where a payment comes from: an IP address enriched with its country and its kind of
network, read locally from a MaxMind DB file (`maxminddb`) that the install step fetched
(`make geoip-db`; never at run time). Training (featurize) and serving enrich with the same
function, so a feature reads the same value in both.

Unknown is a value of its own, never an error: an empty address, a private or reserved
range (routed nowhere, so it has no country: the database's own answer for such ranges is
not trusted), or a public address the database does not cover all give the country "".

The address itself is personal data: it is enriched and dropped. What may be kept is its
country, its kind and `ip_hash`, a keyed hash that lets the console group payments
by address without storing it.

`python -m fraudops.geoip install` is the install step's check-and-place: it opens the
fetched file, checks it answers, writes the sidecar that records which package, version,
file and build date it is, and renames both into place (a watcher sees one complete file).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import maxminddb

from fraudops.countries import COUNTRY_CODES
from fraudops.schema import parse_ip

KINDS: tuple[str, ...] = ("unknown", "public", "private", "reserved")
# Addresses every country database must place; a file that cannot is refused.
_CHECKS: dict[str, str] = {"8.8.8.8": "US", "2001:4860:4860::8888": "US"}
LOOKUP_CACHE = 65536  # distinct addresses remembered per database


@dataclass(frozen=True)
class IpInfo:
    """What enrichment keeps of an address: its country ("" unknown) and its kind."""

    country: str
    kind: str


UNKNOWN = IpInfo("", "unknown")
# Every answer a lookup can give, made once: a lookup returns one of these, never builds one.
_OF_KIND = {kind: IpInfo("", kind) for kind in KINDS}
_PUBLIC = {country: IpInfo(country, "public") for country in COUNTRY_CODES}


@dataclass(frozen=True)
class DatabaseVersion:
    """Which database answers: the registry package and version it came from, the file,
    its build date and content hash (the sidecar `<file>.json` the install step wrote)."""

    package: str
    version: str
    file: str
    built: str
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.package}@{self.version} ({self.file}, built {self.built})"


# The ranges that are routed nowhere on the public internet, by kind (IANA's special-purpose
# registries): a table searched by bisection, since ipaddress's is_private and friends walk
# lists of networks on every call (tens of microseconds).
_SPECIAL_V4 = {
    "reserved": ["0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"],
    "private": ["10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
                "198.51.100.0/24", "203.0.113.0/24"],
}  # fmt: skip
_SPECIAL_V6 = {
    "reserved": ["::/128", "ff00::/8"],
    "private": ["::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
                "fc00::/7", "fe80::/10"],
}  # fmt: skip


def _table(special: dict[str, list[str]]) -> tuple[list[int], list[tuple[int, str]]]:
    ranges = sorted(
        (int(net.network_address), int(net.broadcast_address), kind)
        for kind, nets in special.items()
        for net in map(ipaddress.ip_network, nets)
    )
    return [r[0] for r in ranges], [(r[1], r[2]) for r in ranges]


_TABLES = {4: _table(_SPECIAL_V4), 6: _table(_SPECIAL_V6)}


def _kinds_by_first_octet() -> tuple[str | None, ...]:
    """Per first octet of an IPv4 address, the kind of its whole /8 when the table gives
    it one (public where no special range touches it), else None (it must be searched):
    a new address is mostly judged by one index."""
    starts, ends = _TABLES[4]
    out: list[str | None] = []
    for octet in range(256):
        low, high = octet << 24, (octet << 24) | 0xFFFFFF
        touching = [(s, e, k) for s, (e, k) in zip(starts, ends, strict=True)
                    if s <= high and e >= low]  # fmt: skip
        whole = [k for s, e, k in touching if s <= low and e >= high]
        out.append(whole[0] if whole else None if touching else "public")
    return tuple(out)


_V4_KIND_BY_OCTET = _kinds_by_first_octet()


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d, an IPv4 address in IPv6 form


def address_kind(packed: bytes) -> str:
    """public, private (RFC 1918, unique-local, loopback, link-local, carrier NAT,
    documentation and benchmarking ranges) or reserved (multicast, unspecified, reserved
    blocks) of a packed address (see `fraudops.schema.parse_ip`). An IPv4-mapped IPv6
    address is judged by its IPv4 address (the caller unwraps it)."""
    version = 4 if len(packed) == 4 else 6
    if version == 4 and (kind := _V4_KIND_BY_OCTET[packed[0]]) is not None:
        return kind
    value = int.from_bytes(packed, "big")
    starts, ends = _TABLES[version]
    at = bisect.bisect_right(starts, value) - 1
    if at >= 0 and value <= ends[at][0]:
        return ends[at][1]
    if version == 6 and value >> 125 != 1:  # outside 2000::/3, global unicast
        return "reserved"
    return "public"


class GeoIpDatabase:
    """One opened country database; `lookup` answers from memory in microseconds."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._reader = maxminddb.open_database(str(self.path), maxminddb.MODE_MMAP_EXT)
        self.version = _read_version(self.path, self._reader)
        self.lookup = functools.lru_cache(maxsize=LOOKUP_CACHE)(self._lookup)

    def _lookup(self, ip: str) -> IpInfo:
        """The country and kind of `ip` (already validated; "" or unparsable: unknown)."""
        packed = parse_ip(ip) if ip else None
        if packed is None:
            return UNKNOWN
        if packed[:12] == _MAPPED_PREFIX:
            packed = packed[12:]
            ip = socket.inet_ntop(socket.AF_INET, packed)
        kind = address_kind(packed)
        if kind != "public":
            return _OF_KIND[kind]
        record = self._reader.get(ip)
        country = record.get("country_code", "") if isinstance(record, dict) else ""
        return _PUBLIC.get(country, _OF_KIND["public"])

    def network_of(self, ip: str) -> tuple[str, int]:
        """The database's country for `ip` (unchecked: "" when none) and the prefix length
        of the network it holds it for: the simulator draws addresses of real ranges."""
        record, prefix = self._reader.get_with_prefix_len(ip)
        country = record.get("country_code", "") if isinstance(record, dict) else ""
        return country, prefix

    def check(self) -> None:
        """Refuse a file that is not a country database or places known addresses wrong."""
        meta = self._reader.metadata()
        if meta.ip_version != 6:
            raise ValueError(f"{self.path}: holds IPv{meta.ip_version} only; IPv4+IPv6 needed")
        for ip, country in _CHECKS.items():
            got = self._lookup(ip).country
            if got != country:
                raise ValueError(f"{self.path}: places {ip} in {got!r}, expected {country}")

    def close(self) -> None:
        self._reader.close()


def _read_version(path: Path, reader: maxminddb.Reader) -> DatabaseVersion:
    """The sidecar's record, or (a file placed by hand) what the file itself says."""
    sidecar = sidecar_path(path)
    if sidecar.exists():
        return DatabaseVersion(**json.loads(sidecar.read_text()))
    built = dt.datetime.fromtimestamp(reader.metadata().build_epoch, dt.UTC)
    return DatabaseVersion("unrecorded", "", path.name, built.date().isoformat(), "")


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def enrich(ips: Sequence[str | None], database: GeoIpDatabase | None) -> list[IpInfo]:
    """The enrichment of a column of addresses (None or "": unknown; no database: all
    unknown): the simulator's columns come from here, an address seen before costing one
    cache hit, and no answer is built per row. The scorers enrich with the same lookup
    through serving.geoip_store, which caches it together with the keyed hash."""
    if database is None:
        return [UNKNOWN] * len(ips)
    lookup = database.lookup
    return [lookup(ip) if ip and isinstance(ip, str) else UNKNOWN for ip in ips]


def enrich_columns(ips: Sequence[str], database: GeoIpDatabase | None) -> dict[str, list[str]]:
    """`ip_country` and `ip_kind` for a column of addresses (see `enrich`)."""
    infos = enrich(ips, database)
    return {"ip_country": [i.country for i in infos], "ip_kind": [i.kind for i in infos]}


@functools.lru_cache(maxsize=LOOKUP_CACHE)
def ip_hash(ip: str, key: str) -> str:
    """A keyed hash of an address (keyed BLAKE2b, 128 bits as hex): the same address gives
    the same value under one key, and without the key it cannot be reversed by trying the
    4 billion IPv4 addresses. BLAKE2b's keyed mode is a MAC by design, at a third of
    HMAC-SHA256's cost; the scorer hashes every new address. Empty for an empty address."""
    return keyed_hash(key)(ip)


@functools.lru_cache(maxsize=8)
def keyed_hash(key: str) -> Callable[[str], str]:
    """`ip_hash` under one key, uncached, as a function of the address: the keyed state is
    made once and copied for each address (keying BLAKE2b costs a compression of its own)."""
    keyed = hashlib.blake2b(key=_mac_key(key), digest_size=16)

    def hashed(ip: str) -> str:
        if not ip:
            return ""
        mac = keyed.copy()
        mac.update(parse_ip(ip) or ip.encode())
        return mac.hexdigest()

    return hashed


def _mac_key(key: str) -> bytes:
    """A key of any length as BLAKE2b's (at most 64 bytes): its own 32-byte digest."""
    return hashlib.blake2b(key.encode(), digest_size=32).digest()


def install(source: Path, dest: Path, package: str, version: str) -> DatabaseVersion:
    """Check the fetched file `source`, record where it came from, and rename it and its
    sidecar into place as `dest` (the sidecar first: a watcher that sees the new file
    finds its record already there)."""
    database = GeoIpDatabase(source)
    database.check()
    built = dt.datetime.fromtimestamp(database._reader.metadata().build_epoch, dt.UTC)
    database.close()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    record = DatabaseVersion(package, version, source.name, built.date().isoformat(), digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}")
    shutil.copyfile(source, tmp)
    sidecar_tmp = dest.with_name(f".tmp-{dest.name}.json")
    sidecar_tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(sidecar_tmp, sidecar_path(dest))
    os.replace(tmp, dest)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    put = sub.add_parser("install", help="check a fetched database and place it")
    put.add_argument("--source", type=Path, required=True)
    put.add_argument("--dest", type=Path, required=True)
    put.add_argument("--package", required=True)
    put.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    record = install(args.source, args.dest, args.package, args.version)
    print(f"GeoIP database: {record.label} -> {args.dest}")


if __name__ == "__main__":
    main()
