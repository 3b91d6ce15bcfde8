"""PII masking for every log line: card numbers (PAN), CVV codes and e-mail addresses
never reach a log. `configure_logging` installs it on the root handler; the formatter
masks the fully formatted line, so tracebacks and third-party messages are covered too."""

from __future__ import annotations

import logging
import re
import sys

_PAN = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
_CVV = re.compile(r"(?i)\b(cvv2?|cvc2?|csc|security[ _-]?code)(\W{0,3})(\d{3,4})\b")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


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


def mask_pii(text: str) -> str:
    """Mask Luhn-valid PANs (13-19 digits, spaces or dashes allowed), CVVs and e-mails."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CVV.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
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
