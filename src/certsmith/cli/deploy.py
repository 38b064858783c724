"""``certsmith deploy NAME`` (run a lineage's deploy targets again) and ``certsmith deploy list``.

Also the ``--deploy`` option's parsing for ``issue``. Imports only click at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from certsmith.cli import Context
    from certsmith.deploy.base import DeploySpec


def parse_specs(texts: tuple[str, ...]) -> tuple[DeploySpec, ...]:
    """The ``--deploy`` values, parsed (syntax only; the manager's preflight loads the targets)."""
    if not texts:
        return ()  # no deploy machinery for an issue without --deploy
    from certsmith.deploy.base import parse_deploy_spec

    return tuple(parse_deploy_spec(text) for text in texts)


class _DeployGroup(click.Group):
    """``deploy NAME`` runs ``deploy run NAME``; ``deploy list`` is the subcommand."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "run", self.commands["run"], args
        return super().resolve_command(ctx, args)


@click.group(cls=_DeployGroup, no_args_is_help=True)
def deploy() -> None:
    """Deliver certificates where they are served: files (PEM, DER, PKCS#12), a reload command.

    \b
    certsmith deploy NAME    run lineage NAME's targets again for its current certificate
    certsmith deploy list    every target with its options
    Targets are given to issue with --deploy TARGET[:KEY=VALUE,...] and run after every
    issuance and renewal.
    """


@deploy.command("run")
@click.argument("name")
@click.pass_obj
def deploy_run(ctx: Context, name: str) -> None:
    """Run lineage NAME's deploy targets for its current certificate (idempotent)."""
    from certsmith.cli import _exit, _lineage_names, _run

    lineage = _lineage_names((name,))[0]

    async def run() -> dict[str, Any]:
        from certsmith.deploy.runner import failures

        async with ctx.manager() as manager:
            meta, results = await manager.deploy(lineage)
        error = failures(results)
        return {
            "ok": error is None,
            "name": meta.name,
            "serial": meta.serial,
            "not_after": meta.not_after,
            "deploy": [result.to_json() for result in results],
            **({"deploy_error": error} if error else {}),
        }

    result = _run(ctx, run)

    def human() -> None:
        for target in result["deploy"]:
            click.echo(f"{result['name']}: {target['spec']}: {_summary(target)}")

    ctx.emit(result, human)
    if result.get("deploy_error"):
        click.echo(click.style("error: ", fg="red", bold=True) + result["deploy_error"], err=True)
        _exit(1)
    _exit(0)


def _summary(target: dict[str, Any]) -> str:
    if target.get("error"):
        return f"failed ({target['error']})"
    if target["changed"]:
        return "; ".join(target["changed"])
    if target.get("skipped"):
        return f"skipped ({target['skipped']})"
    return "unchanged"


@deploy.command("list")
@click.pass_obj
def deploy_list(ctx: Context) -> None:
    """Every deploy target with its options, environment variables and an example."""
    from certsmith.deploy.base import available_targets, target_class

    targets = [target_class(name).info.to_json() for name in available_targets()]

    def human() -> None:
        for info in targets:
            click.echo(click.style(info["name"], bold=True) + f"  {info['title']}: {info['description']}")
            for option in info["options"]:
                flag = "required" if option["required"] else f"default {option['default']}" if option["default"] \
                    else "optional"
                click.echo(f"    {option['name'] + '=':<12} {flag:<24} {option['description']}")
            for var in info["env"]:
                secret = f"; secret, or {var['name']}_FILE" if var["secret"] else ""
                click.echo(f"    ${var['name']:<34} {var['description']}{secret}")
            if info["required_one_of"]:
                click.echo(f"    at least one of: {', '.join(info['required_one_of'])}")
            if info["example"]:
                click.echo(f"  example:\n    {info['example']}")
            click.echo()

    ctx.emit({"ok": True, "targets": targets}, human)
