"""A schedule for ``certsmith renew``: a systemd timer, or a cron line where there is no systemd.

The renderers are pure functions of a :class:`RenewJob` (which command, which state
directory, which env file) so they are tested without a system; :func:`install_units`,
:func:`remove_units`, :func:`install_cron` and their kin write, enable and remove
what the renderers produce and return an :class:`Outcome` saying what they did.

Spreading the load on the CA is the schedule's job: the timer waits up to
``RandomizedDelaySec`` and the cron line starts at a random minute and runs
``renew --jitter``, while a plain ``renew`` starts at once. The units carry no
secret: those stay in the env file, which the unit names by path only.

This module is light on purpose (no asyncio, httpx or cryptography) because the
``certsmith schedule`` commands import it at start-up.
"""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import random
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certsmith._atomic import replace_file
from certsmith.errors import CertsmithError, ConfigError

__all__ = [
    "CRON_JITTER_SEC",
    "CRON_MARKER",
    "DEFAULT_ON_CALENDAR",
    "RANDOMIZED_DELAY_SEC",
    "SERVICE_NAME",
    "SYSTEM_UNIT_DIR",
    "TIMER_NAME",
    "Outcome",
    "RenewJob",
    "ScheduleError",
    "certsmith_command",
    "cron_line",
    "default_state_dir",
    "default_unit_dir",
    "install_cron",
    "install_units",
    "jitter_delay",
    "remove_cron",
    "remove_units",
    "render_cron_file",
    "render_service",
    "render_timer",
    "show_cron",
    "show_units",
    "systemd_running",
    "validate_on_calendar",
]

SERVICE_NAME = "certsmith-renew.service"
TIMER_NAME = "certsmith-renew.timer"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_ON_CALENDAR = "*-*-* 00,12:00:00"
RANDOMIZED_DELAY_SEC = 3600
CRON_JITTER_SEC = 3600
CRON_MARKER = "# certsmith-renew"
_HEADER = "# Written by `certsmith schedule install`; `certsmith schedule remove` deletes it.\n"
_SYSTEMD_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


class ScheduleError(CertsmithError):
    """A schedule could not be installed, shown or removed (systemctl or crontab failed)."""


@dataclass(frozen=True)
class RenewJob:
    """What the schedule runs: ``certsmith --state-dir DIR [--env-file FILE] -q renew``.

    ``executable`` is the argv prefix that starts certsmith (see :func:`certsmith_command`).
    Paths are made absolute because neither systemd nor cron starts in the caller's directory.
    """

    state_dir: Path
    env_file: Path | None = None
    executable: tuple[str, ...] = field(default_factory=lambda: certsmith_command())
    #: A shared store (redis://...): every host renews what is due (the store's leases make one
    #: host order each certificate) and then runs ``sync`` to serve the current certificates.
    #: The URL itself comes from CERTSMITH_STORE in the env file (it may hold a password).
    shared_store: bool = False

    def argv(self, jitter_seconds: int | None = None) -> list[str]:
        command = [*self._prefix(), "-q", "renew"]
        if jitter_seconds is not None:
            command += ["--jitter", str(jitter_seconds)]
        return command

    def sync_argv(self) -> list[str] | None:
        """``certsmith ... -q sync`` after renew when the store is shared, else ``None``."""
        return [*self._prefix(), "-q", "sync"] if self.shared_store else None

    def _prefix(self) -> list[str]:
        command = [*self.executable, "--state-dir", os.path.abspath(self.state_dir)]
        if self.env_file is not None:
            command += ["--env-file", os.path.abspath(self.env_file)]
        return command


@dataclass
class Outcome:
    """What an install, show or remove did: actions taken, files touched, advice for the user."""

    actions: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"actions": self.actions, "files": self.files, "notes": self.notes, **self.details}

    def delete(self, path: Path) -> None:
        """Delete ``path`` (a :class:`ScheduleError` if it cannot be) and record that it did."""
        try:
            path.unlink()
        except OSError as exc:
            raise ScheduleError(f"cannot delete {path}: {exc.strerror}") from None
        self.actions.append(f"deleted {path}")
        self.files.append(str(path))


