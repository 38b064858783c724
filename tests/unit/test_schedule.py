"""The schedule's renderers (units, cron line), jitter, and installing into a directory."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certsmith import schedule
from certsmith.errors import ConfigError
from certsmith.schedule import (
    CRON_MARKER,
    SERVICE_NAME,
    TIMER_NAME,
    RenewJob,
    ScheduleError,
    cron_line,
    jitter_delay,
    render_cron_file,
    render_service,
    render_timer,
)

EXE = ("/opt/certsmith/bin/certsmith",)
CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def cron_fields(line: str, with_user: bool = False) -> tuple[list[str], str | None, list[str]]:
    """Check the five time fields of a crontab line; return them, the user field and the command's words."""
    parts = line.split(None, 6 if with_user else 5)
    fields = parts[:5]
    assert len(parts) == (7 if with_user else 6), line
    for text, (low, high) in zip(fields, CRON_RANGES, strict=True):
        if text == "*":
            continue
        for item in text.split(","):
            assert re.fullmatch(r"\d+", item), f"cron field {text!r} in {line!r}"
            assert low <= int(item) <= high, f"cron field {text!r} out of {low}-{high} in {line!r}"
    user = parts[5] if with_user else None
    return fields, user, shlex.split(parts[-1], comments=True)


def write_fake_crontab(bin_dir: Path, store: Path) -> Path:
    """A stand-in for cron's ``crontab`` (not installed everywhere, and the real one edits the
    system's spool): ``-l`` prints ``store`` or fails with "no crontab for USER" as cron does,
    ``-`` replaces it with standard input."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "crontab"
    script.write_text(
        "#!/bin/sh\n"
        f"store={shlex.quote(str(store))}\n"
        'case "$1" in\n'
        '  -l) if [ -f "$store" ]; then cat "$store"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;\n'
        '  -) cat > "$store" ;;\n'
        '  *) echo "crontab: unexpected arguments: $*" >&2; exit 2 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return script


@pytest.fixture
def crontab_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's crontab as the fake ``crontab`` keeps it; that ``crontab`` is first on PATH."""
    store = tmp_path / "crontab-store"
    write_fake_crontab(tmp_path / "fakebin", store)
    monkeypatch.setenv("PATH", f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ['PATH']}")
    return store


def directive(unit: str, key: str) -> str:
    values = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]
    assert len(values) == 1, (key, unit)
    return values[0]


# -- the service and the timer --------------------------------------------------------


def test_service_runs_renew_quietly_with_the_state_dir(tmp_path: Path) -> None:
    unit = render_service(RenewJob(tmp_path / "state", executable=EXE))
    assert directive(unit, "Type") == "oneshot"
    assert shlex.split(directive(unit, "ExecStart")) == [*EXE, "--state-dir", str(tmp_path / "state"), "-q", "renew"]
    for hardening in ("PrivateTmp=yes", "NoNewPrivileges=yes"):
        assert hardening in unit.splitlines()
    for breaks_writes in ("ProtectSystem", "ProtectHome", "ReadOnlyPaths", "PrivateNetwork"):
        assert breaks_writes not in unit
    assert "[Install]" not in unit  # only the timer is enabled


def test_service_names_the_env_file_and_makes_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    unit = render_service(RenewJob(Path("state"), Path("conf/env"), executable=EXE))
    assert shlex.split(directive(unit, "ExecStart")) == [
        *EXE, "--state-dir", str(tmp_path / "state"), "--env-file", str(tmp_path / "conf/env"), "-q", "renew",
    ]


def test_service_quotes_paths_for_systemd() -> None:
    unit = render_service(RenewJob(Path("/srv/my certs/100%/$HOME"), executable=EXE))
    assert directive(unit, "ExecStart") == (
        '/opt/certsmith/bin/certsmith --state-dir "/srv/my certs/100%%/$$HOME" -q renew'
    )
    unit = render_service(RenewJob(Path("/srv/a%b"), executable=EXE))
    assert '--state-dir "/srv/a%%b" ' in directive(unit, "ExecStart")
    unit = render_service(RenewJob(Path('/srv/a"b\\c'), executable=EXE))
    assert '--state-dir "/srv/a\\"b\\\\c" ' in directive(unit, "ExecStart")


