"""Secret values that must never reach a log line or an error message.

Every layer may register what it knows to be secret (the ACME client its EAB HMAC
key, a DNS provider the values of its secret variables); whatever turns text into
output for people passes it through :func:`redact`. Depends on the standard
library only, so any layer can import it.
"""

from __future__ import annotations

import logging

MASK = "***"

_secrets: set[str] = set()
_longest_first: tuple[str, ...] = ()


def add_secret(value: str | None) -> None:
    """Mask ``value`` (surrounding whitespace ignored) wherever :func:`redact` sees it."""
    global _longest_first
    text = (value or "").strip()
    if text and text not in _secrets:
        _secrets.add(text)
        _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose output (message, arguments and traceback) never shows a registered secret,
    nor a control character that a server slipped into a logged string."""

    def format(self, record: logging.LogRecord) -> str:
        from certsmith._text import clean

        return clean(redact(super().format(record)), 1_000_000, keep_newlines=True)
