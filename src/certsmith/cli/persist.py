"""``certsmith persist``: the standing dns-persist-01 records (print, create once, check).

With them in place, ``issue --challenge dns-persist-01`` and its renewals need no DNS
provider and no DNS credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from certsmith.cli import Context
    from certsmith.persist import Plan

_DOMAINS_HELP = "Name the record is for (repeatable); *.NAME adds policy=wildcard."
_UNTIL_HELP = "Let the record expire then (persistUntil): YYYY-MM-DD, an ISO 8601 time or a Unix time."
_RESOLVER_HELP = "Read the records at these servers instead of each zone's authoritative servers."


def parse_until(text: str | None, now_ts: float) -> int | None:
    """``--until`` as a Unix time in the future; ConfigError says what is wrong."""
    if text is None:
        return None
    from datetime import UTC, datetime

    from certsmith.errors import ConfigError

    value = text.strip()
    if value.isdigit():
        stamp = int(value)
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                f"--until {text!r} is not a date: give YYYY-MM-DD, an ISO 8601 time or a Unix time"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        stamp = int(when.timestamp())
    if stamp <= now_ts:
        raise ConfigError(f"--until {text!r} is in the past: the CA would refuse the record at once")
    return stamp


@click.group()
def persist() -> None:
    """Standing dns-persist-01 records: issue and renew with no DNS credentials.

    \b
    Once per name (and again only for a new account or another CA):
      certsmith persist record -d example.com -d '*.example.com'    # print it, publish it by hand
      certsmith persist create -d example.com -d '*.example.com' --dns alidns
      certsmith persist check -d example.com -d '*.example.com'
    Then, with no DNS variables at all:
      certsmith issue -d example.com -d '*.example.com' --challenge dns-persist-01
    """


def _domains(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-d", "--domain", "domains", multiple=True, required=True, metavar="NAME", help=_DOMAINS_HELP)(
        command
    )


async def _plan(ctx: Context, names: tuple[str, ...], until: str | None) -> tuple[Plan, Any]:
    """The plan with the manager it was made with (still open; the caller closes it)."""
    import time

    from certsmith.persist import plan

    stamp = parse_until(until, time.time())
    manager = ctx.manager()
    try:
        the_plan = await plan(
            manager.accounts, manager.directory_url, manager.ca_bundle, names, until=stamp, on_event=ctx.progress
        )
    except BaseException:
        await manager.aclose()
        raise
    return the_plan, manager


@persist.command("record")
@_domains
@click.option("--until", metavar="DATE", help=_UNTIL_HELP)
@click.pass_obj
def persist_record(ctx: Context, domains: tuple[str, ...], until: str | None) -> None:
    """Print the TXT record(s) for this account and CA (--json: a list of name, type, value)."""
    from certsmith.cli import _run

    async def run() -> list[dict[str, str]]:
        the_plan, manager = await _plan(ctx, domains, until)
        await manager.aclose()
        return [record.to_json() for record in the_plan.records]

    records = _run(ctx, run)

    def human() -> None:
        for record in records:
            click.echo(f'{record["name"]} TXT "{record["value"]}"')

    ctx.emit(records, human)


@persist.command("create")
@_domains
@click.option("--dns", "dns_provider", required=True, metavar="PROVIDER", help="DNS provider (certsmith dns list).")
@click.option("--until", metavar="DATE", help=_UNTIL_HELP)
@click.option("--dns-resolver", multiple=True, metavar="HOST:PORT", help=_RESOLVER_HELP)
@click.option("--propagation-timeout", type=float, metavar="SECONDS", help="How long to wait for the records.")
@click.pass_obj
def persist_create(
    ctx: Context,
    domains: tuple[str, ...],
    dns_provider: str,
    until: str | None,
    dns_resolver: tuple[str, ...],
    propagation_timeout: float | None,
) -> None:
    """Publish the record(s) once through a DNS provider; an identical record is adopted, others are left alone."""
    from certsmith.cli import _run

    async def run() -> list[dict[str, Any]]:
        from certsmith.dns.base import load_provider
        from certsmith.dns.zone import Resolver
        from certsmith.persist import create_records

        resolver = Resolver.from_cli(dns_resolver)
        provider = load_provider(dns_provider, ctx.environment())  # credentials are checked before the CA is asked
        try:
            the_plan, manager = await _plan(ctx, domains, until)
        except BaseException:
            await provider.aclose()
            raise
        try:
            timeout = propagation_timeout if propagation_timeout is not None else provider.propagation_timeout
            done = await create_records(the_plan, provider, resolver, timeout, on_event=ctx.progress)
        finally:
            await manager.aclose()
        return [item.to_json() for item in done]

    results = _run(ctx, run)

    def human() -> None:
        for item in results:
            click.echo(f'{item["action"]}: {item["name"]} TXT "{item["value"]}"')

    ctx.emit(results, human)


@persist.command("check")
@_domains
@click.option("--dns-resolver", multiple=True, metavar="HOST:PORT", help=_RESOLVER_HELP)
@click.pass_obj
def persist_check(ctx: Context, domains: tuple[str, ...], dns_resolver: tuple[str, ...]) -> None:
    """Check, read-only, that the CA would accept the record(s) now; exit 1 naming each problem."""
    from certsmith.cli import _exit, _run

    async def run() -> list[dict[str, Any]]:
        from datetime import UTC, datetime

        from certsmith.dns.zone import Resolver
        from certsmith.persist import check_records

        resolver = Resolver.from_cli(dns_resolver)
        the_plan, manager = await _plan(ctx, domains, None)
        try:
            checks = await check_records(the_plan, resolver, datetime.now(UTC))
        finally:
            await manager.aclose()
        return [check.to_json() for check in checks]

    checks = _run(ctx, run)
    failing = [c for c in checks if not c["ok"]]

    def human() -> None:
        for check in checks:
            if check["ok"]:
                click.echo(f"ok: {check['name']} (for {', '.join(check['names'])})")
            else:
                click.echo(f"{check['status']}: {check['name']}: {check['problem']}")
                click.echo(f'  expected: TXT "{check["value"]}"')

    ctx.emit({"ok": not failing, "records": checks}, human)
    if failing:
        _exit(1)
