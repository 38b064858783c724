"""A rate limiter shared through the store, so a fleet stays under the CA's limits.

Before each newAccount, newOrder and finalize the manager takes a token here; when a
limit is reached the work is deferred with :class:`RateLimited` (naming the limit and
when a token frees up) instead of being sent and refused by the CA. Tokens are counted in
the store (:meth:`~certsmith.storage.base.Store.rate_take`: a sliding window, all or none,
atomic across processes and hosts sharing the store).

The defaults apply to Let's Encrypt (production and staging) and stay under its published
limits (https://letsencrypt.org/docs/rate-limits/, checked 2025-06), leaving room for
other clients and clock differences:

=========================  ===============================  ==================
limit                      Let's Encrypt                    certsmith default
=========================  ===============================  ==================
``new-orders``             300 per account per 3 hours      250 per 3 h
``certs-per-domain``       50 per registered domain / week  45 per 7 d
``duplicate-certs``        5 per exact set of names / week  4 per 7 d
``new-accounts``           10 per IP address per 3 hours    8 per 3 h
=========================  ===============================  ==================

Other CAs have no limits unless configured. New accounts are counted per CA for the whole
store (the hosts of a fleet often leave through one address); IP addresses count as their
own registered domain (an IPv6 address by its /64), as Let's Encrypt counts them.

Exemptions, as Let's Encrypt grants them:

* an order that carries ARI ``replaces`` while the replaced certificate's renewal window is
  open is exempt from every limit ("certificate renewals that utilize ARI will now be exempt
  from all rate limits": https://letsencrypt.org/2024/04/25/guide-to-integrating-ari-into-existing-acme-clients/);
* a renewal for exactly the same names (without ARI) is exempt from ``certs-per-domain``
  (the Renewal Exemption of the rate-limits page), but still counts against ``new-orders``
  and ``duplicate-certs``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from certsmith.errors import CertsmithError, ConfigError
from certsmith.storage.base import RateBucket, Store

__all__ = [
    "LETSENCRYPT",
    "LIMIT_NAMES",
    "Limit",
    "RateLimited",
    "RateLimiter",
    "RateLimits",
    "parse_limit_options",
    "registered_domain",
]

#: What each limit counts, as the messages say it.
LIMIT_NAMES: dict[str, str] = {
    "new-orders": "new orders per account",
    "certs-per-domain": "new certificates per registered domain",
    "duplicate-certs": "new certificates per exact set of names",
    "new-accounts": "new accounts",
}
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


@dataclass(frozen=True)
class Limit:
    """At most ``count`` per ``window`` seconds."""

    count: int
    window: float

    def describe(self) -> str:
        return f"{self.count} per {_duration(self.window)}"


@dataclass(frozen=True)
class RateLimits:
    """The limits of one CA by name (see :data:`LIMIT_NAMES`); a missing name is not limited."""

    limits: tuple[tuple[str, Limit], ...] = ()

    def get(self, name: str) -> Limit | None:
        return dict(self.limits).get(name)

    def with_(self, name: str, limit: Limit | None) -> RateLimits:
        chosen = {k: v for k, v in self.limits if k != name}
        if limit is not None:
            chosen[name] = limit
        return RateLimits(tuple(sorted(chosen.items())))


LETSENCRYPT = RateLimits(
    (
        ("certs-per-domain", Limit(45, 7 * 86400.0)),
        ("duplicate-certs", Limit(4, 7 * 86400.0)),
        ("new-accounts", Limit(8, 3 * 3600.0)),
        ("new-orders", Limit(250, 3 * 3600.0)),
    )
)


class _Wanted(NamedTuple):
    """A bucket to check or take: its limit, its key under that limit, and what a refusal names."""

    limit: str
    key: str
    take: bool
    subject: str = ""


def _is_letsencrypt(directory_url: str) -> bool:
    host = (urlsplit(directory_url).hostname or "").lower()
    return host == "api.letsencrypt.org" or host.endswith(".api.letsencrypt.org")


class RateLimited(CertsmithError):
    """A limit of the shared rate limiter is reached: the work is deferred, nothing was sent to the CA."""

    def __init__(self, message: str, *, limit: str, retry_at: datetime, wait: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_at = retry_at
        self.wait = wait


def _duration(seconds: float) -> str:
    for unit, size in (("w", _UNITS["w"]), ("d", _UNITS["d"]), ("h", _UNITS["h"]), ("m", _UNITS["m"])):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _parse_duration(text: str) -> float:
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{text!r} is not a duration (a positive number with s, m, h, d or w, e.g. 3h)")
    return value


def parse_limit_options(
    values: Iterable[str], default_directory: str, resolve_directory: Callable[[str], str]
) -> dict[str, dict[str, Limit | None]]:
    """``--rate-limit`` values by CA: ``NAME=COUNT/PERIOD``, ``NAME=off`` or ``off``, each with an optional ``@CA``.

    ``CA`` is a directory URL or name (``resolve_directory`` turns it into a URL); without it the
    value is for ``default_directory`` (--directory). Several values may be given in one string,
    separated by commas. Raises one ConfigError line.
    """
    out: dict[str, dict[str, Limit | None]] = {}
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            spec, _, ca = item.partition("@")
            directory = resolve_directory(ca.strip()) if ca.strip() else default_directory
            chosen = out.setdefault(directory, {})
            spec = spec.strip()
            if spec.lower() == "off":
                for name in LIMIT_NAMES:
                    chosen[name] = None
                continue
            name, sep, amount = spec.partition("=")
            name = name.strip().lower()
            if not sep or name not in LIMIT_NAMES:
                raise ConfigError(
                    f"--rate-limit {item!r}: write NAME=COUNT/PERIOD (e.g. new-orders=250/3h), NAME=off or off, "
                    f"where NAME is one of {', '.join(LIMIT_NAMES)}"
                )
            if amount.strip().lower() == "off":
                chosen[name] = None
                continue
            count_text, slash, period = amount.partition("/")
            if not slash or not count_text.strip().isdigit():
                raise ConfigError(f"--rate-limit {item!r}: the amount must be COUNT/PERIOD, e.g. {name}=5/1h")
            chosen[name] = Limit(int(count_text), _parse_duration(period))
    return out


def registered_domain(identifier: str) -> str:
    """The registered domain a CA counts ``identifier`` against: ``www.example.co.uk`` -> ``example.co.uk``.

    From the Public Suffix List (the ``publicsuffixlist`` package, which ships it, so no
    network is needed); an IPv4 address counts as itself, an IPv6 address as its /64.
    """
    name = identifier.strip().rstrip(".").lower().removeprefix("*.")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        if address.version == 6:
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)
    suffix: str | None = _suffix_list().privatesuffix(name)
    return suffix or name


@functools.cache
def _suffix_list() -> Any:
    """The Public Suffix List, parsed once, on first use (about 0.1 s of CPU: not for a CA without limits)."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


