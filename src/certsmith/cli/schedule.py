"""``certsmith schedule``: install, show and remove the timer (or cron line) that runs ``renew``.

Imports only click and :mod:`certsmith.schedule` (no asyncio, httpx or
cryptography), so it costs the CLI's start-up nothing noticeable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pathlib import Path

    from certsmith.cli import Context
    from certsmith.schedule import Outcome

T = TypeVar("T")

_UNIT_DIR_HELP = "Directory of the systemd units (default /etc/systemd/system as root, else ~/.config/systemd/user)."
_CRON_FILE_HELP = "An /etc/cron.d-style file (with the user field) instead of the user's crontab."


@click.group()
def schedule() -> None:
    """Run `certsmith renew` unattended: a systemd timer, or cron where there is no systemd.

    \b
    Examples:
      certsmith schedule install                 # timer twice a day, enabled when systemd runs
      certsmith schedule install --cron          # a line in your crontab
      certsmith schedule show
      certsmith schedule remove
    """


def _guarded(ctx: Context, action: Callable[[], T]) -> T:
    """Run ``action``, turning certsmith errors into the CLI's one-line error and exit status 1."""
    from certsmith.errors import CertsmithError

    try:
        return action()
    except CertsmithError as exc:
        from certsmith.cli import _fail

        _fail(ctx, str(exc))


def _to_path(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Path | None:
    """``path_type=Path`` without importing pathlib at start-up."""
    from pathlib import Path

    return Path(value) if value is not None else None


def _state_dir(ctx: Context) -> Path:
    from pathlib import Path

    from certsmith.schedule import default_state_dir

    return Path(ctx.state_dir) if ctx.state_dir else default_state_dir()


def _global_env_file() -> Path | None:
    """The main group's ``--env-file`` when it has one."""
    from pathlib import Path

    value = click.get_current_context().find_root().params.get("env_file")
    return Path(value) if value else None


def _print_outcome(outcome: dict[str, Any]) -> None:
    for action in outcome["actions"]:
        click.echo(action)
    for note in outcome["notes"]:
        click.echo(click.style("note: ", fg="yellow") + note, err=True)


@schedule.command("install")
@click.option("--unit-dir", type=click.Path(file_okay=False), callback=_to_path, help=_UNIT_DIR_HELP)
@click.option(
    "--on-calendar",
    metavar="SPEC",
    help="systemd calendar expression of the timer [default: '*-*-* 00,12:00:00', plus up to 1 h random delay].",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False), callback=_to_path,
    help="Env file (0600) the scheduled renew reads its secrets from; checked now.",
)
@click.option("--cron", is_flag=True, help="Install a crontab line instead of systemd units.")
@click.option("--cron-file", type=click.Path(dir_okay=False), callback=_to_path, help=_CRON_FILE_HELP)
@click.pass_obj
def schedule_install(
    ctx: Context,
    unit_dir: Path | None,
    on_calendar: str | None,
    env_file: Path | None,
    cron: bool,
    cron_file: Path | None,
) -> None:
    """Install the schedule that runs `certsmith renew -q` with this --state-dir.

    The systemd timer runs twice a day with a random delay of up to an hour and
    catches up runs missed while the machine was off; it is enabled when systemd
    is running and the units go to the system directory. The cron line runs twice a
    day at a random minute with `renew --jitter 3600`.
    """

    def run() -> dict[str, Any]:
        import random

        from certsmith import schedule as sched
        from certsmith.envfile import default_env_file, load_env_file
        from certsmith.errors import ConfigError

        use_cron = cron or cron_file is not None
        if use_cron and (unit_dir is not None or on_calendar is not None):
            raise ConfigError("--unit-dir and --on-calendar are for systemd timers; leave them out with --cron")
        chosen_env_file = env_file or _global_env_file() or default_env_file()
        variables = load_env_file(chosen_env_file) if chosen_env_file is not None else {}
        shared = bool(variables.get("CERTSMITH_STORE"))
        if ctx.store_url and not shared:
            raise ConfigError("the schedule reads the shared store from the env file: put CERTSMITH_STORE="
                              f"{'redis://...' if '@' in ctx.store_url else ctx.store_url} (and the store key) "
                              "in it and give it with --env-file")
        job = sched.RenewJob(_state_dir(ctx), chosen_env_file, shared_store=shared)
        rng = random.SystemRandom()
        if use_cron:
            outcome = sched.install_cron(job, rng, cron_file)
        else:
            outcome = sched.install_units(job, unit_dir, on_calendar or sched.DEFAULT_ON_CALENDAR)
        if chosen_env_file is None and (default := default_env_file()) is not None:
            outcome.notes.append(f"renew will read its variables from {default}")
        return {"ok": True, "kind": "cron" if use_cron else "systemd", **outcome.to_json()}

    result = _guarded(ctx, run)

    def human() -> None:
        _print_outcome(result)
        if result["kind"] == "cron":
            click.echo(f"cron line: {result['line']}")
        else:
            click.echo("runs: " + " ".join(result["command"]))
            click.echo(f"when: {result['on_calendar']}, plus a random delay of up to 1 h")

    ctx.emit(result, human)