def certsmith_command() -> tuple[str, ...]:
    """The absolute argv prefix that runs this certsmith again.

    The ``certsmith`` script that is running when there is one, else this Python
    with ``-m certsmith.cli``, so the schedule uses the installation that set it up.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "certsmith":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and os.access(found, os.X_OK):
            return (os.path.abspath(found),)
    return (sys.executable or shutil.which("python3") or "/usr/bin/python3", "-m", "certsmith.cli")


def default_state_dir() -> Path:
    """The state directory certsmith uses when none is given.

    The same rule as ``FileStore.default_root`` (a test keeps them equal), here so
    that the schedule commands do not import the store and with it asyncio.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/certsmith")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "certsmith"


def default_unit_dir() -> Path:
    """``/etc/systemd/system`` for root, else the user's ``systemd/user`` configuration directory."""
    if os.geteuid() == 0:
        return SYSTEM_UNIT_DIR
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    return base / "systemd" / "user"


def systemd_running() -> bool:
    """True when systemd is the running init system (its documented test) and systemctl exists."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def jitter_delay(max_seconds: float, rng: random.Random) -> float:
    """A delay drawn uniformly from 0 to ``max_seconds`` for ``renew --jitter``.

    Spreads the renewals of many machines on one schedule over time. Raises
    :class:`ConfigError` for a negative or non-finite maximum.
    """
    if not math.isfinite(max_seconds) or max_seconds < 0:
        raise ConfigError(f"--jitter must be a number of seconds of 0 or more, not {max_seconds}")
    return rng.uniform(0.0, max_seconds)


# -- systemd -------------------------------------------------------------------------


def _systemd_word(arg: str, *, program: bool = False) -> str:
    """``arg`` as one word of a systemd command line.

    ``%`` is doubled everywhere (specifiers); ``$`` is doubled in arguments only,
    since systemd substitutes variables in arguments but not in the program's
    path, where it refuses quotes and backslashes outright.
    """
    if any(ord(char) < 0x20 or char == "\x7f" for char in arg):
        raise ConfigError(f"systemd cannot run a command containing the path {arg!r}: it has a control character")
    if _SYSTEMD_SAFE.fullmatch(arg):
        return arg
    if program and ('"' in arg or "\\" in arg):
        raise ConfigError(
            f"systemd refuses a program path containing a quote or a backslash ({arg}); "
            "install certsmith under another path"
        )
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if not program:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def validate_on_calendar(spec: str) -> str:
    """``spec`` if systemd accepts it as ``OnCalendar=``; else :class:`ConfigError`.

    A newline would let the value add directives to the unit, so control characters
    are always refused; the calendar syntax itself is checked with
    ``systemd-analyze calendar`` where that tool exists.
    """
    spec = spec.strip()
    if not spec or any(ord(char) < 0x20 or char == "\x7f" for char in spec):
        raise ConfigError("--on-calendar needs one systemd calendar expression, e.g. '*-*-* 00,12:00:00' or daily")
    analyze = shutil.which("systemd-analyze")
    if analyze:
        try:
            check = subprocess.run(
                [analyze, "calendar", spec], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired):
            return spec
        if check.returncode != 0:
            reason = check.stderr.strip().splitlines()[-1] if check.stderr.strip() else "not a calendar expression"
            raise ConfigError(
                f"--on-calendar {spec!r} is not a systemd calendar expression ({reason}); "
                "see: man systemd.time, e.g. '*-*-* 00,12:00:00' or daily"
            )
    return spec


def render_service(job: RenewJob) -> str:
    """The ``certsmith-renew.service`` unit: one ``renew`` run, hardened where it cannot hurt.

    The hardening leaves the file system writable (the state directory, deploy
    targets and hooks write where the user chose) and keeps the network.
    """
    program, *args = job.argv()
    exec_start = " ".join([_systemd_word(program, program=True), *(_systemd_word(arg) for arg in args)])
    # sync runs after renew whether or not renew succeeded (one lineage failing must not stop this
    # host from serving the others' new certificates); ExecStopPost keeps renew's failure visible.
    sync = job.sync_argv()
    exec_sync = ""
    if sync is not None:
        sync_program, *sync_args = sync
        words = [_systemd_word(sync_program, program=True), *(_systemd_word(arg) for arg in sync_args)]
        exec_sync = f"ExecStopPost={' '.join(words)}\n"
    return (
        _HEADER
        + "[Unit]\n"
        "Description=Renew certificates with certsmith\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={exec_start}\n"
        + exec_sync
        + "PrivateTmp=yes\n"
        "NoNewPrivileges=yes\n"
        "RestrictSUIDSGID=yes\n"
        "ProtectKernelTunables=yes\n"
        "ProtectKernelModules=yes\n"
        "ProtectControlGroups=yes\n"
        "LockPersonality=yes\n"
    )


def render_timer(on_calendar: str = DEFAULT_ON_CALENDAR, randomized_delay_sec: int = RANDOMIZED_DELAY_SEC) -> str:
    """The ``certsmith-renew.timer`` unit: ``on_calendar`` plus a random delay, catching up missed runs."""
    if any(ord(char) < 0x20 for char in on_calendar):
        raise ConfigError("--on-calendar must be one line")
    return (
        _HEADER
        + "[Unit]\n"
        "Description=Run certsmith renew on a schedule\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={on_calendar}\n"
        f"RandomizedDelaySec={randomized_delay_sec}\n"
        "Persistent=true\n"
        f"Unit={SERVICE_NAME}\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def _is_system_unit_dir(unit_dir: Path) -> bool:
    return os.path.realpath(unit_dir) == os.path.realpath(SYSTEM_UNIT_DIR)


def _systemctl(*args: str) -> str:
    command = ["systemctl", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScheduleError(f"{' '.join(command)} failed: {exc}") from None
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}"
        raise ScheduleError(f"{' '.join(command)} failed: {detail}")
    return result.stdout


def install_units(job: RenewJob, unit_dir: Path | None = None, on_calendar: str = DEFAULT_ON_CALENDAR) -> Outcome:
    """Write the service and timer into ``unit_dir`` and enable the timer where that is safe.

    The timer is enabled (``daemon-reload``, ``enable --now``) only when systemd is
    running and ``unit_dir`` is the system's; otherwise the outcome's notes say what
    to run. Raises :class:`ScheduleError` when writing or systemctl fails.
    """
    unit_dir = Path(unit_dir) if unit_dir is not None else default_unit_dir()
    on_calendar = validate_on_calendar(on_calendar)
    outcome = Outcome(details={"unit_dir": str(unit_dir), "command": job.argv(), "on_calendar": on_calendar})
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScheduleError(f"cannot create the unit directory {unit_dir}: {exc.strerror}") from None
    for name, text in ((SERVICE_NAME, render_service(job)), (TIMER_NAME, render_timer(on_calendar))):
        path = unit_dir / name
        _write_atomically(path, text)
        outcome.actions.append(f"wrote {path}")
        outcome.files.append(str(path))
    if _is_system_unit_dir(unit_dir) and systemd_running():
        _systemctl("daemon-reload")
        outcome.actions.append("ran systemctl daemon-reload")
        _systemctl("enable", "--now", TIMER_NAME)
        outcome.actions.append(f"ran systemctl enable --now {TIMER_NAME}")
        outcome.details["enabled"] = True
    else:
        outcome.details["enabled"] = False
        if _is_system_unit_dir(unit_dir):
            outcome.notes.append(
                "systemd is not running here, so the timer is not enabled; "
                "where there is no systemd, use: certsmith schedule install --cron"
            )
        elif unit_dir == default_unit_dir() and os.geteuid() != 0:
            outcome.notes.append(
                f"to start it: systemctl --user daemon-reload && systemctl --user enable --now {TIMER_NAME} "
                "(and loginctl enable-linger so it runs while you are logged out)"
            )
        else:
            outcome.notes.append(
                f"{unit_dir} is not the system unit directory, so nothing was enabled; "
                f"copy the units to {SYSTEM_UNIT_DIR} and run: systemctl enable --now {TIMER_NAME}"
            )
    return outcome


def show_units(unit_dir: Path | None = None) -> Outcome:
    """The installed units (path and content) and, under systemd, ``systemctl list-timers`` for the timer."""
    unit_dir = Path(unit_dir) if unit_dir is not None else default_unit_dir()
    units: dict[str, str] = {}
    for name in (SERVICE_NAME, TIMER_NAME):
        path = unit_dir / name
        try:
            units[str(path)] = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ScheduleError(f"cannot read {path}: {exc.strerror}") from None
    outcome = Outcome(files=list(units), details={"unit_dir": str(unit_dir), "units": units})
    if not units:
        outcome.notes.append(f"no certsmith units in {unit_dir}")
    if units and _is_system_unit_dir(unit_dir) and systemd_running():
        with contextlib.suppress(ScheduleError):
            outcome.details["timers"] = _systemctl("list-timers", "--all", "--no-pager", TIMER_NAME).rstrip()
    return outcome


def remove_units(unit_dir: Path | None = None) -> Outcome:
    """Disable the timer (under systemd, for the system unit directory) and delete both units."""
    unit_dir = Path(unit_dir) if unit_dir is not None else default_unit_dir()
    outcome = Outcome(details={"unit_dir": str(unit_dir)})
    paths = [unit_dir / name for name in (TIMER_NAME, SERVICE_NAME)]
    present = [path for path in paths if os.path.lexists(path)]
    if not present:
        outcome.notes.append(f"no certsmith units in {unit_dir}")
        return outcome
    managed = _is_system_unit_dir(unit_dir) and systemd_running()
    if managed:
        _systemctl("disable", "--now", TIMER_NAME)
        outcome.actions.append(f"ran systemctl disable --now {TIMER_NAME}")
    for path in present:
        outcome.delete(path)
    if managed:
        _systemctl("daemon-reload")
        outcome.actions.append("ran systemctl daemon-reload")
    return outcome


# -- cron ----------------------------------------------------------------------------


def _cron_command(job: RenewJob) -> str:
    """The job's command for ``/bin/sh`` under cron, where an unescaped ``%`` ends the command."""
    command = " ".join(shlex.quote(arg) for arg in job.argv(jitter_seconds=CRON_JITTER_SEC))
    sync = job.sync_argv()
    if sync is not None:
        command += "; " + " ".join(shlex.quote(arg) for arg in sync)
    if "\n" in command:
        raise ConfigError("a path in the schedule's command contains a newline; choose another path")
    return command.replace("%", "\\%")


