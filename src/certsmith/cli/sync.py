"""``certsmith sync [NAME...]``: bring the current certificates from the (shared) store to this host."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from certsmith.cli import Context


@click.command()
@click.argument("names", nargs=-1)
@click.option(
    "--deploy", "deploy_texts", multiple=True, metavar="TARGET[:KEY=VALUE,...]",
    help="This host's deploy target (repeatable); replaces the lineage's stored targets on this host.",
)
@click.option(
    "--local-state", type=click.Path(file_okay=False), metavar="DIR",
    help="Where this host notes what it delivered (delivered.json; default: the state directory).",
)
@click.pass_obj
def sync(ctx: Context, names: tuple[str, ...], deploy_texts: tuple[str, ...], local_state: str | None) -> None:
    """Deliver the current certificates from the store to this host's deploy targets.

    \b
    Runs each lineage's deploy targets (or --deploy) only when this host has not
    delivered its current version yet, so running it after every renew is cheap and
    a second run changes nothing. With a shared store (--store redis://...), one
    host orders and every host serves. Exit status 1 when a target failed.
    """
    from pathlib import Path

    from certsmith.cli import _exit, _lineage_names, _run
    from certsmith.cli.deploy import parse_specs

    specs = parse_specs(deploy_texts)
    where = Path(local_state) if local_state else ctx.state_path()

    async def run() -> list[dict[str, Any]]:
        async with ctx.manager() as manager:
            outcomes = await manager.sync(_lineage_names(names) if names else (), local_state=where, deploy=specs)
            return [outcome.to_json() for outcome in outcomes]

    outcomes = _run(ctx, run)
    failed = [o for o in outcomes if o.get("error")]

    def human() -> None:
        if not outcomes and ctx.verbosity >= 0:
            click.echo("no certificates to sync")
        for outcome in outcomes:
            if ctx.verbosity < 0 and not outcome["delivered"] and not outcome.get("error"):
                continue
            state = "delivered" if outcome["delivered"] else "failed" if outcome.get("error") else "unchanged"
            click.echo(f"{outcome['name']}: {state} ({outcome.get('error') or outcome['reason']})")

    ctx.emit({"ok": not failed, "local_state": str(where), "results": outcomes}, human)
    _exit(1 if failed else 0)
