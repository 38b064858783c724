"""Every built-in DNS provider, built through the registry from its variables, passes
:func:`certsmith.testing.conformance.check_provider` against a backend that runs here.

rfc2136 updates a real BIND 9 (``tests/support/bind.py``), alidns the Alibaba Cloud DNS
emulator (``tests/support/alidns_emulator.py``), cloudflare the Cloudflare API v4 emulator
(``tests/support/cloudflare_emulator.py``), acme-dns its emulator (records at the CNAME
targets; it cannot delete), route53 moto's Route 53 server behind
``tests/support/route53_front.py``, tencentcloud the DNSPod emulator
(``tests/support/tencentcloud_emulator.py``), huaweicloud the Huawei Cloud DNS emulator
(``tests/support/huaweicloud_emulator.py``), exec a hook script that keeps its records in a
file, and manual is driven through a fake terminal whose "person" creates each record the
moment it is asked to. A new provider needs an entry in ``BACKENDS``.
Deeper, provider-specific checks stay in test_rfc2136.py, test_alidns_*.py and test_dns01.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certsmith.dns.base import builtin_providers, load_provider
from certsmith.testing.conformance import check_provider
from tests.support.acme_dns_emulator import AcmeDnsEmulator
from tests.support.alidns_emulator import AlidnsAccount, AlidnsEmulator
from tests.support.bind import BindServer
from tests.support.cloudflare_emulator import CloudflareAccount, CloudflareEmulator, CloudflareToken
from tests.support.huaweicloud_emulator import HuaweiAccount, HuaweiCloudEmulator
from tests.support.route53_front import AwsUser, Route53Front
from tests.support.tencentcloud_emulator import TencentAccount, TencentCloudEmulator

ZONE = "conformance.test."


@dataclass
class Backend:
    """Where a provider's records go: its variables and how to read the records back."""

    env: dict[str, str]
    read_txt: Callable[[str], Awaitable[set[str]]]
    #: The two record names to use instead of ``_acme-challenge.<zone>`` and ``_acme-challenge.a.b.<zone>``.
    names: tuple[str, str] | None = None
    #: False for a backend that cannot delete records (acme-dns).
    deletes: bool = True


@contextlib.contextmanager
def rfc2136_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    with BindServer(zones=(ZONE,)) as bind:
        yield Backend(bind.env(), bind.read_txt)


@contextlib.contextmanager
def alidns_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    key_id, secret = "LTAI5tConformance", "conformance-Secret-0123"
    with AlidnsEmulator([AlidnsAccount(key_id, secret, domains=[ZONE.rstrip(".")])]) as emulator:

        async def read_txt(fqdn: str) -> set[str]:
            return set(emulator.txt_values(fqdn))

        env = {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
            "ALIDNS_ENDPOINT": emulator.endpoint,
        }
        yield Backend(env, read_txt)


@contextlib.contextmanager
def acme_dns_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """Both names already delegated: the accounts are registered and stored, and the provider
    is called with their fulldomains, as the dns-01 solver does after following the CNAMEs."""
    with AcmeDnsEmulator() as emulator:
        apex, deep = emulator.register(), emulator.register()
        storage = tmp_path / "acme-dns.json"
        storage.write_text(json.dumps({ZONE.rstrip("."): apex, "a.b." + ZONE.rstrip("."): deep}))

        async def read_txt(fqdn: str) -> set[str]:
            return set(emulator.txt_values(fqdn))

        env = {"ACME_DNS_API_BASE": emulator.api_base, "ACME_DNS_STORAGE_PATH": str(storage)}
        names = (apex["fulldomain"] + ".", deep["fulldomain"] + ".")
        yield Backend(env, read_txt, names=names, deletes=False)


@contextlib.contextmanager
def cloudflare_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    token = "conformance-cf-token-0123456789abcdef"
    account = CloudflareAccount(zones=[ZONE.rstrip(".")], tokens=[CloudflareToken(token)])
    with CloudflareEmulator([account]) as emulator:

        async def read_txt(fqdn: str) -> set[str]:
            return set(emulator.txt_values(fqdn))

        yield Backend({"CLOUDFLARE_DNS_API_TOKEN": token, "CLOUDFLARE_BASE_URL": emulator.base_url}, read_txt)


HOOK = """#!{python}
import fcntl, json, sys
action, fqdn, value = sys.argv[1:]
with open({state!r}, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    records = set(map(tuple, json.loads(f.read() or "[]")))
    (records.add if action == "present" else records.discard)((fqdn, value))
    f.seek(0)
    f.truncate()
    f.write(json.dumps(sorted(records)))
"""


