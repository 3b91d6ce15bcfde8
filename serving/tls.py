"""Transport security of the gRPC server: TLS when given a certificate and key, mutual
TLS when also given a CA, and plain text only on a loopback address (development)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from fraudops.settings import Settings

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class InsecureBinding(ValueError):
    """Plain text was asked for on an address other machines can reach."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials from FRAUDOPS_TLS_CERT/KEY (and _CA for mutual TLS), or None for plain
    text, which is refused unless the server binds a loopback address."""
    if settings.tls_cert is None or settings.tls_key is None:
        if settings.tls_cert is not None or settings.tls_key is not None:
            raise InsecureBinding("FRAUDOPS_TLS_CERT and FRAUDOPS_TLS_KEY must be set together")
        if not is_loopback(settings.grpc_host):
            raise InsecureBinding(
                f"refusing plain text on {settings.grpc_host}: set FRAUDOPS_TLS_CERT and "
                "FRAUDOPS_TLS_KEY, or bind 127.0.0.1"
            )
        return None
    pair = [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
    if settings.tls_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=Path(settings.tls_ca).read_bytes(), require_client_auth=True
    )