def _selection(unit_dir: Path | None, cron: bool, cron_file: Path | None) -> tuple[bool, bool]:
    """Which kinds of schedule a show/remove covers: both unless narrowed by the options."""
    wants_cron = cron or cron_file is not None
    wants_units = unit_dir is not None
    if not wants_cron and not wants_units:
        return True, True
    return wants_units, wants_cron


def _merged(parts: list[Outcome]) -> dict[str, Any]:
    merged: dict[str, Any] = {"actions": [], "files": [], "notes": []}
    for part in parts:
        data = part.to_json()
        for key in ("actions", "files", "notes"):
            merged[key] += data.pop(key)
        merged.update(data)
    return merged


@schedule.command("show")
@click.option("--unit-dir", type=click.Path(file_okay=False), callback=_to_path, help=_UNIT_DIR_HELP)
@click.option("--cron", is_flag=True, help="Show only the cron schedule.")
@click.option("--cron-file", type=click.Path(dir_okay=False), callback=_to_path, help="Also look in this cron file.")
@click.pass_obj
def schedule_show(ctx: Context, unit_dir: Path | None, cron: bool, cron_file: Path | None) -> None:
    """Show the installed units (and the timer's next run under systemd) and certsmith's cron lines."""

    def run() -> dict[str, Any]:
        from certsmith import schedule as sched

        with_units, with_cron = _selection(unit_dir, cron, cron_file)
        parts = []
        if with_units:
            parts.append(sched.show_units(unit_dir))
        if with_cron:
            parts.append(sched.show_cron(cron_file))
        return {"ok": True, **_merged(parts)}

    result = _guarded(ctx, run)

    def human() -> None:
        for path, text in result.get("units", {}).items():
            click.echo(click.style(f"# {path}", bold=True))
            click.echo(text)
        if result.get("timers"):
            click.echo(result["timers"])
        for line in result.get("cron_lines", []):
            click.echo(f"cron: {line}")
        if not result.get("units") and not result.get("cron_lines"):
            click.echo("no certsmith schedule installed")
        for note in result["notes"]:
            click.echo(click.style("note: ", fg="yellow") + note, err=True)

    ctx.emit(result, human)


@schedule.command("remove")
@click.option("--unit-dir", type=click.Path(file_okay=False), callback=_to_path, help=_UNIT_DIR_HELP)
@click.option("--cron", is_flag=True, help="Remove only the cron schedule.")
@click.option("--cron-file", type=click.Path(dir_okay=False), callback=_to_path, help="Delete this cron file too.")
@click.pass_obj
def schedule_remove(ctx: Context, unit_dir: Path | None, cron: bool, cron_file: Path | None) -> None:
    """Disable and delete the timer's units and remove certsmith's cron line."""

    def run() -> dict[str, Any]:
        from certsmith import schedule as sched

        with_units, with_cron = _selection(unit_dir, cron, cron_file)
        parts = []
        if with_units:
            parts.append(sched.remove_units(unit_dir))
        if with_cron:
            parts.append(sched.remove_cron(cron_file))
        return {"ok": True, **_merged(parts)}

    result = _guarded(ctx, run)

    def human() -> None:
        _print_outcome(result)
        if not result["actions"]:
            click.echo("nothing to remove")

    ctx.emit(result, human)
