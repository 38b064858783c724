"""Parsing of the RFC2136_* variables (no network)."""

from __future__ import annotations

import base64
from pathlib import Path

import dns.tsig
import pytest

from certsmith.dns.base import DnsProvider, parse_host_port, provider_class
from certsmith.dns.rfc2136 import Rfc2136Config, Rfc2136Provider, parse_algorithm
from certsmith.errors import ConfigError, ProviderConfigError

SECRET = base64.b64encode(bytes(range(32))).decode()


def env(**values: str) -> dict[str, str]:
    base = {"RFC2136_NAMESERVER": "127.0.0.1", "RFC2136_TSIG_KEY": "certsmith.", "RFC2136_TSIG_SECRET": SECRET}
    base.update(values)
    return {k: v for k, v in base.items() if v != "<unset>"}


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1", "127.0.0.1", 53, "127.0.0.1:53"),
        ("127.0.0.1:5353", "127.0.0.1", 5353, "127.0.0.1:5353"),
        ("[::1]:53", "::1", 53, "[::1]:53"),
        ("[2001:db8::1]", "2001:db8::1", 53, "[2001:db8::1]:53"),
        ("2001:db8::1", "2001:db8::1", 53, "[2001:db8::1]:53"),
        ("ns1.example.com", "ns1.example.com", 53, "ns1.example.com:53"),
        (" ns1.example.com:5300 ", "ns1.example.com", 5300, "ns1.example.com:5300"),
    ],
)
def test_nameserver_forms(text: str, host: str, port: int, shown: str) -> None:
    assert parse_host_port(text, "RFC2136_NAMESERVER") == (host, port)
    config = Rfc2136Config.from_env(env(RFC2136_NAMESERVER=text))
    assert (config.host, config.port, config.nameserver) == (host, port, shown)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[::1", "[::1]:53"),
        ("[::1]53", "[::1]:53"),
        ("[ns1.example.com]:53", "not an IPv6 address"),
        ("2001:db8::zz", "[::1]:53"),
        (":53", "no host"),
        ("127.0.0.1:0", "1 to 65535"),
        ("127.0.0.1:65536", "1 to 65535"),
        ("127.0.0.1:dns", "1 to 65535"),
        ("[::1]:", "1 to 65535"),
        ("127.0.0.1:", "1 to 65535"),
    ],
)
def test_bad_nameservers(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match="RFC2136_NAMESERVER") as info:
        parse_host_port(text, "RFC2136_NAMESERVER")
    assert complaint in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hmac-sha256", dns.tsig.HMAC_SHA256),
        ("hmac-sha256.", dns.tsig.HMAC_SHA256),
        ("HMAC-SHA512", dns.tsig.HMAC_SHA512),
        ("hmac-sha512.", dns.tsig.HMAC_SHA512),
        ("sha384", dns.tsig.HMAC_SHA384),
        ("hmac-sha224", dns.tsig.HMAC_SHA224),
        ("hmac-sha1.", dns.tsig.HMAC_SHA1),
        ("hmac-md5.sig-alg.reg.int.", dns.tsig.HMAC_MD5),
        ("HMAC-MD5", dns.tsig.HMAC_MD5),
    ],
)
def test_algorithm_names(text: str, expected: object) -> None:
    assert parse_algorithm(text) == expected
    assert Rfc2136Config.from_env(env(RFC2136_TSIG_ALGORITHM=text)).tsig_algorithm == expected


def test_unknown_algorithm_lists_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as info:
        Rfc2136Config.from_env(env(RFC2136_TSIG_ALGORITHM="hmac-sha3-256"))
    assert "hmac-sha3-256" in str(info.value) and "hmac-sha256" in str(info.value) and "hmac-sha512" in str(info.value)


def test_defaults() -> None:
    provider = Rfc2136Provider.from_env(env())
    config = provider.config
    assert config.tsig_algorithm == dns.tsig.HMAC_SHA256
    assert config.ttl == 120
    assert config.dns_timeout == 10.0
    assert config.zone is None
    assert config.tsig_secret == bytes(range(32))
    assert config.propagation_timeout is None
    assert provider.propagation_timeout == Rfc2136Provider.info.default_propagation_timeout == 60