def test_service_refuses_a_path_with_a_newline() -> None:
    with pytest.raises(ConfigError, match="control character"):
        render_service(RenewJob(Path("/srv/a\nExecStartPost=/bin/evil"), executable=EXE))


def test_service_quotes_the_program_path_without_variable_escapes() -> None:
    unit = render_service(RenewJob(Path("/s"), executable=("/opt/my $dir 5%/certsmith",)))
    assert directive(unit, "ExecStart") == '"/opt/my $dir 5%%/certsmith" --state-dir /s -q renew'
    for refused in ('/opt/a"b/certsmith', "/opt/a\\b/certsmith"):
        with pytest.raises(ConfigError, match="systemd refuses a program path containing a quote or a backslash"):
            render_service(RenewJob(Path("/s"), executable=(refused,)))


def test_timer_default_twice_a_day_with_an_hour_of_random_delay() -> None:
    unit = render_timer()
    assert directive(unit, "OnCalendar") == "*-*-* 00,12:00:00"
    assert int(directive(unit, "RandomizedDelaySec")) >= 3600
    assert directive(unit, "Persistent") == "true"
    assert directive(unit, "Unit") == SERVICE_NAME
    assert directive(unit, "WantedBy") == "timers.target"
    assert directive(render_timer("daily"), "OnCalendar") == "daily"


def test_on_calendar_must_be_one_line() -> None:
    with pytest.raises(ConfigError, match="one systemd calendar expression"):
        schedule.validate_on_calendar("daily\nExecStart=/bin/evil")
    with pytest.raises(ConfigError, match="one systemd calendar expression"):
        schedule.validate_on_calendar("  ")
    with pytest.raises(ConfigError, match="one line"):
        render_timer("daily\n[Service]")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_on_calendar_syntax_is_checked_by_systemd() -> None:
    assert schedule.validate_on_calendar(" Mon..Fri *-*-* 03:30 ") == "Mon..Fri *-*-* 03:30"
    with pytest.raises(ConfigError, match=r"'twice daily' is not a systemd calendar expression .*man systemd.time"):
        schedule.validate_on_calendar("twice daily")


# -- cron -----------------------------------------------------------------------------


def test_cron_line_fields_and_command(tmp_path: Path) -> None:
    line = cron_line(RenewJob(tmp_path / "state", executable=EXE), random.Random(7))
    (_, hours, *rest), user, command = cron_fields(line)
    assert rest == ["*", "*", "*"]
    assert user is None
    first, second = (int(hour) for hour in hours.split(","))
    assert second == first + 12
    assert command == [*EXE, "--state-dir", str(tmp_path / "state"), "-q", "renew", "--jitter", "3600"]
    assert line.endswith(CRON_MARKER)


def test_cron_minute_and_hours_are_random() -> None:
    job = RenewJob(Path("/var/lib/certsmith"), executable=EXE)
    starts = {tuple(cron_fields(cron_line(job, random.Random(seed)))[0][:2]) for seed in range(40)}
    assert len({minute for minute, _ in starts}) > 10
    assert len({hours for _, hours in starts}) > 5


def test_cron_line_escapes_percent_and_quotes_for_the_shell() -> None:
    line = cron_line(RenewJob(Path("/srv/my certs/50%"), executable=EXE), random.Random(1))
    assert "%" not in line.replace("\\%", "")
    assert "'/srv/my certs/50\\%'" in line


def test_cron_file_has_the_user_field(tmp_path: Path) -> None:
    text = render_cron_file(RenewJob(tmp_path / "s", executable=EXE), random.Random(3), "root")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "SHELL=/bin/sh"
    assert lines[1].startswith("PATH=")
    _, user, command = cron_fields(lines[2], with_user=True)
    assert user == "root"
    assert command[-3:] == ["renew", "--jitter", "3600"]


# -- jitter ---------------------------------------------------------------------------


