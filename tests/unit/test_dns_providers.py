"""Every built-in DNS provider follows the recipe of :mod:`certsmith.dns.base` (no network).

One parametrised configuration round trip: good variables build the provider, each
missing required variable is named in the error, each secret works through
``<NAME>_FILE`` and is registered for redaction, and the propagation timeout comes
from the metadata unless ``<PROVIDER>_PROPAGATION_TIMEOUT`` overrides it. A new
provider only needs an entry in ``GOOD_ENV``. The README's generated provider section
is checked here too.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certsmith._redact import MASK, redact
from certsmith.dns.base import (
    DnsProvider,
    EnvVar,
    builtin_providers,
    load_provider,
    parse_bool,
    parse_host_port,
    parse_int,
    parse_seconds,
    provider_class,
)
from certsmith.dns.docs import END, START, providers_markdown
from certsmith.errors import ConfigError, ProviderConfigError

ROOT = Path(__file__).resolve().parents[2]
TSIG_SECRET = "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5"


def _exec_env(tmp: Path) -> dict[str, str]:
    hook = tmp / "dns-hook"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    return {"EXEC_PATH": str(hook)}


#: For each built-in provider: a complete, valid environment (every secret set).
GOOD_ENV: dict[str, Callable[[Path], dict[str, str]]] = {
    "acme-dns": lambda tmp: {
        "ACME_DNS_API_BASE": "https://auth.acme-dns.test",
        "ACME_DNS_STORAGE_PATH": str(tmp / "acme-dns.json"),
        "ACMEDNS_USERNAME": "c36f50e8-4632-44f0-83fe-e070fef28a10",
        "ACMEDNS_PASSWORD": "round-trip-acme-dns-password-0123456789a",
        "ACMEDNS_SUBDOMAIN": "8e5700ea-a4bf-41c7-8a77-e990661dcc6a",
    },
    "alidns": lambda _: {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tRoundTrip",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "round-trip-Secret-1234",
        "ALIBABA_CLOUD_SECURITY_TOKEN": "round-trip-Sts-Token-5678",
    },
    "cloudflare": lambda _: {
        "CLOUDFLARE_DNS_API_TOKEN": "round-trip-cf-dns-token-0123",
        "CLOUDFLARE_ZONE_API_TOKEN": "round-trip-cf-zone-token-4567",
        "CLOUDFLARE_EMAIL": "round-trip@example.com",
        "CLOUDFLARE_API_KEY": "round-trip-cf-global-key-89ab",
    },
    "exec": _exec_env,
    "huaweicloud": lambda _: {
        "HUAWEICLOUD_ACCESS_KEY_ID": "HPUARoundTrip",
        "HUAWEICLOUD_SECRET_ACCESS_KEY": "round-trip-Sk-1234",
        "HUAWEICLOUD_REGION": "ap-southeast-1",
    },
    "manual": lambda _: {},
    "rfc2136": lambda _: {
        "RFC2136_NAMESERVER": "127.0.0.1:5353",
        "RFC2136_TSIG_KEY": "certsmith.",
        "RFC2136_TSIG_SECRET": TSIG_SECRET,
    },
    "route53": lambda _: {
        "AWS_ACCESS_KEY_ID": "AKIAROUNDTRIPCERTSMI",
        "AWS_SECRET_ACCESS_KEY": "round-trip-Aws-Secret-1234",
        "AWS_SESSION_TOKEN": "round-trip-Aws-Session-5678",
    },
    "tencentcloud": lambda _: {
        "TENCENTCLOUD_SECRET_ID": "AKIDRoundTrip",
        "TENCENTCLOUD_SECRET_KEY": "round-trip-Tencent-Key-1234",
        "TENCENTCLOUD_SESSION_TOKEN": "round-trip-Tencent-Token-5678",
    },
}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def at_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manual provider refuses to be built without a terminal to ask at; these tests have one."""
    monkeypatch.setattr(sys, "stdin", _Terminal(""))


def _close(provider: DnsProvider) -> None:
    asyncio.run(provider.aclose())


@pytest.fixture
def built(tmp_path: Path) -> Iterator[list[DnsProvider]]:
    """Providers a test builds; closed afterwards (alidns holds an HTTP client)."""
    providers: list[DnsProvider] = []
    yield providers
    for provider in providers:
        _close(provider)


def test_every_builtin_has_a_round_trip_case() -> None:
    assert sorted(GOOD_ENV) == builtin_providers()


@pytest.mark.parametrize("name", builtin_providers())
def test_metadata(name: str) -> None:
    cls = provider_class(name)
    info = cls.info
    assert info.name == name and info.title and info.description and info.example
    assert info.default_propagation_timeout > 0
    assert all(var.description for var in info.env)
    names = [n for var in info.env for n in (var.name, *var.aliases)]
    assert len(names) == len(set(names)), "a variable name or alias is listed twice"
    assert all(not (var.required and var.default is not None) for var in info.env)


@pytest.mark.parametrize("name", builtin_providers())
def test_good_variables_build_the_provider(name: str, tmp_path: Path, built: list[DnsProvider]) -> None:
    provider = load_provider(name, GOOD_ENV[name](tmp_path))
    built.append(provider)
    assert isinstance(provider, provider_class(name))
    assert isinstance(provider, DnsProvider)
    assert provider.propagation_timeout == provider.info.default_propagation_timeout


@pytest.mark.parametrize("name", builtin_providers())
def test_propagation_timeout_variable_overrides_the_default(
    name: str, tmp_path: Path, built: list[DnsProvider]
) -> None:
    variable = f"{name.upper().replace('-', '_')}_PROPAGATION_TIMEOUT"
    if variable not in {var.name for var in provider_class(name).info.env}:
        pytest.skip(f"{name} has no {variable}")
    provider = load_provider(name, {**GOOD_ENV[name](tmp_path), variable: "42.5"})
    built.append(provider)
    assert provider.propagation_timeout == 42.5
    with pytest.raises(ConfigError, match=variable):
        load_provider(name, {**GOOD_ENV[name](tmp_path), variable: "soon"})


