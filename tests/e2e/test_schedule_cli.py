"""``certsmith schedule`` run as a user would: units that systemd accepts, a valid cron line, show, remove."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certsmith.schedule import SERVICE_NAME, TIMER_NAME, RenewJob, install_units
from tests.conftest import CERTSMITH, clean_env
from tests.unit.test_schedule import cron_fields, directive, write_fake_crontab


def certsmith(
    *args: str, env: dict[str, str] | None = None, command: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(command or CERTSMITH), *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def exec_start(unit_dir: Path) -> list[str]:
    return shlex.split(directive((unit_dir / SERVICE_NAME).read_text(), "ExecStart"))


def systemd_analyze_unusable() -> str | None:
    """Why ``systemd-analyze verify`` cannot run here, or ``None`` when it can."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return "systemd-analyze is not installed (Debian package systemd; scripts/bootstrap.sh installs it)"
    probe_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    probe = probe_dir / f"certsmith-probe-{os.getpid()}.service"
    probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    try:
        result = subprocess.run([tool, "verify", str(probe)], capture_output=True, text=True, timeout=60)
    finally:
        probe.unlink()
    if result.returncode != 0:
        return f"systemd-analyze verify cannot run here: {result.stderr.strip() or result.returncode}"
    return None


@pytest.fixture
def fake_crontab(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The crontab store and an environment whose PATH finds the fake ``crontab`` first."""
    store = tmp_path / "crontab-store"
    write_fake_crontab(tmp_path / "fakebin", store)
    env = clean_env(PATH=f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ['PATH']}")
    return store, env


def test_install_writes_units_that_systemd_accepts(tmp_path: Path) -> None:
    state, units = tmp_path / "state", tmp_path / "units"
    result = ok(certsmith("--state-dir", str(state), "schedule", "install", "--unit-dir", str(units)))
    assert f"wrote {units / SERVICE_NAME}" in result.stdout
    assert f"wrote {units / TIMER_NAME}" in result.stdout
    assert "not the system unit directory, so nothing was enabled" in result.stderr
    assert exec_start(units) == [sys.executable, "-m", "certsmith.cli", "--state-dir", str(state), "-q", "renew"]
    timer = (units / TIMER_NAME).read_text()
    assert directive(timer, "OnCalendar") == "*-*-* 00,12:00:00"
    assert int(directive(timer, "RandomizedDelaySec")) >= 3600
    assert directive(timer, "Persistent") == "true"

    unusable = systemd_analyze_unusable()
    if unusable:
        pytest.skip(unusable)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(units / TIMER_NAME), str(units / SERVICE_NAME)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
    assert "certsmith-renew" not in verify.stderr  # no warning about our units (unknown keys only warn)


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verification above is a real check: a unit whose program is missing fails it."""
    unusable = systemd_analyze_unusable()
    if unusable:
        pytest.skip(unusable)
    units = tmp_path / "units"
    ok(certsmith("--state-dir", str(tmp_path / "s"), "schedule", "install", "--unit-dir", str(units)))
    service = units / SERVICE_NAME
    service.write_text(service.read_text().replace(sys.executable, str(tmp_path / "missing-python")))
    verify = subprocess.run(["systemd-analyze", "verify", str(service)], capture_output=True, text=True, timeout=60)
    assert verify.returncode != 0
    assert "missing-python" in verify.stderr


def test_systemd_reads_quoted_paths_as_written(tmp_path: Path) -> None:
    """systemd finds a program whose path needs quoting and escaping (space, %, $)."""
    unusable = systemd_analyze_unusable()
    if unusable:
        pytest.skip(unusable)
    program = tmp_path / "odd dir 100%" / "$HOME" / "certsmith"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    units = tmp_path / "units"
    install_units(RenewJob(tmp_path / "state 50%", executable=(str(program),)), units)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(units / SERVICE_NAME)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert "certsmith-renew" not in verify.stderr


def test_the_scheduled_command_runs(tmp_path: Path) -> None:
    """What the service starts is a working ``renew`` of the chosen state directory."""
    state, units = tmp_path / "state", tmp_path / "units"
    ok(certsmith("--state-dir", str(state), "schedule", "install", "--unit-dir", str(units)))
    run = subprocess.run(
        exec_start(units), capture_output=True, text=True, env=clean_env(), timeout=60, stdin=subprocess.DEVNULL
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""  # -q: nothing was due and nothing failed


def test_the_certsmith_script_is_named_when_it_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "certsmith"
    if not script.exists():
        pytest.skip(f"no certsmith script beside {sys.executable} (certsmith is not installed in this environment)")
    units = tmp_path / "units"
    env = clean_env(PYTHONPATH=os.pathsep.join(sys.path))
    ok(certsmith("--state-dir", str(tmp_path / "s"), "schedule", "install", "--unit-dir", str(units),
                 env=env, command=[str(script)]))
    assert exec_start(units)[0] == str(script)


def test_install_with_an_env_file_and_a_calendar(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("EXEC_PATH=/usr/local/bin/hook\n")
    env_file.chmod(0o600)
    units = tmp_path / "units"
    result = ok(certsmith(
        "--json", "--state-dir", str(tmp_path / "s"), "schedule", "install", "--unit-dir", str(units),
        "--env-file", str(env_file), "--on-calendar", "daily",
    ))
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["kind"] == "systemd"
    assert data["enabled"] is False
    assert data["files"] == [str(units / SERVICE_NAME), str(units / TIMER_NAME)]
    assert data["on_calendar"] == "daily"
    command = exec_start(units)
    assert command[command.index("--env-file") + 1] == str(env_file)
    assert command[command.index("--state-dir") + 1] == str(tmp_path / "s")
    assert directive((units / TIMER_NAME).read_text(), "OnCalendar") == "daily"
    assert "/usr/local/bin/hook" not in (units / SERVICE_NAME).read_text()


def test_an_env_file_open_to_others_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("SECRET=hunter2\n")
    env_file.chmod(0o644)
    units = tmp_path / "units"
    result = certsmith("schedule", "install", "--unit-dir", str(units), "--env-file", str(env_file))
    assert result.returncode == 1
    assert f"has mode 0644: group or others can access the secrets it may hold. Run: chmod 600 {env_file}" in (
        result.stderr
    )
    assert "hunter2" not in result.stderr + result.stdout
    assert not units.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--on-calendar", "twice daily"], "is not a systemd calendar expression"),
        (["--on-calendar", "daily\nExecStartPre=/bin/evil"], "one systemd calendar expression"),
        (["--cron", "--on-calendar", "daily"], "are for systemd timers; leave them out with --cron"),
    ],
)
def test_bad_install_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    if "twice daily" in args and shutil.which("systemd-analyze") is None:
        pytest.skip("calendar syntax is checked with systemd-analyze, which is not installed")
    units = tmp_path / "units"
    result = certsmith("--json", "schedule", "install", "--unit-dir", str(units), *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert json.loads(result.stdout)["ok"] is False
    assert not units.exists()


def test_show_and_remove(tmp_path: Path) -> None:
    state, units = tmp_path / "state", tmp_path / "units"
    ok(certsmith("--state-dir", str(state), "schedule", "install", "--unit-dir", str(units)))

    shown = ok(certsmith("schedule", "show", "--unit-dir", str(units)))
    assert f"# {units / SERVICE_NAME}" in shown.stdout
    assert f"--state-dir {state} -q renew" in shown.stdout
    data = json.loads(ok(certsmith("--json", "schedule", "show", "--unit-dir", str(units))).stdout)
    assert sorted(data["units"]) == [str(units / SERVICE_NAME), str(units / TIMER_NAME)]

    removed = ok(certsmith("schedule", "remove", "--unit-dir", str(units)))
    assert removed.stdout.splitlines() == [f"deleted {units / TIMER_NAME}", f"deleted {units / SERVICE_NAME}"]
    assert list(units.iterdir()) == []
    assert "nothing to remove" in ok(certsmith("schedule", "remove", "--unit-dir", str(units))).stdout
    assert "no certsmith schedule installed" in ok(certsmith("schedule", "show", "--unit-dir", str(units))).stdout


def test_cron_line_in_the_users_crontab(tmp_path: Path, fake_crontab: tuple[Path, dict[str, str]]) -> None:
    store, env = fake_crontab
    store.write_text("0 1 * * * /usr/bin/backup\n")
    state = tmp_path / "state"
    first = ok(certsmith("--state-dir", str(state), "schedule", "install", "--cron", env=env))
    assert "added a line to the crontab of" in first.stdout
    second = json.loads(ok(certsmith("--json", "--state-dir", str(state), "schedule", "install", "--cron",
                                     env=env)).stdout)
    assert second["kind"] == "cron"
    lines = store.read_text().splitlines()
    assert lines == ["0 1 * * * /usr/bin/backup", second["line"]]
    (_, hours, *_), _, command = cron_fields(lines[1])
    assert int(hours.split(",")[1]) - int(hours.split(",")[0]) == 12
    assert command == [sys.executable, "-m", "certsmith.cli", "--state-dir", str(state), "-q", "renew",
                       "--jitter", "3600"]

    assert f"cron: {second['line']}" in ok(certsmith("schedule", "show", "--cron", env=env)).stdout
    removed = ok(certsmith("schedule", "remove", "--cron", env=env))
    assert "removed the certsmith line from the crontab" in removed.stdout
    assert store.read_text().splitlines() == ["0 1 * * * /usr/bin/backup"]


def test_cron_file_with_the_user_field(tmp_path: Path, fake_crontab: tuple[Path, dict[str, str]]) -> None:
    _, env = fake_crontab
    cron_file = tmp_path / "certsmith"
    result = ok(certsmith("--state-dir", str(tmp_path / "s"), "schedule", "install", "--cron-file", str(cron_file),
                          env=env))
    assert f"wrote {cron_file}" in result.stdout
    line = cron_file.read_text().splitlines()[-1]
    _, user, command = cron_fields(line, with_user=True)
    assert user == subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    assert command[-5:] == [str(tmp_path / "s"), "-q", "renew", "--jitter", "3600"]
    ok(certsmith("schedule", "remove", "--cron-file", str(cron_file), env=env))
    assert not cron_file.exists()


def test_without_crontab_install_cron_says_what_to_do(tmp_path: Path) -> None:
    result = certsmith("schedule", "install", "--cron", env=clean_env(PATH=str(tmp_path)))
    assert result.returncode == 1
    assert "crontab is not installed; install cron, or write a cron file with --cron-file" in result.stderr


def test_schedule_commands_stay_light(tmp_path: Path) -> None:
    """The schedule commands load neither asyncio, httpx nor cryptography (start-up time is measured)."""
    code = (
        "import sys\n"
        "from certsmith.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = sorted(m for m in ('asyncio', 'httpx', 'cryptography') if m in sys.modules)\n"
        "    print('heavy=' + ','.join(heavy), file=sys.stderr)\n"
    )
    units = str(tmp_path / "units")
    for args in (["schedule", "install", "--unit-dir", units], ["schedule", "show", "--unit-dir", units],
                 ["schedule", "remove", "--unit-dir", units]):
        result = ok(subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                                   env=clean_env(), timeout=60))
        assert "heavy=\n" in result.stderr, (args, result.stderr)