class RateLimiter:
    """Takes tokens from the store for one manager's requests; ``overrides`` by directory URL."""

    def __init__(self, store: Store, overrides: Mapping[str, Mapping[str, Limit | None]] | None = None) -> None:
        self.store = store
        self.overrides = {url: dict(limits) for url, limits in (overrides or {}).items()}

    def limits(self, directory_url: str) -> RateLimits:
        """The limits for the CA at ``directory_url``: the defaults (Let's Encrypt only) with the overrides."""
        limits = LETSENCRYPT if _is_letsencrypt(directory_url) else RateLimits()
        for name, limit in self.overrides.get(directory_url, {}).items():
            limits = limits.with_(name, limit)
        return limits

    def before_new_account(self, directory_url: str, now: datetime) -> None:
        self._take(directory_url, self.limits(directory_url), now, [_Wanted("new-accounts", "accounts", True)])

    def before_new_order(
        self, directory_url: str, account_url: str, names: Sequence[str], now: datetime, *,
        ari_renewal: bool = False, same_names_renewal: bool = False,
    ) -> None:
        """Take a new-order token; check (without taking) that the certificate limits have room."""
        limits = self.limits(directory_url)
        if ari_renewal or not limits.limits:
            return
        wanted = [_Wanted("new-orders", f"orders:{account_url}", True),
                  *self._certificate_buckets(limits, names, False, per_domain=not same_names_renewal)]
        self._take(directory_url, limits, now, wanted)

    def before_finalize(
        self, directory_url: str, names: Sequence[str], now: datetime, *,
        ari_renewal: bool = False, same_names_renewal: bool = False,
    ) -> None:
        """Take the certificate tokens (per registered domain, per exact set of names)."""
        limits = self.limits(directory_url)
        if ari_renewal or not limits.limits:
            return
        wanted = self._certificate_buckets(limits, names, True, per_domain=not same_names_renewal)
        self._take(directory_url, limits, now, wanted)

    @staticmethod
    def _certificate_buckets(
        limits: RateLimits, names: Sequence[str], take: bool, *, per_domain: bool
    ) -> list[_Wanted]:
        """The certificate limits' buckets; the Public Suffix List is loaded only when domains are limited."""
        exact = ",".join(sorted({n.strip().rstrip(".").lower() for n in names}))
        limited = per_domain and limits.get("certs-per-domain") is not None
        domains = sorted({registered_domain(n) for n in names}) if limited else []
        return [
            *(_Wanted("certs-per-domain", f"domain:{domain}", take, domain) for domain in domains),
            _Wanted("duplicate-certs", f"names:{hashlib.sha256(exact.encode()).hexdigest()[:32]}", take),
        ]

    def _take(
        self, directory_url: str, limits: RateLimits, now: datetime, wanted: Sequence[_Wanted]
    ) -> None:
        ca = hashlib.sha256(directory_url.encode()).hexdigest()[:16]
        buckets: dict[str, tuple[_Wanted, RateBucket]] = {}
        for want in wanted:
            limit = limits.get(want.limit)
            if limit is None:
                continue
            bucket = RateBucket(f"{ca}:{want.limit}:{want.key}", limit.count, limit.window, want.take)
            buckets[bucket.key] = (want, bucket)
        if not buckets:
            return
        refusal = self.store.rate_take([b for _, b in buckets.values()], now.timestamp())
        if refusal is None:
            return
        refused = buckets[refusal.bucket.key][0]
        name = refused.limit
        limit = limits.get(name)
        assert limit is not None
        retry_at = now.astimezone(UTC) + timedelta(seconds=math.ceil(refusal.wait))
        what = LIMIT_NAMES[name] + (f" ({refused.subject})" if refused.subject else "")
        raise RateLimited(
            f"deferred by the rate limiter: {what} is limited to {limit.describe()} at {directory_url} and "
            f"that is used up; a token frees up in {math.ceil(refusal.wait)} s "
            f"(at {retry_at.strftime('%Y-%m-%dT%H:%M:%SZ')}); nothing was sent to the CA",
            limit=name, retry_at=retry_at, wait=refusal.wait,
        )

