"""The rate limiter's pure parts: registered domains, the --rate-limit grammar, defaults, exemptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certsmith.errors import ConfigError
from certsmith.ratelimit import LETSENCRYPT, Limit, RateLimited, RateLimiter, parse_limit_options, registered_domain
from certsmith.settings import resolve_directory
from tests.support.memory_store import MemoryStore

LE = "https://acme-v02.api.letsencrypt.org/directory"
OTHER = "https://acme.internal/directory"
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("www.example.com", "example.com"),
        ("new.blog.example.co.uk", "example.co.uk"),
        ("*.Example.COM.", "example.com"),
        ("me.github.io", "me.github.io"),
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::/64"),
    ],
)
def test_registered_domain(name: str, expected: str) -> None:
    assert registered_domain(name) == expected


def test_parse_limit_options() -> None:
    parsed = parse_limit_options(["new-orders=5/10m, certs-per-domain=off", f"off@{OTHER}"], LE, resolve_directory)
    assert parsed[LE] == {"new-orders": Limit(5, 600.0), "certs-per-domain": None}
    assert set(parsed[OTHER].values()) == {None} and len(parsed[OTHER]) == 4
    assert parse_limit_options(["duplicate-certs=1/2w@letsencrypt-staging"], OTHER, resolve_directory) == {
        resolve_directory("letsencrypt-staging"): {"duplicate-certs": Limit(1, 14 * 86400.0)}
    }


@pytest.mark.parametrize("value", ["new-orders", "orders=1/1h", "new-orders=x/1h", "new-orders=1/0h",
                                   "new-orders=1/inf", "new-orders=1/1y", "new-orders=1/1h@ftp://x"])
def test_bad_limit_options(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_limit_options([value], LE, resolve_directory)


def test_defaults_are_for_lets_encrypt_only_and_under_its_limits() -> None:
    limiter = RateLimiter(MemoryStore(), {OTHER: {"new-orders": Limit(2, 60.0)}})
    assert limiter.limits(LE) == LETSENCRYPT
    assert limiter.limits("https://acme-staging-v02.api.letsencrypt.org/directory") == LETSENCRYPT
    assert limiter.limits(OTHER).limits == (("new-orders", Limit(2, 60.0)),)
    assert limiter.limits("https://evil.api.letsencrypt.org.example/dir").limits == ()
    published = {"new-orders": (300, 3 * 3600), "certs-per-domain": (50, 7 * 86400),
                 "duplicate-certs": (5, 7 * 86400), "new-accounts": (10, 3 * 3600)}
    for name, (count, window) in published.items():
        limit = LETSENCRYPT.get(name)
        assert limit is not None and limit.count < count and limit.window >= window


def test_orders_then_certificates_and_the_exemptions() -> None:
    store = MemoryStore()
    limiter = RateLimiter(store, {LE: {"certs-per-domain": Limit(1, 3600.0), "new-orders": Limit(3, 3600.0)}})
    names = ["a.example.com"]
    limiter.before_new_order(LE, "acct", names, NOW)
    limiter.before_finalize(LE, names, NOW)
    # the registered domain's certificate is used: a new order for another name there is deferred at once
    with pytest.raises(RateLimited, match=r"new certificates per registered domain \(example.com\)") as caught:
        limiter.before_new_order(LE, "acct", ["b.example.com"], NOW + timedelta(seconds=10))
    assert caught.value.wait == pytest.approx(3590.0) and caught.value.limit == "certs-per-domain"
    assert caught.value.retry_at == NOW + timedelta(seconds=3600)
    # a renewal of the same names is not counted per domain; an ARI renewal in its window by nothing
    limiter.before_new_order(LE, "acct", names, NOW, same_names_renewal=True)
    limiter.before_finalize(LE, names, NOW, same_names_renewal=True)
    for _ in range(5):
        limiter.before_new_order(LE, "acct", ["c.example.com"], NOW, ari_renewal=True)
    limiter.before_new_order(LE, "acct", names, NOW, same_names_renewal=True)  # the third order of three
    with pytest.raises(RateLimited, match="new orders per account is limited to 3 per 1h"):
        limiter.before_new_order(LE, "acct", names, NOW, same_names_renewal=True)
    # duplicates: 4 a week by default
    for _ in range(2):
        limiter.before_finalize(LE, names, NOW, same_names_renewal=True)
    with pytest.raises(RateLimited, match="exact set of names is limited to 4 per 1w"):
        limiter.before_finalize(LE, names, NOW, same_names_renewal=True)


def test_a_ca_without_limits_costs_no_public_suffix_list_and_no_store_call() -> None:
    """Parsing the Public Suffix List takes about 0.1 s: an issue at a CA without limits must not pay it."""
    from certsmith import ratelimit

    class CountingStore(MemoryStore):
        takes = 0

        def rate_take(self, *args: object, **kwargs: object) -> None:
            CountingStore.takes += 1

    ratelimit._suffix_list.cache_clear()
    limiter = RateLimiter(CountingStore(), {OTHER: {"new-orders": Limit(5, 60.0)}})
    for url in ("https://127.0.0.1:14000/dir", OTHER):
        limiter.before_new_account(url, NOW)
        limiter.before_new_order(url, "acct", ["a.example.com"], NOW)
        limiter.before_finalize(url, ["a.example.com"], NOW)
    assert ratelimit._suffix_list.cache_info().currsize == 0  # OTHER limits orders, not registered domains
    assert CountingStore.takes == 1  # OTHER's new order only
    limiter.before_new_order(LE, "acct", ["a.example.com"], NOW)
    assert ratelimit._suffix_list.cache_info().currsize == 1