def test_jitter_is_uniform_between_zero_and_the_maximum() -> None:
    rng = random.Random(42)
    draws = [jitter_delay(3600, rng) for _ in range(2000)]
    assert all(0 <= draw <= 3600 for draw in draws)
    assert min(draws) < 100 and max(draws) > 3500
    assert 1600 < sum(draws) / len(draws) < 2000
    assert jitter_delay(0, rng) == 0


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_jitter_refuses_a_bad_maximum(bad: float) -> None:
    with pytest.raises(ConfigError, match="--jitter must be a number of seconds of 0 or more"):
        jitter_delay(bad, random.Random())


# -- which certsmith, which state directory -------------------------------------------


def test_the_running_certsmith_script_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "bin" / "certsmith"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "schedule", "install"])
    assert schedule.certsmith_command() == (str(script),)
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.setattr(sys, "argv", ["certsmith"])
    assert schedule.certsmith_command() == (str(script),)


def test_otherwise_this_python_runs_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/somewhere/certsmith/cli/__main__.py"])
    assert schedule.certsmith_command() == (sys.executable, "-m", "certsmith.cli")


def test_default_state_dir_matches_the_file_store() -> None:
    from certsmith.storage.files import FileStore

    assert schedule.default_state_dir() == FileStore.default_root()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
@pytest.mark.parametrize("xdg", ["", "/xdg/data", "relative/ignored"])
def test_default_state_dir_matches_the_file_store_for_a_user(tmp_path: Path, xdg: str) -> None:
    code = (
        "import json, os, pwd\n"
        "from certsmith.schedule import default_state_dir\n"
        "from certsmith.storage.files import FileStore\n"
        "os.setuid(pwd.getpwnam('nobody').pw_uid)\n"
        "print(json.dumps([str(default_state_dir()), str(FileStore.default_root())]))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": xdg}
    mine, store = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                            text=True, check=True).stdout)
    assert mine == store
    assert mine != "/var/lib/certsmith"


# -- installing into a directory ------------------------------------------------------


def test_install_show_remove_units(tmp_path: Path) -> None:
    units = tmp_path / "units"
    job = RenewJob(tmp_path / "state", executable=EXE)
    outcome = schedule.install_units(job, units, "daily")
    assert outcome.files == [str(units / SERVICE_NAME), str(units / TIMER_NAME)]
    assert outcome.actions == [f"wrote {units / SERVICE_NAME}", f"wrote {units / TIMER_NAME}"]
    assert outcome.details["enabled"] is False
    assert any("not the system unit directory" in note for note in outcome.notes)
    assert (units / SERVICE_NAME).read_text() == render_service(job)
    assert (units / TIMER_NAME).read_text() == render_timer("daily")
    assert {oct(path.stat().st_mode & 0o777) for path in units.iterdir()} == {"0o644"}

    schedule.install_units(job, units)  # again: replaced, no temporary files left behind
    assert sorted(path.name for path in units.iterdir()) == [SERVICE_NAME, TIMER_NAME]
    assert directive((units / TIMER_NAME).read_text(), "OnCalendar") == "*-*-* 00,12:00:00"

    shown = schedule.show_units(units)
    assert shown.details["units"] == {str(units / n): (units / n).read_text() for n in (SERVICE_NAME, TIMER_NAME)}

    removed = schedule.remove_units(units)
    assert removed.actions == [f"deleted {units / TIMER_NAME}", f"deleted {units / SERVICE_NAME}"]
    assert list(units.iterdir()) == []
    assert schedule.remove_units(units).notes == [f"no certsmith units in {units}"]
    assert schedule.show_units(units).details["units"] == {}


def test_install_into_an_unwritable_place_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ScheduleError, match="cannot create the unit directory"):
        schedule.install_units(RenewJob(tmp_path, executable=EXE), blocker / "units")


