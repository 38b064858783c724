"""Text from elsewhere made safe to print: no control characters, bounded length.

A CA's problem detail, a certificate's issuer name or a provider's error message may hold
terminal escape sequences (a title change, a cleared screen) or bidirectional overrides, or
be a megabyte long. Everything such text reaches -- the terminal, a log, a JSON report --
gets it through :func:`clean`.
"""

from __future__ import annotations

DEFAULT_LIMIT = 500


def clean(text: str, limit: int = DEFAULT_LIMIT, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character (C0/C1 controls, ESC, format characters)
    replaced by ``?`` and cut to ``limit`` characters (marked with ``...``)."""
    if text.isprintable() and len(text) <= limit:
        return text
    safe = "".join(
        ch if ch.isprintable() or (keep_newlines and ch == "\n") else ("" if ch == "\r" else "?") for ch in text
    )
    return safe if len(safe) <= limit else safe[: max(limit - 3, 0)] + "..."
