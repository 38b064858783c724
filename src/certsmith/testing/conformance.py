"""One conformance check that every DNS provider passes against its emulator or server.

``read_txt(fqdn)`` must return the TXT values the provider's backend now holds at
``fqdn`` (from the emulator's state or a query to the authoritative server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from certsmith.dns.base import DnsProvider

ReadTxt = Callable[[str], Awaitable[set[str]]]


async def check_provider(
    provider: DnsProvider,
    zone: str,
    read_txt: ReadTxt,
    *,
    names: tuple[str, str] | None = None,
    deletes: bool = True,
) -> None:
    """Exercise ``provider`` in ``zone`` (absolute, e.g. ``example.com.``).

    Checks: two values at one name (apex + wildcard), a multi-level name, concurrent
    presents, an idempotent second present, cleanup that leaves a foreign value at
    the same name alone, and cleanup of a record already gone.

    ``names`` replaces the two record names (``_acme-challenge.<zone>`` and
    ``_acme-challenge.a.b.<zone>``) for providers that write elsewhere, such as
    acme-dns, which is only ever called with the CNAME targets. ``deletes=False`` is
    for a backend that cannot delete (acme-dns): cleanup must then still succeed and
    leave the other value in place, but the cleaned-up value may stay visible.
    """
    zone = zone.rstrip(".") + "."
    apex, deep = names if names is not None else (f"_acme-challenge.{zone}", f"_acme-challenge.a.b.{zone}")
    value_a, value_b, value_c = "a" * 43, "b" * 43, "c" * 43

    await asyncio.gather(
        provider.present(apex, value_a), provider.present(apex, value_b), provider.present(deep, value_c)
    )
    assert await read_txt(apex) >= {value_a, value_b}, "both values at one name must be present"
    assert value_c in await read_txt(deep), "multi-level names must work"

    await provider.present(apex, value_a)
    assert await read_txt(apex) >= {value_a, value_b}, "a repeated present must be harmless"

    await provider.cleanup(apex, value_a)
    remaining = await read_txt(apex)
    assert value_a not in remaining or not deletes, "cleanup must delete the record it created"
    assert value_b in remaining, "cleanup must not touch other values at the same name"

    await asyncio.gather(provider.cleanup(apex, value_b), provider.cleanup(deep, value_c))
    if deletes:
        assert not (await read_txt(apex)) & {value_a, value_b}
        assert value_c not in await read_txt(deep)

    await provider.cleanup(apex, value_a)  # already gone: must not raise
