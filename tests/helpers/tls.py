"""Certificates for the TLS tests, made on the spot: a CA, and a server and a client
certificate it signed, as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path


def _key_and_cert(name: str, issuer=None, san: bool = False, ca: bool = False):
    """An EC key and a certificate, self-signed or signed by `issuer` (key, cert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(signer_key, hashes.SHA256())


def _pem(tmp_path: Path, name: str, key, cert) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    key_path, cert_path = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def tls_files(tmp_path: Path, client_name: str) -> tuple[Path, ...]:
    """A CA, and a server and a client certificate it signed: (CA, server key, server
    certificate, client key, client certificate) in PEM files."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    ca = _key_and_cert("fraudops test CA", ca=True)
    _, ca_pem = _pem(tmp_path, "ca", *ca)
    server_key, server_pem = _pem(tmp_path, "server", *_key_and_cert("server", ca, san=True))
    client_key, client_pem = _pem(tmp_path, "client", *_key_and_cert(client_name, ca))
    return ca_pem, server_key, server_pem, client_key, client_pem