def test_numbers_and_zone() -> None:
    provider = Rfc2136Provider.from_env(
        env(RFC2136_TTL="60", RFC2136_PROPAGATION_TIMEOUT="90", RFC2136_DNS_TIMEOUT="2.5", RFC2136_ZONE="Example.COM")
    )
    assert provider.propagation_timeout == 90.0
    assert provider.config.ttl == 60
    assert provider.config.dns_timeout == 2.5
    assert provider.config.zone == "example.com."


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RFC2136_TTL", "1.5"),
        ("RFC2136_TTL", "0"),
        ("RFC2136_PROPAGATION_TIMEOUT", "soon"),
        ("RFC2136_DNS_TIMEOUT", "-1"),
    ],
)
def test_bad_numbers(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Rfc2136Config.from_env(env(**{name: value}))


def test_every_missing_variable_is_named_at_once() -> None:
    with pytest.raises(ProviderConfigError) as info:
        Rfc2136Config.from_env({})
    assert info.value.missing == ["RFC2136_NAMESERVER"]

    with pytest.raises(ProviderConfigError) as info:
        Rfc2136Config.from_env({"RFC2136_TSIG_KEY": "certsmith."})
    assert info.value.missing == ["RFC2136_NAMESERVER", "RFC2136_TSIG_SECRET"]
    assert "both the key name and the secret" in str(info.value)

    with pytest.raises(ProviderConfigError) as info:
        Rfc2136Config.from_env(env(RFC2136_TSIG_KEY="<unset>"))
    assert info.value.missing == ["RFC2136_TSIG_KEY"]
    assert SECRET not in str(info.value)


def test_tsig_is_optional_as_a_pair() -> None:
    config = Rfc2136Config.from_env({"RFC2136_NAMESERVER": "127.0.0.1:5353"})
    assert config.tsig_key is None and config.tsig_secret is None


def test_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "tsig.secret"
    secret_file.write_text(SECRET + "\n")
    config = Rfc2136Config.from_env(env(RFC2136_TSIG_SECRET="<unset>", RFC2136_TSIG_SECRET_FILE=str(secret_file)))
    assert config.tsig_secret == bytes(range(32))


def test_unreadable_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match="RFC2136_TSIG_SECRET_FILE"):
        Rfc2136Config.from_env(env(RFC2136_TSIG_SECRET="<unset>", RFC2136_TSIG_SECRET_FILE=str(missing)))


def test_secret_that_is_not_base64_is_rejected_without_echoing_it() -> None:
    bad = "s3cr3t-not-base64!"
    with pytest.raises(ConfigError) as info:
        Rfc2136Config.from_env(env(RFC2136_TSIG_SECRET=bad))
    assert "not valid base64" in str(info.value)
    assert bad not in str(info.value)


def test_secret_is_not_in_repr() -> None:
    provider = Rfc2136Provider.from_env(env())
    for text in (repr(provider), repr(provider.config), str(provider.config)):
        assert SECRET not in text
        assert repr(bytes(range(32))) not in text
    assert "certsmith." in repr(provider)


def test_info_documents_every_variable() -> None:
    info = Rfc2136Provider.info
    names = {var.name for var in info.env}
    assert {
        "RFC2136_NAMESERVER",
        "RFC2136_TSIG_KEY",
        "RFC2136_TSIG_SECRET",
        "RFC2136_TSIG_ALGORITHM",
        "RFC2136_TTL",
        "RFC2136_PROPAGATION_TIMEOUT",
        "RFC2136_ZONE",
    } <= names
    assert [var.name for var in info.env if var.required] == ["RFC2136_NAMESERVER"]
    assert [var.name for var in info.env if var.secret] == ["RFC2136_TSIG_SECRET"]
    assert info.name == "rfc2136" and info.example and info.links
    assert all(var.description for var in info.env)


def test_registered_as_rfc2136() -> None:
    assert provider_class("rfc2136") is Rfc2136Provider
    assert isinstance(Rfc2136Provider.from_env(env()), DnsProvider)