def cron_line(job: RenewJob, rng: random.Random, user: str | None = None) -> str:
    """A crontab line running ``renew --jitter`` twice a day, 12 hours apart, at a random minute.

    With ``user`` the line has the user field of ``/etc/cron.d`` files. The line ends
    with :data:`CRON_MARKER` (a shell comment) so it can be found and replaced later.
    """
    minute = rng.randrange(60)
    hour = rng.randrange(12)
    user_field = f" {user}" if user else ""
    return f"{minute} {hour},{hour + 12} * * *{user_field} {_cron_command(job)} {CRON_MARKER}"


def render_cron_file(job: RenewJob, rng: random.Random, user: str) -> str:
    """An ``/etc/cron.d``-style file holding the job for ``user``."""
    return (
        _HEADER
        + "SHELL=/bin/sh\n"
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{cron_line(job, rng, user=user)}\n"
    )


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise ScheduleError(f"uid {os.geteuid()} has no user name, which a cron file needs") from None


def _crontab_binary() -> str:
    found = shutil.which("crontab")
    if not found:
        raise ScheduleError(
            "crontab is not installed; install cron, or write a cron file with --cron-file /etc/cron.d/certsmith"
        )
    return found


def _read_crontab(crontab: str) -> str:
    """The user's crontab; empty when they have none (``crontab -l`` then fails with "no crontab")."""
    try:
        result = subprocess.run([crontab, "-l"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScheduleError(f"crontab -l failed: {exc}") from None
    if result.returncode != 0:
        if "no crontab" in result.stderr.lower():
            return ""
        raise ScheduleError(f"crontab -l failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _write_crontab(crontab: str, text: str) -> None:
    try:
        result = subprocess.run([crontab, "-"], input=text, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScheduleError(f"crontab - failed: {exc}") from None
    if result.returncode != 0:
        raise ScheduleError(f"crontab - failed: {result.stderr.strip() or result.returncode}")


def _without_certsmith_lines(text: str) -> tuple[list[str], int]:
    lines = text.splitlines()
    kept = [line for line in lines if not line.rstrip().endswith(CRON_MARKER)]
    return kept, len(lines) - len(kept)


def install_cron(job: RenewJob, rng: random.Random, cron_file: Path | None = None) -> Outcome:
    """Add the cron line to the user's crontab, replacing an earlier certsmith line, or write ``cron_file``.

    Raises :class:`ScheduleError` when ``crontab`` is missing or fails, or the file cannot be written.
    """
    if cron_file is not None:
        cron_file = Path(cron_file)
        text = render_cron_file(job, rng, _current_user())
        _write_atomically(cron_file, text)
        outcome = Outcome(actions=[f"wrote {cron_file}"], files=[str(cron_file)])
        outcome.details["line"] = text.splitlines()[-1]
        if "." in cron_file.name:
            outcome.notes.append(f"cron ignores files in /etc/cron.d whose names contain a dot ({cron_file.name})")
        return outcome
    crontab = _crontab_binary()
    kept, replaced = _without_certsmith_lines(_read_crontab(crontab))
    line = cron_line(job, rng)
    _write_crontab(crontab, "\n".join([*kept, line]) + "\n")
    verb = "replaced the certsmith line in" if replaced else "added a line to"
    return Outcome(actions=[f"{verb} the crontab of {_current_user()}"], details={"line": line})


def show_cron(cron_file: Path | None = None) -> Outcome:
    """The certsmith lines of the user's crontab (where ``crontab`` exists) and of ``cron_file``."""
    lines: list[str] = []
    outcome = Outcome()
    if cron_file is not None:
        try:
            text = Path(cron_file).read_text()
        except FileNotFoundError:
            outcome.notes.append(f"no cron file {cron_file}")
        except OSError as exc:
            raise ScheduleError(f"cannot read {cron_file}: {exc.strerror}") from None
        else:
            outcome.files.append(str(cron_file))
            lines += [line for line in text.splitlines() if line.rstrip().endswith(CRON_MARKER)]
    crontab = shutil.which("crontab")
    if crontab:
        lines += [line for line in _read_crontab(crontab).splitlines() if line.rstrip().endswith(CRON_MARKER)]
    outcome.details["cron_lines"] = lines
    return outcome


def remove_cron(cron_file: Path | None = None) -> Outcome:
    """Delete the certsmith line from the user's crontab and ``cron_file`` (only if certsmith wrote it)."""
    outcome = Outcome()
    if cron_file is not None:
        cron_file = Path(cron_file)
        try:
            text = cron_file.read_text()
        except FileNotFoundError:
            outcome.notes.append(f"no cron file {cron_file}")
        except OSError as exc:
            raise ScheduleError(f"cannot read {cron_file}: {exc.strerror}") from None
        else:
            if not any(line.rstrip().endswith(CRON_MARKER) for line in text.splitlines()):
                raise ScheduleError(f"{cron_file} has no certsmith line; it was not written by certsmith, left alone")
            outcome.delete(cron_file)
    crontab = shutil.which("crontab")
    if crontab:
        kept, removed = _without_certsmith_lines(_read_crontab(crontab))
        if removed:
            _write_crontab(crontab, "\n".join(kept) + "\n" if kept else "")
            outcome.actions.append(f"removed the certsmith line from the crontab of {_current_user()}")
    return outcome


def _write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` so that systemd or cron never reads half a file."""
    try:
        replace_file(path, text.encode(), mode)
    except OSError as exc:
        raise ScheduleError(f"cannot write {path}: {exc.strerror or exc}") from None