def _required(name: str) -> list[EnvVar]:
    return [var for var in provider_class(name).info.env if var.required]


@pytest.mark.parametrize(
    ("name", "variable"),
    [(name, var.name) for name in builtin_providers() for var in _required(name)],
)
def test_each_missing_required_variable_is_named(name: str, variable: str, tmp_path: Path) -> None:
    env = GOOD_ENV[name](tmp_path)
    del env[variable]
    with pytest.raises(ProviderConfigError) as caught:
        load_provider(name, env)
    assert any(entry.split(" or ")[0] == variable for entry in caught.value.missing)
    assert variable in str(caught.value) and name in str(caught.value)


@pytest.mark.parametrize("name", builtin_providers())
def test_nothing_set_names_every_required_variable_at_once(name: str) -> None:
    required = _required(name)
    if not required:
        pytest.skip(f"{name} needs no variables")
    with pytest.raises(ProviderConfigError) as caught:
        load_provider(name, {})
    assert [entry.split(" or ")[0] for entry in caught.value.missing] == [var.name for var in required]


def _secrets(name: str) -> list[EnvVar]:
    return [var for var in provider_class(name).info.env if var.secret]


@pytest.mark.parametrize(
    ("name", "variable"),
    [(name, var.name) for name in builtin_providers() for var in _secrets(name)],
)
def test_secret_from_file_is_read_and_redacted(
    name: str, variable: str, tmp_path: Path, built: list[DnsProvider]
) -> None:
    env = GOOD_ENV[name](tmp_path)
    value = env.pop(variable)
    assert redact(value) == value  # not registered before
    secret_file = tmp_path / "secret"
    secret_file.write_text(value + "\n")
    provider = load_provider(name, {**env, f"{variable}_FILE": str(secret_file)})
    built.append(provider)
    assert redact(f"x {value} y") == f"x {MASK} y"
    assert value not in repr(provider) and value not in repr(getattr(provider, "config", None))
    with pytest.raises(ConfigError, match=f"{variable}_FILE"):
        load_provider(name, {**env, f"{variable}_FILE": str(tmp_path / "absent")})


# --- the shared parsers ---------------------------------------------------------------


def test_parse_seconds() -> None:
    assert parse_seconds("X", "90") == 90 and parse_seconds("X", " 2.5 ") == 2.5
    assert parse_seconds("X", "2m") == 120 and parse_seconds("X", "1H") == 3600 and parse_seconds("X", "5s") == 5
    for bad, complaint in (("soon", "number of seconds"), ("0", "positive"), ("-1", "positive"), ("", "number")):
        with pytest.raises(ConfigError, match=f"X must be .*{complaint}"):
            parse_seconds("X", bad)


def test_parse_int() -> None:
    assert parse_int("TTL", "60") == 60
    assert parse_int("TTL", "0", minimum=0) == 0
    with pytest.raises(ConfigError, match="TTL must be a whole number of seconds"):
        parse_int("TTL", "1.5")
    with pytest.raises(ConfigError, match="TTL must be positive"):
        parse_int("TTL", "0")
    with pytest.raises(ConfigError, match="between 1 and 86400"):
        parse_int("TTL", "90000", maximum=86400)


def test_parse_bool() -> None:
    assert [parse_bool("B", t) for t in ("1", "true", "Yes", "ON")] == [True] * 4
    assert [parse_bool("B", t) for t in ("0", "false", "No", "off", "")] == [False] * 5
    with pytest.raises(ConfigError, match="B must be true or false"):
        parse_bool("B", "maybe")


def test_parse_host_port_keeps_names_unless_an_ip_is_required() -> None:
    assert parse_host_port("ns1.example.com:5300", "NS") == ("ns1.example.com", 5300)
    assert parse_host_port("2001:DB8::1", "NS") == ("2001:db8::1", 53)
    assert parse_host_port("[::1]", "NS", default_port=8053) == ("::1", 8053)
    with pytest.raises(ConfigError, match=r"'ns1\.example\.com' is not an IP address"):
        parse_host_port("ns1.example.com", "NS", require_ip=True)


# --- docs made from the metadata ------------------------------------------------------


def test_readme_provider_section_matches_the_metadata() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(START) + len(START), readme.index(END)
    wanted = providers_markdown(provider_class(name).info for name in builtin_providers())
    assert readme[start:end].strip() == wanted.strip(), (
        "README.md's DNS provider section is out of date: run python scripts/dns_providers_readme.py"
    )


def test_readme_script_check_mode(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "dns_providers_readme.py"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\nstale\n{END}\n\nafter\n")
    run = [sys.executable, str(script), "--readme", str(readme)]
    assert subprocess.run([*run, "--check"], capture_output=True).returncode == 1
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert subprocess.run([*run, "--check"], capture_output=True).returncode == 0
    text = readme.read_text()
    assert "stale" not in text and "| `rfc2136`" not in text and "[`rfc2136`]" in text and text.endswith("after\n")


def test_dns_list_markdown_is_fast_and_light() -> None:
    """``dns list`` (here ``--markdown``) needs neither httpx nor the ACME client."""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "certsmith", "dns", "list", "--markdown"],
        capture_output=True, text=True, env=env, check=True,
    )
    wanted = providers_markdown(provider_class(name).info for name in builtin_providers())
    assert wanted in run.stdout  # plug-ins installed here may add more providers
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m == "httpx" or m.startswith(("httpx.", "certsmith.acme"))}
