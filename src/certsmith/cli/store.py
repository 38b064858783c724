"""``certsmith store migrate`` and ``certsmith store check``: whole-store operations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from certsmith.cli import Context
    from certsmith.storage.base import Store


def _open(ctx: Context, where: str) -> Store:
    """A directory or a redis:// / rediss:// URL, with the global --store-* options for Redis."""
    from certsmith.storage import open_store, store_scheme

    if store_scheme(where) not in ("redis", "rediss"):
        return open_store(where)
    return open_store(where, env=ctx.environment(), ca_bundle=ctx.store_ca_bundle,
                      insecure_keys=ctx.store_insecure_keys)


@click.group()
def store() -> None:
    """Copy a store into another one, or check a store."""


@store.command("migrate")
@click.option("--from", "source", required=True, metavar="DIR|URL", help="The store to copy: a state directory or redis://...")
@click.option("--to", "destination", required=True, metavar="DIR|URL", help="Where to copy it (must be empty).")
@click.option(
    "--merge", is_flag=True,
    help="Copy into a non-empty store: add only the accounts, certificates and journal notes it lacks; "
    "never change what it has.",
)
@click.pass_obj
def migrate(ctx: Context, source: str, destination: str, merge: bool) -> None:
    """Copy every account, certificate version, state and journal note, then verify the copy.

    \b
    Either side is a state directory or a redis:// / rediss:// URL (private keys in
    Redis are sealed with CERTSMITH_STORE_KEY). Versions keep their numbers and times.
    Stop the certsmith timers on every host first.
    """
    from certsmith.cli import _call, _exit, _fail
    from certsmith.storage import same_store
    from certsmith.storetools import DestinationNotEmpty, migrate_store

    if same_store(source, destination):
        _fail(ctx, "--from and --to name the same store")

    def run() -> dict[str, Any]:
        try:
            report = migrate_store(_open(ctx, source), _open(ctx, destination), merge=merge)
        except DestinationNotEmpty as exc:
            _fail(ctx, str(exc), advice="migrate into an empty store, or add --merge to copy only what it lacks")
        return report.to_json()

    result = _call(ctx, run)

    def human() -> None:
        click.echo(f"copied {len(result['accounts'])} account(s), {len(result['certificates'])} certificate(s) "
                   f"({result['versions']} version(s)) and {result['journal']} journal note(s); verified")
        for kind in ("accounts", "certificates"):
            for item in result[f"skipped_{kind}"]:
                click.echo(f"kept the destination's own {kind[:-1]} {item}")

    ctx.emit({"ok": True, **result}, human)
    _exit(0)


@store.command("check")
@click.pass_obj
def check(ctx: Context) -> None:
    """Report damaged records, orphaned data and stale leases in the store (exit status 1 if any)."""
    from certsmith.cli import _call, _exit
    from certsmith.storetools import check_store

    problems = _call(ctx, lambda: [p.to_json() for p in check_store(ctx.store())])

    def human() -> None:
        for problem in problems:
            click.echo(f"{problem['kind']}: {problem['where']}: {problem['detail']}")
        click.echo(f"{len(problems)} problem(s)" if problems else "no problems found")

    ctx.emit({"ok": not problems, "problems": problems}, human)
    _exit(1 if problems else 0)
