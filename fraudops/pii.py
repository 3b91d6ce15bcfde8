"""PII masking for every log line: card numbers (PAN), CVV codes, e-mail addresses and IP
addresses never reach a log (loopback addresses are kept: they name this machine's own
services, never a person). `configure_logging` installs it on the root handler; the formatter
masks the fully formatted line, so tracebacks and third-party messages are covered too."""

from __future__ import annotations

import ipaddress
import logging
import re
import sys

_PAN = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
_CVV = re.compile(r"(?i)\b(cvv2?|cvc2?|csc|security[ _-]?code)(\W{0,3})(\d{3,4})\b")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Candidates only: a match is masked when it parses as an address (a time such as 12:30:45
# or a version number does not).
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[\d.]+)?(?![\w:])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_pan(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return f"[PAN ****{digits[-4:]}]"
    return match.group(0)


def _mask_ip(match: re.Match) -> str:
    try:
        address = ipaddress.ip_address(match.group(0))
    except ValueError:
        return match.group(0)
    return match.group(0) if address.is_loopback or address.is_unspecified else "[IP]"


def mask_pii(text: str) -> str:
    """Mask Luhn-valid PANs (13-19 digits, spaces or dashes allowed), CVVs, e-mails and
    IP addresses."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CVV.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    if "." in text or ":" in text:
        text = _IPV4.sub(_mask_ip, text)
        text = _IPV6.sub(_mask_ip, text)
    return _PAN.sub(_mask_pan, text)


class PiiMaskingFilter(logging.Filter):
    """Masks the message of each record (for handlers we do not own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_pii(record.getMessage())
        record.args = None
        return True


class PiiMaskingFormatter(logging.Formatter):
    """Masks the whole formatted line, exception text included."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_pii(super().format(record))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Route all logging through one PII-masking handler. Call once from a main()."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(PiiMaskingFormatter(LOG_FORMAT))
    handler.addFilter(PiiMaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