@contextlib.contextmanager
def route53_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    user = AwsUser("AKIACONFORMANCECERTS", "conformance-Secret-0123")
    with Route53Front([user]) as aws:
        aws.create_zone(ZONE)

        async def read_txt(fqdn: str) -> set[str]:
            return set(aws.txt_values(fqdn))

        yield Backend(aws.env(user), read_txt)


@contextlib.contextmanager
def tencentcloud_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    secret_id, secret_key = "AKIDConformance", "conformance-Key-0123"
    with TencentCloudEmulator([TencentAccount(secret_id, secret_key, domains=(ZONE.rstrip("."),))]) as emulator:

        async def read_txt(fqdn: str) -> set[str]:
            return set(emulator.txt_values(fqdn))

        env = {
            "TENCENTCLOUD_SECRET_ID": secret_id,
            "TENCENTCLOUD_SECRET_KEY": secret_key,
            "TENCENTCLOUD_ENDPOINT": emulator.endpoint,
        }
        yield Backend(env, read_txt)


HOOK = """#!{python}
import fcntl, json, sys
action, fqdn, value = sys.argv[1:]
with open({state!r}, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    records = set(map(tuple, json.loads(f.read() or "[]")))
    (records.add if action == "present" else records.discard)((fqdn, value))
    f.seek(0)
    f.truncate()
    f.write(json.dumps(sorted(records)))
"""


@contextlib.contextmanager
def huaweicloud_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    ak, sk = "HPUAConformance", "conformance-Sk-0123"
    with HuaweiCloudEmulator([HuaweiAccount(ak, sk, zones=[ZONE])]) as emulator:

        async def read_txt(fqdn: str) -> set[str]:
            return set(emulator.txt_values(fqdn))

        env = {
            "HUAWEICLOUD_ACCESS_KEY_ID": ak,
            "HUAWEICLOUD_SECRET_ACCESS_KEY": sk,
            "HUAWEICLOUD_REGION": "ap-southeast-1",
            "HUAWEICLOUD_ENDPOINT": emulator.endpoint,
        }
        yield Backend(env, read_txt)


@contextlib.contextmanager
def exec_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    state = tmp_path / "records.json"
    hook = tmp_path / "dns-hook"
    hook.write_text(HOOK.format(python=sys.executable, state=str(state)))
    hook.chmod(0o755)

    async def read_txt(fqdn: str) -> set[str]:
        records = json.loads(state.read_text() or "[]") if state.exists() else []
        return {value for name, value in records if name == fqdn}

    yield Backend({"EXEC_PATH": str(hook)}, read_txt)


class _Terminal(io.StringIO):
    """A person at a terminal who presses Enter at every prompt."""

    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def manual_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stdin", _Terminal("\n" * 100))
    monkeypatch.setattr(sys, "stderr", screen)
    created = re.compile(r"name:  (\S+)\n  type:  TXT\n  value: (\S+)\n")
    deletable = re.compile(r"delete the DNS record: (\S+) TXT (\S+)\n")

    async def read_txt(fqdn: str) -> set[str]:
        # The person creates what each prompt shows and deletes what cleanup releases, in order.
        records: set[tuple[str, str]] = set()
        for match in sorted(
            [*created.finditer(screen.getvalue()), *deletable.finditer(screen.getvalue())], key=lambda m: m.start()
        ):
            (records.add if match.re is created else records.discard)((match[1], match[2]))
        return {value for name, value in records if name == fqdn}

    yield Backend({}, read_txt)


BACKENDS: dict[str, Callable[[Path, pytest.MonkeyPatch], contextlib.AbstractContextManager[Backend]]] = {
    "acme-dns": acme_dns_backend,
    "alidns": alidns_backend,
    "cloudflare": cloudflare_backend,
    "exec": exec_backend,
    "huaweicloud": huaweicloud_backend,
    "manual": manual_backend,
    "rfc2136": rfc2136_backend,
    "route53": route53_backend,
    "tencentcloud": tencentcloud_backend,
}


def test_every_builtin_has_a_backend() -> None:
    assert sorted(BACKENDS) == builtin_providers()


@pytest.mark.parametrize("name", builtin_providers())
def test_conformance(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with BACKENDS[name](tmp_path, monkeypatch) as backend:
        provider = load_provider(name, backend.env)

        async def run() -> None:
            try:
                await check_provider(provider, ZONE, backend.read_txt, names=backend.names, deletes=backend.deletes)
            finally:
                await provider.aclose()

        asyncio.run(run())