def test_crontab_install_is_idempotent_and_keeps_other_lines(tmp_path: Path, crontab_store: Path) -> None:
    crontab_store.write_text("MAILTO=me@example.com\n0 1 * * * /usr/bin/backup\n")
    job = RenewJob(tmp_path / "state", executable=EXE)
    first = schedule.install_cron(job, random.Random(1))
    assert first.actions == [f"added a line to the crontab of {schedule._current_user()}"]
    second = schedule.install_cron(job, random.Random(2))
    assert second.actions[0].startswith("replaced the certsmith line")
    lines = crontab_store.read_text().splitlines()
    assert lines == ["MAILTO=me@example.com", "0 1 * * * /usr/bin/backup", second.details["line"]]
    cron_fields(lines[-1])
    assert schedule.show_cron().details["cron_lines"] == [second.details["line"]]

    removed = schedule.remove_cron()
    assert removed.actions == [f"removed the certsmith line from the crontab of {schedule._current_user()}"]
    assert crontab_store.read_text().splitlines() == ["MAILTO=me@example.com", "0 1 * * * /usr/bin/backup"]
    assert schedule.remove_cron().actions == []


def test_crontab_install_for_a_user_without_a_crontab(tmp_path: Path, crontab_store: Path) -> None:
    schedule.install_cron(RenewJob(tmp_path, executable=EXE), random.Random(1))
    assert len(crontab_store.read_text().splitlines()) == 1


def test_without_crontab_the_error_names_the_alternative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ScheduleError, match=r"crontab is not installed; install cron, or .*--cron-file"):
        schedule.install_cron(RenewJob(tmp_path, executable=EXE), random.Random(1))


def test_a_failing_crontab_is_reported(tmp_path: Path, crontab_store: Path) -> None:
    crontab_store.mkdir()  # the fake crontab can no longer save
    with pytest.raises(ScheduleError, match=r"crontab - failed: .*[Ii]s a directory"):
        schedule.install_cron(RenewJob(tmp_path, executable=EXE), random.Random(1))


def test_cron_file_install_and_remove(tmp_path: Path, crontab_store: Path) -> None:
    cron_file = tmp_path / "certsmith"
    outcome = schedule.install_cron(RenewJob(tmp_path / "state", executable=EXE), random.Random(5), cron_file)
    assert outcome.actions == [f"wrote {cron_file}"]
    assert oct(cron_file.stat().st_mode & 0o777) == "0o644"
    cron_fields(outcome.details["line"], with_user=True)
    assert schedule.show_cron(cron_file).details["cron_lines"] == [outcome.details["line"]]
    assert schedule.remove_cron(cron_file).actions == [f"deleted {cron_file}"]
    assert not cron_file.exists()


def test_cron_file_with_a_dot_gets_a_warning(tmp_path: Path, crontab_store: Path) -> None:
    outcome = schedule.install_cron(RenewJob(tmp_path, executable=EXE), random.Random(5), tmp_path / "certsmith.cron")
    assert any("contain a dot" in note for note in outcome.notes)


def test_remove_leaves_a_cron_file_certsmith_did_not_write(tmp_path: Path, crontab_store: Path) -> None:
    other = tmp_path / "other"
    other.write_text("0 1 * * * root /usr/bin/backup\n")
    with pytest.raises(ScheduleError, match="not written by certsmith"):
        schedule.remove_cron(other)
    assert other.exists()


def test_a_shared_store_runs_sync_after_renew(tmp_path: Path) -> None:
    shared = RenewJob(tmp_path / "state", tmp_path / "env", executable=EXE, shared_store=True)
    unit = render_service(shared)
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    post = next(line for line in unit.splitlines() if line.startswith("ExecStopPost="))
    assert start.endswith("-q renew") and post.endswith("-q sync")
    assert f"--env-file {tmp_path / 'env'}" in post  # the store URL and key come from the env file
    line = cron_line(shared, random.Random(7))
    renew_part, sync_part = line.split(" # ")[0].split("; ")
    assert shlex.split(renew_part)[-3:] == ["renew", "--jitter", "3600"]
    assert shlex.split(sync_part)[-2:] == ["-q", "sync"]
    # The file store: one host, nothing to sync.
    alone = RenewJob(tmp_path / "state", executable=EXE)
    assert "ExecStopPost" not in render_service(alone) and "; " not in cron_line(alone, random.Random(7))
